// state.json: what it holds, reading and writing it, and the cosigned checkpoints the witness remembers.

package witness

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"

	"github.com/umbra-e2ee/umbra/internal/durable"
	"github.com/umbra-e2ee/umbra/pkg/kt"
)

// State is what state.json holds.
type State struct {
	Version int `json:"version"`
	// LogKeys are the followed log's verifier keys (LogKey, the first of them, is
	// what state files written before log key rotations hold), and WitnessKey the
	// witness's own.
	LogKey     string   `json:"log_key"`
	LogKeys    []string `json:"log_keys,omitempty"`
	WitnessKey string   `json:"witness_key"`
	// Cosigned is the last checkpoint the witness cosigned: the log's signed note
	// with the witness's cosignature appended.
	Cosigned string `json:"cosigned"`
}

func (w *Witness) statePath() string { return filepath.Join(w.cfg.Dir, "state.json") }

func (w *Witness) loadState() (*State, error) {
	b, err := os.ReadFile(w.statePath())
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	st := &State{}
	if err := json.Unmarshal(b, st); err != nil || st.Version != 1 || len(st.logKeys()) == 0 {
		return nil, fmt.Errorf("witness: %s is not a witness state file (version 1)", w.statePath())
	}
	return st, nil
}

// ReadState reads a witness's state file, for `umbra kt audit`.
func ReadState(path string) (*State, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	st := &State{}
	if err := json.Unmarshal(b, st); err != nil || st.Version != 1 || st.Cosigned == "" {
		return nil, fmt.Errorf("%s is not a witness state file (version 1)", path)
	}
	return st, nil
}

// logKeys are the log keys a state file names.
func (st *State) logKeys() []string {
	if len(st.LogKeys) > 0 {
		return st.LogKeys
	}
	if st.LogKey != "" {
		return []string{st.LogKey}
	}
	return nil
}

// openCosigned checks a cosigned checkpoint of the state: the log's signature (by one
// of logKeys) and the witness's own cosignature.
func (w *Witness) openCosigned(b []byte, logKeys []string) (*cosigned, error) {
	cp, err := kt.OpenCheckpoint(b, logKeys...)
	if err != nil {
		return nil, err
	}
	if _, err := kt.VerifyCosignature(b, w.Key()); err != nil {
		return nil, err
	}
	text, err := kt.CheckpointText(b)
	if err != nil {
		return nil, err
	}
	return &cosigned{cp: cp, text: text, note: b}, nil
}

// saveState writes state.json durably: a temporary file, synced, renamed over it, and
// the folder synced. A cosignature is served only after its state is on disk, so a
// crash never lets the witness forget what it cosigned.
func (w *Witness) saveState(c *cosigned) error {
	b, err := json.MarshalIndent(State{Version: 1, LogKey: w.logKeys[0], LogKeys: w.logKeys, WitnessKey: w.Key().String(), Cosigned: string(c.note)}, "", "  ")
	if err != nil {
		return err
	}
	return durable.WriteFile(w.statePath(), append(b, '\n'))
}

// remember makes c the latest cosigned checkpoint and keeps it in the history.
func (w *Witness) remember(c *cosigned) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.latest = c
	w.history[c.cp.Size] = c
	if len(w.history) > w.cfg.History {
		sizes := make([]uint64, 0, len(w.history))
		for s := range w.history {
			sizes = append(sizes, s)
		}
		sort.Slice(sizes, func(i, j int) bool { return sizes[i] < sizes[j] })
		for _, s := range sizes[:len(sizes)-w.cfg.History] {
			delete(w.history, s)
		}
	}
}
