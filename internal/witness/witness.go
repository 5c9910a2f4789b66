// Package witness is `umbra witness`: it follows one key transparency log, checks that
// every checkpoint it is shown extends the last one it cosigned, cosigns it (C2SP
// tlog-cosignature/v1, pkg/kt's WitnessSigner), and serves its cosignatures over HTTP.
// A checkpoint that contradicts what it cosigned (the same size with other roots, or a
// log that is not an extension of the one it cosigned) is never cosigned: the witness
// records the two signed checkpoints as evidence of a fork, logs it, and lists it.
//
// docs/key-transparency.md ("Witnesses") is the design and HTTP API; its state is one
// small file (state.json: the log key and the last checkpoint it cosigned) and the
// evidence an append-only file (forks.jsonl), both in its data folder.
package witness

import (
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"go.uber.org/zap"
	"golang.org/x/mod/sumdb/note"

	"github.com/umbra-e2ee/umbra/internal/ktlog"
	"github.com/umbra-e2ee/umbra/pkg/kt"
)

// Defaults of Config.
const (
	DefaultInterval = time.Second
	DefaultHistory  = 1000
)

// Errors of Observe besides pkg/kt's (a malformed or wrongly signed checkpoint) and
// *kt.ForkError.
var (
	// ErrNotCosigned is a checkpoint older than the last one the witness cosigned, and
	// that it never cosigned: consistent with what it cosigned, but a cosignature now
	// would say it is the largest the witness has seen, which is false.
	ErrNotCosigned = errors.New("witness: not cosigned")
	// ErrLogUnavailable is a log that did not answer for a consistency proof.
	ErrLogUnavailable = errors.New("witness: the log did not answer")
)

// Config is a witness's configuration.
type Config struct {
	// LogKeys are the verifier keys of the log to follow, all named by its origin:
	// one, or, during a log key rotation, the old and the new one (a checkpoint signed
	// by any of them is the log's). None means the keys of the state file, or on the
	// first start the key the log states (GetLogKey). The state file keeps them; a
	// later start with keys of another origin is refused (a witness follows one log),
	// and one with other keys of the same origin follows a rotation.
	LogKeys []string
	// Signer is the witness's key.
	Signer *kt.WitnessSigner
	// Dir holds state.json and forks.jsonl; created 0700 if missing.
	Dir string
	// Interval between polls of the log; zero means DefaultInterval.
	Interval time.Duration
	// History is how many recent cosigned checkpoints are kept in memory, to answer
	// for a size; zero means DefaultHistory.
	History int
	// Now defaults to time.Now.
	Now func() time.Time
}

// cosigned is a checkpoint the witness cosigned.
type cosigned struct {
	cp   *kt.Checkpoint
	text string
	note []byte
}

// Witness follows one log.
type Witness struct {
	log     ktlog.Log
	cfg     Config
	logger  *zap.Logger
	logKeys []string
	origin  string

	// observe serialises observations: each reads the state, may ask the log for a
	// proof, and writes the state.
	observe  sync.Mutex
	lastPoll time.Time

	mu       sync.RWMutex
	latest   *cosigned
	history  map[uint64]*cosigned
	forks    []Fork
	forkSeen map[string]bool
}

