// Package ktaudit is `umbra kt audit`: it replays a key transparency log from its
// entries (GetLogEntries, page by page), recomputes the log's tree and the map with
// pkg/kt's builders, and checks the log root and the map root of every checkpoint it
// is given, and of the log's latest, against what the entries make. A map that hides
// or invents a card event, and a checkpoint whose roots are not those of the entries,
// are mismatches (docs/key-transparency.md, "The auditor").
package ktaudit

import (
	"context"
	"errors"
	"fmt"
	"sort"

	"github.com/umbra-e2ee/umbra/internal/ktlog"
	"github.com/umbra-e2ee/umbra/pkg/kt"
)

// ErrMismatch is a checkpoint whose roots are not those the log's entries make, or a
// log that does not serve the entries its checkpoints commit to.
var ErrMismatch = errors.New("ktaudit: mismatch")

// Source is a signed checkpoint to check, and where it came from (a file, a witness's
// state), for the messages.
type Source struct {
	Name   string
	Signed []byte
}

// Config is what to audit.
type Config struct {
	// LogKeys are the log's verifier keys; every checkpoint must be signed by one of
	// them. Across a log key rotation, give the old and the new key: checkpoints
	// signed before it carry the old key's signature only, those after the new one's.
	LogKeys []string
	// Checkpoints are checked beside the log's latest.
	Checkpoints []Source
	// PageSize is how many entries each GetLogEntries asks for; zero means
	// ktlog.MaxEntriesPage.
	PageSize int
	// Progress, if set, is called after each page with the entries replayed so far and
	// the total.
	Progress func(done, total uint64)
}

// Checked is a checkpoint whose roots matched.
type Checked struct {
	Source string
	*kt.Checkpoint
}

// Result is a successful audit.
type Result struct {
	// Entries is how many entries were replayed: the latest checkpoint's size.
	Entries uint64
	// Checked are the checkpoints checked, by size.
	Checked []Checked
}

// MismatchError is a checkpoint whose root is not the one the entries make.
type MismatchError struct {
	Source string
	Size   uint64
	// What is "log root" or "map root".
	What                   string
	Checkpoint, Recomputed [kt.HashSize]byte
}

func (e *MismatchError) Error() string {
	what := "the log's entries are not the ones this checkpoint commits to"
	if e.What == "map root" {
		what = "the map this checkpoint commits to disagrees with the log: it hides or invents a card event"
	}
	return fmt.Sprintf("checkpoint of %d entries (%s): its %s is %x, but the first %d entries of the log make %x: %s",
		e.Size, e.Source, e.What, e.Checkpoint[:], e.Size, e.Recomputed[:], what)
}

func (e *MismatchError) Unwrap() error { return ErrMismatch }

type target struct {
	source string
	cp     *kt.Checkpoint
}

// Audit replays the log and checks the checkpoints.
func Audit(ctx context.Context, log ktlog.Log, cfg Config) (*Result, error) {
	if cfg.PageSize <= 0 || cfg.PageSize > ktlog.MaxEntriesPage {
		cfg.PageSize = ktlog.MaxEntriesPage
	}
	var targets []target
	for _, s := range cfg.Checkpoints {
		cp, err := kt.OpenCheckpoint(s.Signed, cfg.LogKeys...)
		if err != nil {
			return nil, fmt.Errorf("checkpoint %s: %w", s.Name, err)
		}
		targets = append(targets, target{s.Name, cp})
	}
	signed, err := log.Checkpoint(ctx)
	if err != nil {
		return nil, err
	}
	latest, err := kt.OpenCheckpoint(signed, cfg.LogKeys...)
	if err != nil {
		return nil, fmt.Errorf("the log's latest checkpoint: %w", err)
	}
	for _, t := range targets {
		switch {
		case t.cp.Origin != latest.Origin:
			return nil, fmt.Errorf("%w: checkpoint %s is of the log %s, not %s", ErrMismatch, t.source, t.cp.Origin, latest.Origin)
		case t.cp.Size > latest.Size:
			return nil, fmt.Errorf("%w: checkpoint %s has %d entries, but the log's latest has %d: the log went back", ErrMismatch, t.source, t.cp.Size, latest.Size)
		}
	}
	targets = append(targets, target{"the log's latest", latest})
	sort.SliceStable(targets, func(i, j int) bool { return targets[i].cp.Size < targets[j].cp.Size })

	state := kt.NewMemory().State
	var size uint64
	logRoot, mapRoot := kt.EmptyLogRoot, kt.EmptyMapHash
	res := &Result{Entries: latest.Size}
	for _, t := range targets {
		for size < t.cp.Size {
			want := min(uint64(cfg.PageSize), t.cp.Size-size)
			entries, err := log.Entries(ctx, size, int(want))
			if err != nil {
				return nil, err
			}
			if len(entries) == 0 || uint64(len(entries)) > want {
				return nil, fmt.Errorf("%w: asked for %d entries from %d (the checkpoint has %d), the log returned %d", ErrMismatch, want, size, t.cp.Size, len(entries))
			}
			lr, mr, err := state.Append(size, entries)
			if err != nil {
				return nil, err // a malformed entry: ErrMalformed, with its index
			}
			size += uint64(len(entries))
			logRoot, mapRoot = [kt.HashSize]byte(lr), mr
			if cfg.Progress != nil {
				cfg.Progress(size, latest.Size)
			}
		}
		if logRoot != t.cp.LogRoot {
			return nil, &MismatchError{Source: t.source, Size: t.cp.Size, What: "log root", Checkpoint: t.cp.LogRoot, Recomputed: logRoot}
		}
		if mapRoot != t.cp.MapRoot {
			return nil, &MismatchError{Source: t.source, Size: t.cp.Size, What: "map root", Checkpoint: t.cp.MapRoot, Recomputed: mapRoot}
		}
		res.Checked = append(res.Checked, Checked{Source: t.source, Checkpoint: t.cp})
	}
	return res, nil
}
