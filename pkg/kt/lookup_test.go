package kt

import (
	"bytes"
	"errors"
	"testing"

	"google.golang.org/protobuf/proto"

	ktv1 "github.com/umbra-e2ee/umbra/proto/umbra/kt/v1"
)

const testApp = "app_test"

func leafBytes(t testing.TB, identity string, kind ktv1.LogEventKind, card, previous byte, at int64) []byte {
	t.Helper()
	key := MapKey(testApp, identity)
	l := &ktv1.LogLeaf{Version: Version, MapKey: key[:], Kind: kind, CardId: bytesOf(card, HashSize), OccurredAtUnixNanos: at}
	if previous != 0 {
		l.PreviousCardId = bytesOf(previous, HashSize)
	}
	b, err := EncodeLeaf(l)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// lookupScenario: alice publishes card 1 and rotates to card 2; bob publishes card 3
// and revokes it; carol never publishes.
func lookupScenario(t testing.TB) (*Memory, *Checkpoint) {
	m := NewMemory()
	_, err := m.Append("test", leafBytes(t, "alice", ktv1.LogEventKind_LOG_EVENT_KIND_PUBLICATION, 1, 0, 1),
		leafBytes(t, "bob", ktv1.LogEventKind_LOG_EVENT_KIND_PUBLICATION, 3, 0, 2))
	if err != nil {
		t.Fatal(err)
	}
	cp, err := m.Append("test", leafBytes(t, "alice", ktv1.LogEventKind_LOG_EVENT_KIND_ENDORSED_ROTATION, 2, 1, 3),
		leafBytes(t, "bob", ktv1.LogEventKind_LOG_EVENT_KIND_REVOCATION, 3, 0, 4))
	if err != nil {
		t.Fatal(err)
	}
	_ = cp
	return m, cp
}

func TestLookupsVerify(t *testing.T) {
	m, cp := lookupScenario(t)
	for _, tc := range []struct {
		identity  string
		card      []byte
		leafIndex uint64
		absent    bool
	}{
		{"alice", bytesOf(2, HashSize), 2, false},
		{"bob", nil, 3, false},
		{"carol", nil, 0, true},
	} {
		p, err := m.Prove(testApp, tc.identity)
		if err != nil {
			t.Fatal(err)
		}
		got, err := VerifyLookup(cp, testApp, tc.identity, p)
		if err != nil {
			t.Fatalf("%s: %v", tc.identity, err)
		}
		if !bytes.Equal(got.CardID(), tc.card) || (got.Value == nil) != tc.absent || (!tc.absent && p.GetLeafIndex() != tc.leafIndex) {
			t.Errorf("%s: card %x, value %v, leaf %d", tc.identity, got.CardID(), got.Value, p.GetLeafIndex())
		}
	}
}

// TestLookupTamperingIsRefused: what a malicious server could change in a lookup's
// answer, and that each is refused.
func TestLookupTamperingIsRefused(t *testing.T) {
	m, cp := lookupScenario(t)
	alice, _ := m.Prove(testApp, "alice")
	bob, _ := m.Prove(testApp, "bob")
	carol, _ := m.Prove(testApp, "carol")
	older, _ := EncodeMapValue(&ktv1.MapValue{Version: Version, CardId: bytesOf(1, HashSize), CardLogIndex: 0, LatestLogIndex: 0})
	tests := []struct {
		name     string
		identity string
		from     *ktv1.LookupProof
		edit     func(p *ktv1.LookupProof)
		want     error
	}{
		{"the older card served as current", "alice", alice, func(p *ktv1.LookupProof) { p.MapValue = older; p.LeafIndex = 0; p.Leaf = m.Leaves[0] }, ErrBadProof},
		{"a present identity said absent", "alice", alice, func(p *ktv1.LookupProof) { p.MapValue, p.Leaf, p.InclusionHashes, p.LeafIndex = nil, nil, nil, 0 }, ErrBadProof},
		{"a revoked identity said absent", "bob", bob, func(p *ktv1.LookupProof) { p.MapValue, p.Leaf, p.InclusionHashes, p.LeafIndex = nil, nil, nil, 0 }, ErrBadProof},
		{"an absent identity said present with another's entry", "carol", alice, nil, ErrBadProof},
		{"another identity's proof", "carol", func() *ktv1.LookupProof { p := proto.CloneOf(alice); p.Identity = "carol"; return p }(), nil, ErrBadProof},
		{"the proof names another identity", "alice", bob, nil, ErrBadProof},
		{"the log entry of another identity", "alice", alice, func(p *ktv1.LookupProof) { p.Leaf = m.Leaves[1] }, ErrBadProof},
		{"the log entry of the replaced card", "alice", alice, func(p *ktv1.LookupProof) { p.Leaf, p.LeafIndex = m.Leaves[0], 0 }, ErrBadProof},
		{"a log entry not in the log", "alice", alice, func(p *ktv1.LookupProof) {
			p.Leaf = leafBytes(t, "alice", ktv1.LogEventKind_LOG_EVENT_KIND_ENDORSED_ROTATION, 2, 1, 99)
		}, ErrBadProof},
		{"an inclusion proof hash changed", "alice", alice, func(p *ktv1.LookupProof) { copy(p.InclusionHashes, bytes.Repeat([]byte{9}, HashSize)) }, ErrBadProof},
		{"an inclusion proof hash dropped", "alice", alice, func(p *ktv1.LookupProof) { p.InclusionHashes = p.InclusionHashes[HashSize:] }, ErrBadProof},
		{"inclusion hashes one byte short", "alice", alice, func(p *ktv1.LookupProof) { p.InclusionHashes = p.InclusionHashes[:len(p.InclusionHashes)-1] }, ErrMalformed},
		{"inclusion hashes one byte long", "alice", alice, func(p *ktv1.LookupProof) { p.InclusionHashes = append(p.InclusionHashes, 0) }, ErrMalformed},
		{"more inclusion hashes than the log tree's depth", "alice", alice, func(p *ktv1.LookupProof) {
			p.InclusionHashes = make([]byte, (LogDepth(cp.Size)+1)*HashSize)
		}, ErrMalformed},
		{"a revocation served as a publication", "bob", bob, func(p *ktv1.LookupProof) { p.Leaf = m.Leaves[1]; p.LeafIndex = 1 }, ErrBadProof},
		{"a map value that is not canonical", "alice", alice, func(p *ktv1.LookupProof) { p.MapValue = append(p.MapValue, 0x08, 0x01) }, ErrMalformed},
		{"a log entry that is not canonical", "alice", alice, func(p *ktv1.LookupProof) { p.Leaf = append(append([]byte(nil), p.Leaf...), 0x08, 0x01) }, ErrMalformed},
		{"an absent identity's proof with a log entry", "carol", carol, func(p *ktv1.LookupProof) { p.Leaf = m.Leaves[0] }, ErrMalformed},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p := proto.CloneOf(tc.from)
			if tc.edit != nil {
				tc.edit(p)
			}
			if _, err := VerifyLookup(cp, testApp, tc.identity, p); !errors.Is(err, tc.want) {
				t.Fatalf("got %v, want %v", err, tc.want)
			}
		})
	}
	// A checkpoint whose map does not hold alice's rotation, though its log does.
	stale := NewMemory()
	staleCP, _ := stale.Append("test", m.Leaves[:2]...)
	withoutRotation := *cp
	withoutRotation.MapRoot = staleCP.MapRoot
	if _, err := VerifyLookup(&withoutRotation, testApp, "alice", alice); !errors.Is(err, ErrBadProof) {
		t.Errorf("alice's current card against a map without it: got %v, want ErrBadProof", err)
	}
}

