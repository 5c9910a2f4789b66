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
	cp, err := m.Append("test", leafBytes(t, "alice", ktv1.LogEventKind_LOG_EVENT_KIND_PUBLICATION, 1, 0, 1),
		leafBytes(t, "bob", ktv1.LogEventKind_LOG_EVENT_KIND_PUBLICATION, 3, 0, 2))
	if err != nil {
		t.Fatal(err)
	}
	cp, err = m.Append("test", leafBytes(t, "alice", ktv1.LogEventKind_LOG_EVENT_KIND_ENDORSED_ROTATION, 2, 1, 3),
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
		{"a present identity said absent", "alice", alice, func(p *ktv1.LookupProof) { p.MapValue, p.Leaf, p.InclusionProof, p.LeafIndex = nil, nil, nil, 0 }, ErrBadProof},
		{"a revoked identity said absent", "bob", bob, func(p *ktv1.LookupProof) { p.MapValue, p.Leaf, p.InclusionProof, p.LeafIndex = nil, nil, nil, 0 }, ErrBadProof},
		{"an absent identity said present with another's entry", "carol", alice, nil, ErrBadProof},
		{"another identity's proof", "carol", func() *ktv1.LookupProof { p := proto.CloneOf(alice); p.Identity = "carol"; return p }(), nil, ErrBadProof},
		{"the proof names another identity", "alice", bob, nil, ErrBadProof},
		{"the log entry of another identity", "alice", alice, func(p *ktv1.LookupProof) { p.Leaf = m.Leaves[1] }, ErrBadProof},
		{"the log entry of the replaced card", "alice", alice, func(p *ktv1.LookupProof) { p.Leaf, p.LeafIndex = m.Leaves[0], 0 }, ErrBadProof},
		{"a log entry not in the log", "alice", alice, func(p *ktv1.LookupProof) {
			p.Leaf = leafBytes(t, "alice", ktv1.LogEventKind_LOG_EVENT_KIND_ENDORSED_ROTATION, 2, 1, 99)
		}, ErrBadProof},
		{"an inclusion proof hash changed", "alice", alice, func(p *ktv1.LookupProof) { p.InclusionProof[0] = bytes.Repeat([]byte{9}, HashSize) }, ErrBadProof},
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
