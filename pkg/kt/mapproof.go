package kt

import (
	"bytes"
	"fmt"
	"math/bits"

	ktv1 "github.com/umbra-e2ee/umbra/proto/umbra/kt/v1"
)

// ProveMap returns the proof of what the map in st holds at key, and the value hash
// of key's entry (ok false when there is none).
func ProveMap(st MapStore, key [HashSize]byte) (proof *ktv1.MapProof, valueHash [HashSize]byte, ok bool, err error) {
	// A map of a million entries has paths of about 20 levels: the siblings' hashes go
	// in one array, which is the proof's packed field.
	hashes := make([]byte, 0, 24*HashSize)
	proof = &ktv1.MapProof{}
	var bitmap [HashSize]byte
	for depth := 0; depth <= MaxMapDepth; depth++ {
		n, present, err := st.MapNode(mapNodeID(&key, depth))
		if err != nil {
			return nil, valueHash, false, err
		}
		if !present || n.Leaf {
			proof.Depth = uint32(depth)
			if len(hashes) > 0 {
				proof.SiblingHashes = hashes
			}
			proof.Bitmap = bytes.Clone(bitmap[:(depth+7)/8])
			switch {
			case present && n.Key == key:
				return proof, n.ValueHash, true, nil
			case present:
				proof.OtherKey, proof.OtherValueHash = bytes.Clone(n.Key[:]), bytes.Clone(n.ValueHash[:])
			}
			return proof, valueHash, false, nil
		}
		sibling := n.Left
		if bit(&key, depth) == 0 {
			sibling = n.Right
		}
		if sibling != EmptyMapHash {
			bitmap[depth/8] |= 0x80 >> (depth % 8)
			hashes = append(hashes, sibling[:]...)
		}
	}
	return nil, valueHash, false, fmt.Errorf("kt: map path of key %x deeper than %d", key, MaxMapDepth)
}

// VerifyMapProof checks proof against the map root: with value set (the exact
// MapValue bytes), that the map holds key → value; with value nil, that the map holds
// nothing at key. It returns an error wrapping ErrMalformed for a proof that is not
// well formed, and ErrBadProof for one that does not lead to root.
func VerifyMapProof(root [HashSize]byte, key [HashSize]byte, value []byte, proof *ktv1.MapProof) error {
	depth := int(proof.GetDepth())
	if depth > MaxMapDepth {
		return malformedf("map proof depth %d, at most %d", depth, MaxMapDepth)
	}
	bitmap := proof.GetBitmap()
	if len(bitmap) != (depth+7)/8 {
		return malformedf("map proof bitmap of %d bytes for depth %d, want %d", len(bitmap), depth, (depth+7)/8)
	}
	set := 0
	for i, b := range bitmap {
		if i == len(bitmap)-1 && depth%8 != 0 && b&(0xff>>(depth%8)) != 0 {
			return malformedf("map proof bitmap has bits set past depth %d", depth)
		}
		set += bits.OnesCount8(b)
	}
	// The siblings are packed: their hashes concatenated (docs/wire-format.md 13.4).
	siblings := proof.GetSiblingHashes()
	if len(siblings)%HashSize != 0 {
		return malformedf("map proof sibling hashes of %d bytes, not a multiple of %d", len(siblings), HashSize)
	}
	// One hash per bit set in the bitmap: at most depth hashes, so a field longer than
	// depth × 32 bytes is refused here.
	if n := len(siblings) / HashSize; n != set {
		return malformedf("map proof has %d siblings, its bitmap marks %d", n, set)
	}
	otherKey, otherValue := proof.GetOtherKey(), proof.GetOtherValueHash()
	var h [HashSize]byte
	switch {
	case len(otherKey) == 0 && len(otherValue) == 0 && value != nil:
		h = MapLeafHash(key, ValueHash(value))
	case len(otherKey) == 0 && len(otherValue) == 0:
		h = EmptyMapHash
	case value != nil:
		return malformedf("map proof of a present entry names another key's entry")
	case len(otherKey) != HashSize || len(otherValue) != HashSize:
		return malformedf("map proof other entry: key of %d bytes and value hash of %d, want %d each", len(otherKey), len(otherValue), HashSize)
	default:
		other := [HashSize]byte(otherKey)
		if other == key {
			return badProoff("map proof of absence ends at the entry of the very key it says is absent")
		}
		// The other entry sits where only keys that share its first depth bits can.
		for i := range depth {
			if bit(&other, i) != bit(&key, i) {
				return badProoff("map proof of absence ends at depth %d at the entry of key %x, which is not on the path of key %x", depth, otherKey, key)
			}
		}
		h = MapLeafHash(other, [HashSize]byte(otherValue))
	}
	next := len(siblings)
	for d := depth - 1; d >= 0; d-- {
		sibling := EmptyMapHash
		if bitmap[d/8]&(0x80>>(d%8)) != 0 {
			next -= HashSize
			sibling = [HashSize]byte(siblings[next : next+HashSize])
		}
		if bit(&key, d) == 0 {
			h = MapNodeHash(h, sibling)
		} else {
			h = MapNodeHash(sibling, h)
		}
	}
	if h != root {
		if value != nil {
			return badProoff("map proof of key %x: the entry does not lead to the map root", key)
		}
		return badProoff("map proof of the absence of key %x does not lead to the map root", key)
	}
	return nil
}