// forged is a log of leaves with a map that a malicious server wrote as it liked:
// values by identity, whatever the log says.
func forged(t *testing.T, leaves [][]byte, values map[string]*ktv1.MapValue) (*Memory, *Checkpoint) {
	t.Helper()
	m := NewMemory()
	logRoot, err := AppendLog(m.Log, 0, leaves)
	if err != nil {
		t.Fatal(err)
	}
	m.Leaves = leaves
	var entries []MapEntry
	for id, v := range values {
		b := canonical(v)
		key := MapKey(testApp, id)
		m.Values.PutMapValue(key, b)
		entries = append(entries, MapEntry{Key: key, ValueHash: ValueHash(b)})
	}
	mapRoot, err := UpdateMap(m.Map, entries)
	if err != nil {
		t.Fatal(err)
	}
	return m, &Checkpoint{Origin: "test", Size: uint64(len(leaves)), LogRoot: [HashSize]byte(logRoot), MapRoot: mapRoot}
}

// TestLookupRefusesAMapThatDisagreesWithTheLog: a map whose entry is proved, with an
// entry that is in the log, but an entry that is not the event the map says.
func TestLookupRefusesAMapThatDisagreesWithTheLog(t *testing.T) {
	pub := ktv1.LogEventKind_LOG_EVENT_KIND_PUBLICATION
	tests := []struct {
		name   string
		leaves [][]byte
		value  *ktv1.MapValue
	}{
		{"the entry is another identity's publication of the card", [][]byte{leafBytes(t, "bob", pub, 9, 0, 1)},
			&ktv1.MapValue{Version: Version, CardId: bytesOf(9, HashSize), CardLogIndex: 0, LatestLogIndex: 0}},
		{"the entry is the revocation of the card the map says is current", [][]byte{leafBytes(t, "alice", ktv1.LogEventKind_LOG_EVENT_KIND_REVOCATION, 9, 0, 1)},
			&ktv1.MapValue{Version: Version, CardId: bytesOf(9, HashSize), CardLogIndex: 0, LatestLogIndex: 0}},
		{"the entry publishes another card", [][]byte{leafBytes(t, "alice", pub, 8, 0, 1)},
			&ktv1.MapValue{Version: Version, CardId: bytesOf(9, HashSize), CardLogIndex: 0, LatestLogIndex: 0}},
		{"no card, but the latest entry is a publication", [][]byte{leafBytes(t, "alice", pub, 9, 0, 1)},
			&ktv1.MapValue{Version: Version, LatestLogIndex: 0}},
		{"an entry past the checkpoint", [][]byte{leafBytes(t, "alice", pub, 9, 0, 1)},
			&ktv1.MapValue{Version: Version, CardId: bytesOf(9, HashSize), CardLogIndex: 0, LatestLogIndex: 5}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			m, cp := forged(t, tc.leaves, map[string]*ktv1.MapValue{"alice": tc.value})
			p, err := m.Prove(testApp, "alice")
			if err != nil {
				t.Fatal(err)
			}
			if _, err := VerifyLookup(cp, testApp, "alice", p); !errors.Is(err, ErrBadProof) {
				t.Fatalf("got %v, want ErrBadProof", err)
			}
		})
	}
	t.Run("the entry proved is not the one the map names", func(t *testing.T) {
		// A log that publishes alice's card twice; the map names the second entry,
		// the proof gives the first.
		leaves := [][]byte{leafBytes(t, "alice", pub, 9, 0, 1), leafBytes(t, "alice", pub, 9, 0, 1)}
		m, cp := forged(t, leaves, map[string]*ktv1.MapValue{"alice": {Version: Version, CardId: bytesOf(9, HashSize), CardLogIndex: 1, LatestLogIndex: 1}})
		p, err := m.Prove(testApp, "alice")
		if err != nil {
			t.Fatal(err)
		}
		if _, err := VerifyLookup(cp, testApp, "alice", p); err != nil {
			t.Fatalf("the proof as made: %v", err)
		}
		p.LeafIndex = 0
		inclusion, _ := InclusionProof(m.Log, 0, cp.Size)
		p.InclusionHashes = PackHashes(inclusion)
		if _, err := VerifyLookup(cp, testApp, "alice", p); !errors.Is(err, ErrBadProof) {
			t.Fatalf("got %v, want ErrBadProof", err)
		}
	})
	t.Run("the proof is labelled with another identity", func(t *testing.T) {
		m, cp := lookupScenario(t)
		p, _ := m.Prove(testApp, "alice")
		p.Identity = "bob"
		if _, err := VerifyLookup(cp, testApp, "alice", p); !errors.Is(err, ErrBadProof) {
			t.Fatalf("got %v, want ErrBadProof", err)
		}
	})
}