// New opens the witness's state in cfg.Dir, or starts one, following log.
func New(ctx context.Context, log ktlog.Log, cfg Config, logger *zap.Logger) (*Witness, error) {
	if cfg.Signer == nil {
		return nil, errors.New("witness: no witness key")
	}
	if cfg.Dir == "" {
		return nil, errors.New("witness: no data folder")
	}
	if cfg.Interval == 0 {
		cfg.Interval = DefaultInterval
	}
	if cfg.History == 0 {
		cfg.History = DefaultHistory
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if err := os.MkdirAll(cfg.Dir, 0o700); err != nil {
		return nil, err
	}
	w := &Witness{log: log, cfg: cfg, logger: logger, history: map[uint64]*cosigned{}, forkSeen: map[string]bool{}}
	st, err := w.loadState()
	if err != nil {
		return nil, err
	}
	var stateKeys []string
	if st != nil {
		stateKeys = st.logKeys()
	}
	switch {
	case len(cfg.LogKeys) > 0:
		w.logKeys = slices.Clone(cfg.LogKeys)
	case st != nil:
		w.logKeys = stateKeys
	default:
		_, vkey, err := log.LogKey(ctx)
		if err != nil {
			return nil, fmt.Errorf("witness: no --log-key given, and the log's own: %w", err)
		}
		w.logKeys = []string{vkey}
		logger.Warn("following the log key the log states, on first use; pin it with --log-key", zap.String("log_key", vkey))
	}
	if w.origin, err = logOrigin(w.logKeys); err != nil {
		return nil, err
	}
	if st != nil {
		origin, err := logOrigin(stateKeys)
		if err != nil {
			return nil, fmt.Errorf("witness: %s: %w", w.statePath(), err)
		}
		if origin != w.origin {
			return nil, fmt.Errorf("witness: %s follows the log %s (log key %s), not %s: a witness follows one log (use another data folder)", w.statePath(), origin, strings.Join(stateKeys, ","), w.origin)
		}
		if !slices.Equal(stateKeys, w.logKeys) {
			logger.Info("the log's keys changed (a log key rotation): checkpoints signed by any of these keys are the log's", zap.Strings("log_keys", w.logKeys), zap.Strings("previous_log_keys", stateKeys))
		}
	}
	if st != nil {
		if st.WitnessKey != cfg.Signer.Key().String() {
			return nil, fmt.Errorf("witness: %s was cosigned by the witness key %s, not %s", w.statePath(), st.WitnessKey, cfg.Signer.Key())
		}
		// The state's checkpoint was cosigned under the keys of that time: a key
		// retired since still vouches for what this witness already cosigned.
		c, err := w.openCosigned([]byte(st.Cosigned), append(slices.Clone(w.logKeys), stateKeys...))
		if err != nil {
			return nil, fmt.Errorf("witness: %s: %w", w.statePath(), err)
		}
		w.remember(c)
	}
	if err := w.loadForks(); err != nil {
		return nil, err
	}
	return w, nil
}

// LogKeys are the verifier keys of the log the witness follows, and Origin its origin.
func (w *Witness) LogKeys() []string { return slices.Clone(w.logKeys) }
func (w *Witness) Origin() string    { return w.origin }

// Key is the witness's verifier key.
func (w *Witness) Key() *kt.WitnessKey { return w.cfg.Signer.Key() }

// logOrigin checks that keys are verifier keys of one log, and returns its origin.
func logOrigin(keys []string) (string, error) {
	origin := ""
	for _, k := range keys {
		v, err := note.NewVerifier(k)
		if err != nil {
			return "", fmt.Errorf("witness: log key %q: %w", k, err)
		}
		if origin != "" && v.Name() != origin {
			return "", fmt.Errorf("witness: log keys of two logs, %s and %s: a witness follows one log, and a log's keys are all named by its origin", origin, v.Name())
		}
		origin = v.Name()
	}
	if origin == "" {
		return "", errors.New("witness: no log key")
	}
	return origin, nil
}

// Latest is the last checkpoint the witness cosigned, with its cosignature; nil
// before the first.
func (w *Witness) Latest() []byte {
	w.mu.RLock()
	defer w.mu.RUnlock()
	if w.latest == nil {
		return nil
	}
	return w.latest.note
}

// Cosigned is the checkpoint of size the witness cosigned, if it remembers one.
func (w *Witness) Cosigned(size uint64) ([]byte, bool) {
	w.mu.RLock()
	defer w.mu.RUnlock()
	c, ok := w.history[size]
	if !ok {
		return nil, false
	}
	return c.note, true
}

// Forks is the evidence of every fork the witness has seen.
func (w *Witness) Forks() []Fork {
	w.mu.RLock()
	defer w.mu.RUnlock()
	return append([]Fork(nil), w.forks...)
}

// Observe is shown a checkpoint signed by the log (by its own poll, or by a client
// that submits the one it was given) and answers with the witness's cosigned
// checkpoint of that size:
//
//   - not signed by the log key: pkg/kt's ErrMalformed, ErrBadSignature or
//     ErrUnknownLogKey; nothing recorded.
//   - the first checkpoint the witness sees: cosigned (trust on first use).
//   - larger than the last one cosigned: the log's consistency proof between the two
//     must verify; then cosigned. A proof that fails is a fork.
//   - the size of one cosigned: the same body is answered with its cosignature;
//     another body is a fork.
//   - older than the last one cosigned and never cosigned: checked for consistency
//     (a failure is a fork), then ErrNotCosigned.
//
// A fork is a *kt.ForkError, recorded (forks.jsonl, the log, Forks) with both signed
// checkpoints; the witness goes on cosigning only checkpoints consistent with its own.
func (w *Witness) Observe(ctx context.Context, signed []byte, source string) ([]byte, error) {
	cp, err := kt.OpenCheckpoint(signed, w.logKeys...)
	if err != nil {
		return nil, err
	}
	text, err := kt.CheckpointText(signed)
	if err != nil {
		return nil, err
	}
	w.observe.Lock()
	defer w.observe.Unlock()
	w.mu.RLock()
	latest, same := w.latest, w.history[cp.Size]
	w.mu.RUnlock()
	switch {
	case latest == nil:
		return w.cosign(cp, text, signed)
	case same != nil:
		if same.text == text {
			return same.note, nil
		}
		return nil, w.fork(same, cp, signed, "have the same size and different roots", nil, source)
	case cp.Size > latest.cp.Size:
		proof, err := w.consistency(ctx, latest.cp.Size, cp.Size)
		if err != nil {
			return nil, err
		}
		if err := kt.VerifyConsistency(latest.cp, cp, proof); err != nil {
			return nil, w.fork(latest, cp, signed, "are not consistent: the log's proof that the first is a prefix of the second fails", proof, source)
		}
		return w.cosign(cp, text, signed)
	case cp.Size == latest.cp.Size: // latest is in the history, so same was set
		return nil, fmt.Errorf("witness: internal error: the latest checkpoint is not in the history")
	default:
		proof, err := w.consistency(ctx, cp.Size, latest.cp.Size)
		if err != nil {
			return nil, err
		}
		if err := kt.VerifyConsistency(cp, latest.cp, proof); err != nil {
			return nil, w.fork(latest, cp, signed, "are not consistent: the log's proof that the second is a prefix of the first fails", proof, source)
		}
		return nil, fmt.Errorf("%w: the checkpoint of %d entries is older than the last one cosigned (%d entries), and this witness never saw it as the latest", ErrNotCosigned, cp.Size, latest.cp.Size)
	}
}

// consistency asks the log for the proof from from to to entries; the empty log is a
// prefix of any, with an empty proof.
func (w *Witness) consistency(ctx context.Context, from, to uint64) ([][]byte, error) {
	if from == 0 {
		return nil, nil
	}
	proof, err := w.log.Consistency(ctx, from, to)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrLogUnavailable, err)
	}
	return proof, nil
}

