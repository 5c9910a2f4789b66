package kt

import (
	"bytes"
	"fmt"
	"math/bits"

	"github.com/transparency-dev/merkle/proof"

	ktv1 "github.com/umbra-e2ee/umbra/proto/umbra/kt/v1"
)

// MaxProofHashes bounds a log proof: a tree of 2^64 entries needs at most 2×64 hashes.
const MaxProofHashes = 128

func checkHashes(what string, hashes [][]byte) error {
	if len(hashes) > MaxProofHashes {
		return malformedf("%s of %d hashes, at most %d", what, len(hashes), MaxProofHashes)
	}
	for i, h := range hashes {
		if len(h) != HashSize {
			return malformedf("%s hash %d of %d bytes, want %d", what, i, len(h), HashSize)
		}
	}
	return nil
}

// PackHashes concatenates 32-byte hashes into the packed form of a lookup proof's
// fields (MapProof.sibling_hashes, LookupProof.inclusion_hashes; docs/wire-format.md
// 13.4 and 13.6); nil for none.
func PackHashes(hashes [][]byte) []byte {
	if len(hashes) == 0 {
		return nil
	}
	out := make([]byte, 0, len(hashes)*HashSize)
	for _, h := range hashes {
		out = append(out, h...)
	}
	return out
}

// UnpackHashes splits a packed field of 32-byte hashes, of at most max hashes. A length
// that is not a multiple of 32, or longer than max hashes, is ErrMalformed. The hashes
// share packed's memory.
func UnpackHashes(what string, packed []byte, max int) ([][]byte, error) {
	if len(packed)%HashSize != 0 {
		return nil, malformedf("%s of %d bytes, not a multiple of %d", what, len(packed), HashSize)
	}
	n := len(packed) / HashSize
	if n > max {
		return nil, malformedf("%s of %d hashes, at most %d", what, n, max)
	}
	if n == 0 {
		return nil, nil
	}
	out := make([][]byte, n)
	for i := range out {
		out[i] = packed[i*HashSize : (i+1)*HashSize : (i+1)*HashSize]
	}
	return out, nil
}

// LogDepth is the depth of the log tree of size entries: the most hashes an inclusion
// proof in it has.
func LogDepth(size uint64) int {
	if size <= 1 {
		return 0
	}
	return bits.Len64(size - 1)
}

// VerifyInclusion checks that leaf (exact LogLeaf bytes) is entry index of the log
// that checkpoint cp commits to.
func VerifyInclusion(cp *Checkpoint, index uint64, leaf []byte, inclusion [][]byte) error {
	if err := checkHashes("inclusion proof", inclusion); err != nil {
		return err
	}
	if index >= cp.Size {
		return badProoff("log entry %d is not in a checkpoint of %d entries", index, cp.Size)
	}
	if err := proof.VerifyInclusion(hasher, index, cp.Size, LeafHash(leaf), inclusion, cp.LogRoot[:]); err != nil {
		return fmt.Errorf("%w: log entry %d in the checkpoint of %d entries: %v", ErrBadProof, index, cp.Size, err)
	}
	return nil
}

// VerifyConsistency checks that checkpoint newer extends checkpoint older of the same
// log: same origin, a size no smaller, and, when the sizes differ, a consistency
// proof from one root to the other. Two checkpoints of the same size with different
// roots (a split view), a smaller size (a rollback) and a proof that fails are
// ErrInconsistent.
func VerifyConsistency(older, newer *Checkpoint, consistency [][]byte) error {
	if older.Origin != newer.Origin {
		return fmt.Errorf("%w: checkpoints of two logs, %q and %q", ErrInconsistent, older.Origin, newer.Origin)
	}
	if err := checkHashes("consistency proof", consistency); err != nil {
		return err
	}
	switch {
	case newer.Size < older.Size:
		return fmt.Errorf("%w: the log went from %d entries back to %d", ErrInconsistent, older.Size, newer.Size)
	case newer.Size == older.Size:
		if older.LogRoot != newer.LogRoot || older.MapRoot != newer.MapRoot {
			return fmt.Errorf("%w: two checkpoints of %d entries with different roots (a fork of the log)", ErrInconsistent, older.Size)
		}
		if len(consistency) != 0 {
			return malformedf("consistency proof between checkpoints of one size has %d hashes, want none", len(consistency))
		}
		return nil
	}
	if err := proof.VerifyConsistency(hasher, older.Size, newer.Size, consistency, older.LogRoot[:], newer.LogRoot[:]); err != nil {
		return fmt.Errorf("%w: the log of %d entries is not a prefix of the log of %d: %v", ErrInconsistent, older.Size, newer.Size, err)
	}
	return nil
}

