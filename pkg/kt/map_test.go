package kt

import (
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"testing"

	"google.golang.org/protobuf/proto"

	ktv1 "github.com/umbra-e2ee/umbra/proto/umbra/kt/v1"
)

// referenceMapRoot is the map root from its definition (docs/wire-format.md 13.3):
// no entry is the empty hash, one entry is its leaf, more are the node of the two
// halves split by the key bit at depth.
func referenceMapRoot(entries map[[HashSize]byte][HashSize]byte, depth int) [HashSize]byte {
	switch len(entries) {
	case 0:
		return EmptyMapHash
	case 1:
		for k, v := range entries {
			return MapLeafHash(k, v)
		}
	}
	var halves [2]map[[HashSize]byte][HashSize]byte
	halves[0], halves[1] = map[[HashSize]byte][HashSize]byte{}, map[[HashSize]byte][HashSize]byte{}
	for k, v := range entries {
		halves[bit(&k, depth)][k] = v
	}
	return MapNodeHash(referenceMapRoot(halves[0], depth+1), referenceMapRoot(halves[1], depth+1))
}

func testKey(i int) [HashSize]byte {
	return sha256.Sum256(binary.BigEndian.AppendUint64(nil, uint64(i)))
}

func testValue(i, version int) []byte {
	v, err := EncodeMapValue(&ktv1.MapValue{Version: Version, CardId: bytesOf(byte(i), HashSize), CardLogIndex: uint64(version), LatestLogIndex: uint64(version)})
	if err != nil {
		panic(err)
	}
	return v
}

func bytesOf(b byte, n int) []byte {
	out := make([]byte, n)
	for i := range out {
		out[i] = b
	}
	return out
}

// TestMapMatchesItsDefinition: batches of new and changed entries, including keys that
// share long prefixes, give the root of the definition, and every key proves.
func TestMapMatchesItsDefinition(t *testing.T) {
	tiles := MemoryMapTileStore{}
	eachStore(t, MapStore(MemoryMapStore{}), func() (MapStore, func() error) { s := NewTiledMapStore(tiles); return s, s.Flush }, testMapMatchesItsDefinition)
}

func testMapMatchesItsDefinition(t *testing.T, open func() (MapStore, func() error)) {
	st, _ := open()
	want := map[[HashSize]byte][HashSize]byte{}
	values := map[[HashSize]byte][]byte{}
	root, err := MapRoot(st)
	if err != nil || root != EmptyMapHash {
		t.Fatalf("empty map root %x, %v", root, err)
	}
	// Two keys that share 255 bits: the deepest a path can go.
	deepA, deepB := testKey(-1), testKey(-1)
	deepB[HashSize-1] ^= 1
	batches := [][]int{{0}, {1}, {2, 3, 4, 5, 6, 7}, {0, 8, 9}, {}, {10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 3}}
	for b := 20; b < 300; b += 40 {
		var batch []int
		for i := b; i < b+40; i++ {
			batch = append(batch, i, i/2)
		}
		batches = append(batches, batch)
	}
	for round, batch := range batches {
		var entries []MapEntry
		for _, i := range batch {
			k, v := testKey(i), testValue(i, round)
			entries = append(entries, MapEntry{Key: k, ValueHash: ValueHash(v)})
			want[k], values[k] = ValueHash(v), v
		}
		if round == 3 {
			for _, k := range [][HashSize]byte{deepA, deepB} {
				v := testValue(200, round)
				entries = append(entries, MapEntry{Key: k, ValueHash: ValueHash(v)})
				want[k], values[k] = ValueHash(v), v
			}
		}
		st, flush := open()
		root, err := UpdateMap(st, entries)
		if err != nil {
			t.Fatal(err)
		}
		if err := flush(); err != nil {
			t.Fatal(err)
		}
		if ref := referenceMapRoot(want, 0); root != ref {
			t.Fatalf("round %d: root %x, the definition gives %x", round, root, ref)
		}
	}
	st, _ = open()
	root, _ = MapRoot(st)
	for k, v := range values {
		p, vh, ok, err := ProveMap(st, k)
		if err != nil || !ok || vh != ValueHash(v) {
			t.Fatalf("prove %x: ok %v, %v", k, ok, err)
		}
		if err := VerifyMapProof(root, k, v, p); err != nil {
			t.Fatalf("verify %x: %v", k, err)
		}
	}
	p, _, _, _ := ProveMap(st, deepA)
	if p.GetDepth() != MaxMapDepth {
		t.Errorf("the proof of a key that shares 255 bits with another has depth %d, want %d", p.GetDepth(), MaxMapDepth)
	}
	for i := 1000; i < 1100; i++ {
		k := testKey(i)
		p, _, ok, err := ProveMap(st, k)
		if err != nil || ok {
			t.Fatalf("prove absent %x: ok %v, %v", k, ok, err)
		}
		if err := VerifyMapProof(root, k, nil, p); err != nil {
			t.Fatalf("verify absent %x: %v", k, err)
		}
	}
}