// cosign cosigns a checkpoint checked to be consistent, stores it, and returns it.
func (w *Witness) cosign(cp *kt.Checkpoint, text string, signed []byte) ([]byte, error) {
	// Only the log's signatures (by the keys this witness knows) are kept under the
	// witness's own: not lines another party added.
	verifiers := make([]note.Verifier, len(w.logKeys))
	for i, k := range w.logKeys {
		verifiers[i] = mustVerifier(k)
	}
	n, err := note.Open(signed, note.VerifierList(verifiers...))
	if err != nil {
		return nil, err
	}
	logOnly, err := note.Sign(&note.Note{Text: n.Text, Sigs: n.Sigs})
	if err != nil {
		return nil, err
	}
	out, err := w.cfg.Signer.Cosign(logOnly, w.cfg.Now())
	if err != nil {
		return nil, err
	}
	c := &cosigned{cp: cp, text: text, note: out}
	if err := w.saveState(c); err != nil {
		return nil, fmt.Errorf("witness: save state: %w", err)
	}
	w.remember(c)
	w.logger.Info("cosigned", zap.String("origin", cp.Origin), zap.Uint64("size", cp.Size))
	return out, nil
}

func mustVerifier(vkey string) note.Verifier {
	v, err := note.NewVerifier(vkey)
	if err != nil {
		panic(err) // checked in New
	}
	return v
}

// Poll fetches the log's latest checkpoint and observes it.
func (w *Witness) Poll(ctx context.Context) error {
	w.mu.Lock()
	w.lastPoll = w.cfg.Now()
	w.mu.Unlock()
	signed, err := w.log.Checkpoint(ctx)
	if err != nil {
		return fmt.Errorf("%w: %v", ErrLogUnavailable, err)
	}
	_, err = w.Observe(ctx, signed, "poll")
	return err
}

// Follow polls the log every interval until ctx ends, logging what goes wrong.
func (w *Witness) Follow(ctx context.Context) {
	t := time.NewTicker(w.cfg.Interval)
	defer t.Stop()
	for {
		if err := w.Poll(ctx); err != nil && ctx.Err() == nil {
			var fork *kt.ForkError
			switch {
			case errors.As(err, &fork): // logged when found
			case errors.Is(err, ErrNotCosigned):
				w.logger.Warn("the log serves a checkpoint older than the last one cosigned (a rollback)", zap.Error(err))
			default:
				w.logger.Warn("poll", zap.Error(err))
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
