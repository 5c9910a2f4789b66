// The evidence of forks: recording one, and forks.jsonl, where it is kept.

package witness

import (
	"bytes"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"go.uber.org/zap"

	"github.com/umbra-e2ee/umbra/pkg/kt"
)

// Fork is the evidence of a fork: two checkpoints signed by the log key that cannot
// both be views of one append-only log.
type Fork struct {
	DetectedAt time.Time `json:"detected_at"`
	Origin     string    `json:"origin"`
	Reason     string    `json:"reason"`
	// Cosigned is the witness's cosigned checkpoint, Conflicting the one shown to it
	// that contradicts it (as it was signed by the log).
	CosignedSize    uint64 `json:"cosigned_size"`
	Cosigned        string `json:"cosigned"`
	ConflictingSize uint64 `json:"conflicting_size"`
	Conflicting     string `json:"conflicting"`
	// ConsistencyProof is the proof the log gave between them that failed; none for
	// two checkpoints of one size.
	ConsistencyProof [][]byte `json:"consistency_proof,omitempty"`
	// Source says who showed the witness the conflicting checkpoint: "poll" (the log)
	// or "submitted" (a client).
	Source string `json:"source"`
}

func (w *Witness) forksPath() string { return filepath.Join(w.cfg.Dir, "forks.jsonl") }

// fork records the evidence that held and conflicting cannot both be true, and
// returns it as a *kt.ForkError.
func (w *Witness) fork(held *cosigned, cp *kt.Checkpoint, conflicting []byte, reason string, proof [][]byte, source string) error {
	ferr := &kt.ForkError{Origin: cp.Origin, Held: held.note, Conflicting: conflicting, HeldSize: held.cp.Size, ConflictingSize: cp.Size, Reason: reason}
	text, _ := kt.CheckpointText(conflicting)
	id := sha256.Sum256([]byte(held.text + "\x00" + text))
	w.mu.Lock()
	seen := w.forkSeen[string(id[:])]
	w.forkSeen[string(id[:])] = true
	w.mu.Unlock()
	if seen {
		return ferr
	}
	f := Fork{
		DetectedAt: w.cfg.Now().UTC(), Origin: cp.Origin, Reason: reason,
		CosignedSize: held.cp.Size, Cosigned: string(held.note),
		ConflictingSize: cp.Size, Conflicting: string(conflicting),
		ConsistencyProof: proof, Source: source,
	}
	if err := w.appendFork(f); err != nil {
		w.logger.Error("could not write the fork evidence", zap.String("file", w.forksPath()), zap.Error(err))
	}
	w.mu.Lock()
	w.forks = append(w.forks, f)
	w.mu.Unlock()
	w.logger.Error("FORK: the log signed two checkpoints that cannot both be true; not cosigning, evidence kept",
		zap.String("origin", cp.Origin), zap.Uint64("cosigned_size", held.cp.Size), zap.Uint64("conflicting_size", cp.Size),
		zap.String("reason", reason), zap.String("source", source), zap.String("evidence", w.forksPath()))
	return ferr
}

func (w *Witness) appendFork(f Fork) error {
	b, err := json.Marshal(f)
	if err != nil {
		return err
	}
	file, err := os.OpenFile(w.forksPath(), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	if _, err := file.Write(append(b, '\n')); err != nil {
		file.Close()
		return err
	}
	if err := file.Sync(); err != nil {
		file.Close()
		return err
	}
	return file.Close()
}

func (w *Witness) loadForks() error {
	b, err := os.ReadFile(w.forksPath())
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	for dec.More() {
		var f Fork
		if err := dec.Decode(&f); err != nil {
			return fmt.Errorf("witness: %s: %w", w.forksPath(), err)
		}
		held, _ := kt.CheckpointText([]byte(f.Cosigned))
		other, _ := kt.CheckpointText([]byte(f.Conflicting))
		id := sha256.Sum256([]byte(held + "\x00" + other))
		w.forkSeen[string(id[:])] = true
		w.forks = append(w.forks, f)
	}
	return nil
}