// TestPackedHashes: the packed form of a lookup proof's hashes splits into 32-byte
// hashes, at most as many as allowed; any other length is malformed.
func TestPackedHashes(t *testing.T) {
	hashes := [][]byte{bytesOf(1, HashSize), bytesOf(2, HashSize), bytesOf(3, HashSize)}
	packed := PackHashes(hashes)
	if len(packed) != 3*HashSize {
		t.Fatalf("%d bytes packed, want %d", len(packed), 3*HashSize)
	}
	if got, err := UnpackHashes("test", packed, 3); err != nil || len(got) != 3 || !bytes.Equal(got[2], hashes[2]) {
		t.Fatalf("unpacked %x, %v", got, err)
	}
	if got, err := UnpackHashes("test", nil, 0); err != nil || got != nil {
		t.Fatalf("nothing unpacked to %x, %v", got, err)
	}
	tests := []struct {
		name   string
		packed []byte
		max    int
	}{
		{"more hashes than allowed", packed, 2},
		{"a byte short", packed[1:], 3},
		{"a byte long", append(bytes.Clone(packed), 0), 4},
		{"one byte", []byte{0}, 1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := UnpackHashes("test", tc.packed, tc.max); !errors.Is(err, ErrMalformed) {
				t.Fatalf("got %v, want ErrMalformed", err)
			}
		})
	}
	for size, want := range map[uint64]int{0: 0, 1: 0, 2: 1, 3: 2, 4: 2, 5: 3, 1_000_000: 20, 1 << 40: 40} {
		if got := LogDepth(size); got != want {
			t.Errorf("LogDepth(%d) = %d, want %d", size, got, want)
		}
	}
}