// provedMap is a map of 64 entries with a proof of a present key and of two absent
// ones: one whose path ends at an empty subtree, one at another key's entry.
func provedMap(t *testing.T) (root [HashSize]byte, key [HashSize]byte, value []byte, present *ktv1.MapProof, emptyKey [HashSize]byte, atEmpty *ktv1.MapProof, otherKey [HashSize]byte, atOther *ktv1.MapProof) {
	t.Helper()
	st := MemoryMapStore{}
	var entries []MapEntry
	for i := range 64 {
		entries = append(entries, MapEntry{Key: testKey(i), ValueHash: ValueHash(testValue(i, 1))})
	}
	root, err := UpdateMap(st, entries)
	if err != nil {
		t.Fatal(err)
	}
	key, value = testKey(7), testValue(7, 1)
	present, _, _, _ = ProveMap(st, key)
	for i := 64; atEmpty == nil || atOther == nil; i++ {
		k := testKey(i)
		p, _, _, _ := ProveMap(st, k)
		if len(p.GetOtherKey()) == 0 && atEmpty == nil {
			emptyKey, atEmpty = k, p
		} else if len(p.GetOtherKey()) > 0 && atOther == nil {
			otherKey, atOther = k, p
		}
	}
	return
}

// TestMapProofTamperingIsRefused: each change of a proof, a value or a key is refused
// with its kind of error.
func TestMapProofTamperingIsRefused(t *testing.T) {
	root, key, value, present, emptyKey, atEmpty, otherKey, atOther := provedMap(t)
	for _, c := range []struct {
		name string
		key  [HashSize]byte
		p    *ktv1.MapProof
	}{{"present", key, present}, {"absent at empty", emptyKey, atEmpty}, {"absent at other", otherKey, atOther}} {
		v := value
		if c.key != key {
			v = nil
		}
		if err := VerifyMapProof(root, c.key, v, c.p); err != nil {
			t.Fatalf("%s: the untouched proof is refused: %v", c.name, err)
		}
	}
	if present.GetDepth() != 9 {
		t.Fatalf("the present key's proof is %d levels deep; the cases below expect 9", present.GetDepth())
	}
	otherValue := testValue(8, 1)
	flip := func(b []byte) []byte { b = append([]byte(nil), b...); b[len(b)-1] ^= 1; return b }
	flipByte := func(b []byte, i int) []byte { b = append([]byte(nil), b...); b[i] ^= 1; return b }
	tests := []struct {
		name  string
		key   [HashSize]byte
		value []byte
		edit  func(p *ktv1.MapProof)
		want  error
	}{
		{"another value for a present key", key, otherValue, nil, ErrBadProof},
		{"a present key said absent", key, nil, nil, ErrBadProof},
		{"an absent key said present", emptyKey, value, func(p *ktv1.MapProof) { proto.Reset(p); proto.Merge(p, atEmpty) }, ErrBadProof},
		{"a sibling changed", key, value, func(p *ktv1.MapProof) { p.SiblingHashes = flip(p.SiblingHashes) }, ErrBadProof},
		{"the first sibling changed", key, value, func(p *ktv1.MapProof) { p.SiblingHashes = flipByte(p.SiblingHashes, 0) }, ErrBadProof},
		{"a sibling dropped", key, value, func(p *ktv1.MapProof) { p.SiblingHashes = p.SiblingHashes[HashSize:] }, ErrMalformed},
		{"a non-empty sibling marked empty", key, value, func(p *ktv1.MapProof) {
			p.Bitmap[0] &^= firstSetBit(p.Bitmap[0])
			p.SiblingHashes = p.SiblingHashes[HashSize:]
		}, ErrBadProof},
		{"a shorter path", key, value, func(p *ktv1.MapProof) { p.Depth-- }, ErrMalformed},
		{"sibling hashes one byte short", key, value, func(p *ktv1.MapProof) { p.SiblingHashes = p.SiblingHashes[:len(p.SiblingHashes)-1] }, ErrMalformed},
		{"sibling hashes one byte long", key, value, func(p *ktv1.MapProof) { p.SiblingHashes = append(p.SiblingHashes, 0) }, ErrMalformed},
		{"more sibling hashes than the depth", key, value, func(p *ktv1.MapProof) { p.SiblingHashes = make([]byte, (p.Depth+1)*HashSize) }, ErrMalformed},
		{"a sibling hash too many", key, value, func(p *ktv1.MapProof) { p.SiblingHashes = append(p.SiblingHashes, make([]byte, HashSize)...) }, ErrMalformed},
		{"a bitmap of the wrong length", key, value, func(p *ktv1.MapProof) { p.Bitmap = append(p.Bitmap, 0) }, ErrMalformed},
		// The present key's path is 9 levels deep: its bitmap is 2 bytes, 7 bits unused.
		{"a bitmap bit past the depth", key, value, func(p *ktv1.MapProof) {
			p.Bitmap[1] |= 1
			p.SiblingHashes = append(p.SiblingHashes, p.SiblingHashes[:HashSize]...)
		}, ErrMalformed},
		{"a depth past 256", key, value, func(p *ktv1.MapProof) { p.Depth = 257; p.Bitmap = make([]byte, 33) }, ErrMalformed},
		{"absence at empty, with a sibling changed", emptyKey, nil, func(p *ktv1.MapProof) {
			proto.Reset(p)
			proto.Merge(p, atEmpty)
			p.SiblingHashes = flip(p.SiblingHashes)
		}, ErrBadProof},
		{"absence at another entry, with its value hash changed", otherKey, nil, func(p *ktv1.MapProof) {
			proto.Reset(p)
			proto.Merge(p, atOther)
			p.OtherValueHash = flip(p.OtherValueHash)
		}, ErrBadProof},
		{"absence proved by the key's own entry", key, nil, func(p *ktv1.MapProof) {
			p.OtherKey, p.OtherValueHash = key[:], func() []byte { h := ValueHash(value); return h[:] }()
		}, ErrBadProof},
		{"absence proved by an entry off the key's path", emptyKey, nil, func(p *ktv1.MapProof) {
			// The present key's proof, reused for another key: the entry it ends at is
			// not on that key's path.
			p.OtherKey, p.OtherValueHash = key[:], func() []byte { h := ValueHash(value); return h[:] }()
		}, ErrBadProof},
		{"a present entry with another entry named", key, value, func(p *ktv1.MapProof) { p.OtherKey, p.OtherValueHash = otherKey[:], otherKey[:] }, ErrMalformed},
		{"an other entry of a short key", otherKey, nil, func(p *ktv1.MapProof) { proto.Reset(p); proto.Merge(p, atOther); p.OtherKey = p.OtherKey[:16] }, ErrMalformed},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p := proto.CloneOf(present)
			if tc.edit != nil {
				tc.edit(p)
			}
			err := VerifyMapProof(root, tc.key, tc.value, p)
			if !errors.Is(err, tc.want) {
				t.Fatalf("got %v, want %v", err, tc.want)
			}
		})
	}
}

func firstSetBit(b byte) byte {
	for m := byte(0x80); m != 0; m >>= 1 {
		if b&m != 0 {
			return m
		}
	}
	panic(fmt.Sprintf("no bit set in %08b", b))
}

// TestMapAbsenceAtAMisplacedEntryIsRefused: a root a malicious server built with an
// entry on the wrong side of the root; the proof hashes to it, but the entry is not on
// the path of the key said absent.
func TestMapAbsenceAtAMisplacedEntryIsRefused(t *testing.T) {
	var key, misplaced [HashSize]byte
	key[0], misplaced[0] = 0x00, 0x80 // key goes left at the root, misplaced right
	vh := ValueHash([]byte("value"))
	root := MapNodeHash(MapLeafHash(misplaced, vh), EmptyMapHash)
	p := &ktv1.MapProof{Depth: 1, Bitmap: []byte{0}, OtherKey: misplaced[:], OtherValueHash: vh[:]}
	if err := VerifyMapProof(root, key, nil, p); !errors.Is(err, ErrBadProof) {
		t.Fatalf("got %v, want ErrBadProof", err)
	}
}