// Lookup is what a verified lookup proves about one identity at a checkpoint.
type Lookup struct {
	Identity string
	// Value is the identity's map entry; nil when the map has none (the identity never
	// had a card event).
	Value *ktv1.MapValue
	// Leaf is the log entry proved: the publication of Value's card, or, when Value
	// names none, the identity's latest event (a revocation). Nil when Value is.
	Leaf *ktv1.LogLeaf
}

// CardID is the identity's current card at the checkpoint; nil when it has none.
func (l *Lookup) CardID() []byte { return l.Value.GetCardId() }

// VerifyLookup checks a lookup proof of identity of app against checkpoint cp: the map
// proof of the identity's entry (or its absence) against cp's map root; and, for an
// entry, that the log entry given is entry leaf_index of cp's log (inclusion proof),
// is about the identity's map key, and is the event the entry says: the publication
// of the entry's card, or the revocation that left it none.
func VerifyLookup(cp *Checkpoint, app, identity string, p *ktv1.LookupProof) (*Lookup, error) {
	if p.GetIdentity() != identity {
		return nil, badProoff("lookup proof for identity %q, want %q", p.GetIdentity(), identity)
	}
	key := MapKey(app, identity)
	out := &Lookup{Identity: identity}
	if len(p.GetMapValue()) == 0 {
		if len(p.GetLeaf()) != 0 || len(p.GetInclusionHashes()) != 0 || p.GetLeafIndex() != 0 {
			return nil, malformedf("lookup proof of an absent identity carries a log entry")
		}
		if err := VerifyMapProof(cp.MapRoot, key, nil, p.GetMapProof()); err != nil {
			return nil, err
		}
		return out, nil
	}
	value, err := ParseMapValue(p.GetMapValue())
	if err != nil {
		return nil, err
	}
	if err := VerifyMapProof(cp.MapRoot, key, p.GetMapValue(), p.GetMapProof()); err != nil {
		return nil, err
	}
	leaf, err := ParseLeaf(p.GetLeaf())
	if err != nil {
		return nil, err
	}
	if !bytes.Equal(leaf.GetMapKey(), key[:]) {
		return nil, badProoff("the log entry proved for %s is about another map key", identity)
	}
	if value.GetLatestLogIndex() >= cp.Size {
		return nil, badProoff("the map entry of %s names log entry %d, past the checkpoint's %d entries", identity, value.GetLatestLogIndex(), cp.Size)
	}
	if len(value.GetCardId()) > 0 {
		if p.GetLeafIndex() != value.GetCardLogIndex() {
			return nil, badProoff("the log entry proved for %s is entry %d, but its card was published by entry %d", identity, p.GetLeafIndex(), value.GetCardLogIndex())
		}
		if leaf.GetKind() == ktv1.LogEventKind_LOG_EVENT_KIND_REVOCATION || !bytes.Equal(leaf.GetCardId(), value.GetCardId()) {
			return nil, badProoff("log entry %d is not the publication of %s's current card", p.GetLeafIndex(), identity)
		}
	} else {
		if p.GetLeafIndex() != value.GetLatestLogIndex() {
			return nil, badProoff("the log entry proved for %s is entry %d, but its latest event is entry %d", identity, p.GetLeafIndex(), value.GetLatestLogIndex())
		}
		if leaf.GetKind() != ktv1.LogEventKind_LOG_EVENT_KIND_REVOCATION {
			return nil, badProoff("the map says %s has no card, but its latest event, entry %d, is a %s", identity, p.GetLeafIndex(), leaf.GetKind())
		}
	}
	inclusion, err := UnpackHashes("inclusion proof", p.GetInclusionHashes(), LogDepth(cp.Size))
	if err != nil {
		return nil, err
	}
	if err := VerifyInclusion(cp, p.GetLeafIndex(), p.GetLeaf(), inclusion); err != nil {
		return nil, err
	}
	out.Value, out.Leaf = value, leaf
	return out, nil
}
