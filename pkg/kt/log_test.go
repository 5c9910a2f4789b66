package kt

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"testing"
)

// referenceLogRoot is RFC 9162's MTH, from its definition.
func referenceLogRoot(leaves [][]byte) []byte {
	switch n := len(leaves); n {
	case 0:
		h := sha256.Sum256(nil)
		return h[:]
	case 1:
		return LeafHash(leaves[0])
	default:
		k := 1
		for k*2 < n {
			k *= 2
		}
		h := sha256.New()
		h.Write([]byte{1})
		h.Write(referenceLogRoot(leaves[:k]))
		h.Write(referenceLogRoot(leaves[k:]))
		return h.Sum(nil)
	}
}

func testLeaves(n int) [][]byte {
	out := make([][]byte, n)
	for i := range out {
		out[i] = fmt.Appendf(nil, "leaf %d", i)
	}
	return out
}

// TestLogMatchesRFC9162: appended in batches of every size, the log has RFC 9162's
// roots, and every inclusion and consistency proof verifies.
func TestLogMatchesRFC9162(t *testing.T) {
	tiles := MemoryLogTileStore{}
	eachStore(t, LogStore(MemoryLogStore{}), func() (LogStore, func() error) { s := NewTiledLogStore(tiles); return s, s.Flush }, testLogMatchesRFC9162)
}

// eachStore runs test in the subtests nodes, over nodes (where a write is durable at
// once), and tiles, over the store tiled returns for each batch with the flush that
// makes it durable: open, test's argument, returns one or the other.
func eachStore[S any](t *testing.T, nodes S, tiled func() (S, func() error), test func(t *testing.T, open func() (S, func() error))) {
	t.Run("nodes", func(t *testing.T) { test(t, func() (S, func() error) { return nodes, func() error { return nil } }) })
	t.Run("tiles", func(t *testing.T) { test(t, tiled) })
}

func testLogMatchesRFC9162(t *testing.T, open func() (LogStore, func() error)) {
	leaves := testLeaves(300)
	size := uint64(0)
	var checkpoints []*Checkpoint
	for batch := 0; size < uint64(len(leaves)); batch += 3 {
		end := min(size+uint64(batch), uint64(len(leaves)))
		st, flush := open()
		root, err := AppendLog(st, size, leaves[size:end])
		if err != nil {
			t.Fatal(err)
		}
		if err := flush(); err != nil {
			t.Fatal(err)
		}
		size = end
		if want := referenceLogRoot(leaves[:size]); !bytes.Equal(root, want) {
			t.Fatalf("size %d: root %x, RFC 9162 gives %x", size, root, want)
		}
		checkpoints = append(checkpoints, &Checkpoint{Origin: "test", Size: size, LogRoot: [HashSize]byte(root)})
	}
	st, _ := open()
	for _, cp := range checkpoints {
		for i := range cp.Size {
			p, err := InclusionProof(st, i, cp.Size)
			if err != nil {
				t.Fatal(err)
			}
			if err := VerifyInclusion(cp, i, leaves[i], p); err != nil {
				t.Fatalf("entry %d of %d: %v", i, cp.Size, err)
			}
		}
		for _, older := range checkpoints {
			if older.Size > cp.Size {
				continue
			}
			p, err := ConsistencyProof(st, older.Size, cp.Size)
			if err != nil {
				t.Fatal(err)
			}
			if older.Size == cp.Size {
				p = nil
			}
			if err := VerifyConsistency(older, cp, p); err != nil {
				t.Fatalf("%d to %d: %v", older.Size, cp.Size, err)
			}
		}
	}
}

// TestLogProofTamperingIsRefused: a changed leaf, index or proof fails inclusion; a
// rewritten log, a fork at one size and a rollback fail consistency.
func TestLogProofTamperingIsRefused(t *testing.T) {
	leaves := testLeaves(21)
	st := MemoryLogStore{}
	root13, _ := AppendLog(st, 0, leaves[:13])
	root21, _ := AppendLog(st, 13, leaves[13:])
	cp13 := &Checkpoint{Origin: "test", Size: 13, LogRoot: [HashSize]byte(root13)}
	cp21 := &Checkpoint{Origin: "test", Size: 21, LogRoot: [HashSize]byte(root21)}
	inclusion, _ := InclusionProof(st, 5, 21)
	consistency, _ := ConsistencyProof(st, 13, 21)
	if err := VerifyInclusion(cp21, 5, leaves[5], inclusion); err != nil {
		t.Fatal(err)
	}
	if err := VerifyConsistency(cp13, cp21, consistency); err != nil {
		t.Fatal(err)
	}
	// A log whose entry 3 was rewritten, then grown to 21 again.
	rewritten := append([][]byte(nil), leaves...)
	rewritten[3] = []byte("rewritten")
	other := MemoryLogStore{}
	otherRoot, _ := AppendLog(other, 0, rewritten)
	otherConsistency, _ := ConsistencyProof(other, 13, 21)
	cpRewritten := &Checkpoint{Origin: "test", Size: 21, LogRoot: [HashSize]byte(otherRoot)}

	flipped := func(p [][]byte, i int) [][]byte {
		q := make([][]byte, len(p))
		for j := range p {
			q[j] = bytes.Clone(p[j])
		}
		q[i][0] ^= 1
		return q
	}
	t.Run("inclusion", func(t *testing.T) {
		for _, tc := range []struct {
			name  string
			index uint64
			leaf  []byte
			proof [][]byte
			want  error
		}{
			{"another leaf", 5, leaves[6], inclusion, ErrBadProof},
			{"another index", 6, leaves[5], inclusion, ErrBadProof},
			{"a proof hash changed", 5, leaves[5], flipped(inclusion, 1), ErrBadProof},
			{"a proof hash dropped", 5, leaves[5], inclusion[1:], ErrBadProof},
			{"an index past the checkpoint", 21, leaves[5], inclusion, ErrBadProof},
			{"a short proof hash", 5, leaves[5], [][]byte{inclusion[0][:31]}, ErrMalformed},
		} {
			t.Run(tc.name, func(t *testing.T) {
				if err := VerifyInclusion(cp21, tc.index, tc.leaf, tc.proof); !errors.Is(err, tc.want) {
					t.Fatalf("got %v, want %v", err, tc.want)
				}
			})
		}
	})
	t.Run("consistency", func(t *testing.T) {
		fork := *cp13
		fork.LogRoot[0] ^= 1
		mapFork := *cp13
		mapFork.MapRoot[0] ^= 1
		otherLog := *cp21
		otherLog.Origin = "another"
		for _, tc := range []struct {
			name         string
			older, newer *Checkpoint
			proof        [][]byte
			want         error
		}{
			{"a rewritten log", cp13, cpRewritten, otherConsistency, ErrInconsistent},
			{"a rewritten log, with the real log's proof", cp13, cpRewritten, consistency, ErrInconsistent},
			{"a proof hash changed", cp13, cp21, flipped(consistency, 0), ErrInconsistent},
			{"a fork: one size, two log roots", cp13, &fork, nil, ErrInconsistent},
			{"a fork: one size, two map roots", cp13, &mapFork, nil, ErrInconsistent},
			{"a rollback", cp21, cp13, nil, ErrInconsistent},
			{"two logs", cp13, &otherLog, consistency, ErrInconsistent},
		} {
			t.Run(tc.name, func(t *testing.T) {
				if err := VerifyConsistency(tc.older, tc.newer, tc.proof); !errors.Is(err, tc.want) {
					t.Fatalf("got %v, want %v", err, tc.want)
				}
			})
		}
	})
}
