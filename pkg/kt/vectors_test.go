package kt

import (
	"bytes"
	"crypto/ed25519"
	"crypto/sha256"
	"fmt"
	"strings"
	"testing"
	"time"

	"golang.org/x/mod/sumdb/note"
	"google.golang.org/protobuf/proto"

	"github.com/umbra-e2ee/umbra/pkg/internal/vectortest"
	ktv1 "github.com/umbra-e2ee/umbra/proto/umbra/kt/v1"
)

// The key transparency test vectors of docs/wire-format.md section 13: a log of four
// card events of one app, its map, two signed checkpoints, the lookup proofs of three
// identities and a consistency proof. Nothing in them is random. TestVectors checks
// that they verify with only the values they state, that generating them again gives
// the same bytes, and that the document shows them. Regenerate after an intended
// change with
//
//	go test ./pkg/kt -run '^TestVectors$' -update-vectors

const vectorsFile = "testdata/vectors.json"

type vectorFile struct {
	Comment      []string           `json:"comment"`
	AppID        string             `json:"app_id"`
	MapEmptyHash vectortest.Hex     `json:"map_empty_hash"`
	MapKeys      []mapKeyVector     `json:"map_keys"`
	Entries      []entryVector      `json:"entries"`
	LogKey       logKeyVector       `json:"log_key"`
	Checkpoints  []checkpointVector `json:"checkpoints"`
	Rotation     rotationVector     `json:"log_key_rotation"`
	Consistency  []vectortest.Hex   `json:"consistency_proof"`
	Lookups      []lookupVector     `json:"lookups"`
}

type mapKeyVector struct {
	Identity string         `json:"identity"`
	Input    vectortest.Hex `json:"input"`
	Key      vectortest.Hex `json:"key"`
}

type entryVector struct {
	Index               uint64         `json:"index"`
	Identity            string         `json:"identity"`
	Kind                string         `json:"kind"`
	CardID              vectortest.Hex `json:"card_id"`
	PreviousCardID      vectortest.Hex `json:"previous_card_id,omitempty"`
	OccurredAtUnixNanos int64          `json:"occurred_at_unix_nanos"`
	Leaf                vectortest.Hex `json:"leaf"`
	LeafHash            vectortest.Hex `json:"leaf_hash"`
}

type logKeyVector struct {
	Origin string `json:"origin"`
	vectortest.Ed25519Key
	VerifierKey string `json:"verifier_key"`
}

type checkpointVector struct {
	Size    uint64         `json:"size"`
	LogRoot vectortest.Hex `json:"log_root"`
	MapRoot vectortest.Hex `json:"map_root"`
	Signed  string         `json:"signed_note"`
}

// rotationVector is the last checkpoint as a log key rotation signs it: by the log key
// and by the new key of the same origin (docs/wire-format.md 13.5).
type rotationVector struct {
	NewLogKey logKeyVector `json:"new_log_key"`
	Signed    string       `json:"signed_note"`
}

type lookupVector struct {
	Identity       string         `json:"identity"`
	MapValue       vectortest.Hex `json:"map_value,omitempty"`
	ValueHash      vectortest.Hex `json:"value_hash,omitempty"`
	MapLeafHash    vectortest.Hex `json:"map_leaf_hash,omitempty"`
	Depth          uint32         `json:"depth"`
	Bitmap         vectortest.Hex `json:"bitmap"`
	SiblingHashes  vectortest.Hex `json:"sibling_hashes"`
	OtherKey       vectortest.Hex `json:"other_key,omitempty"`
	OtherValueHash vectortest.Hex `json:"other_value_hash,omitempty"`
	LeafIndex      uint64         `json:"leaf_index"`
	Leaf           vectortest.Hex `json:"leaf,omitempty"`
	Inclusion      vectortest.Hex `json:"inclusion_hashes"`
	// The whole LookupProof as the card service sends it: its deterministic protobuf
	// encoding, the fields above.
	Encoded vectortest.Hex `json:"lookup_proof"`
}

const vectorApp = "app_vectors"

var vectorIdentities = []string{"u_aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", "u_bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb", "u_cccccccccccccccccccccccccccccccc"}

func mapKeyInput(app, identity string) []byte {
	b := []byte(mapKeyLabel)
	b = append(b, byte(len(app)>>8), byte(len(app)))
	b = append(b, app...)
	b = append(b, byte(len(identity)>>8), byte(len(identity)))
	return append(b, identity...)
}

func hexList(in [][]byte) []vectortest.Hex {
	out := make([]vectortest.Hex, len(in))
	for i, b := range in {
		out[i] = b
	}
	return out
}

func generateVectors(t *testing.T) *vectorFile {
	v := &vectorFile{
		Comment: []string{
			"Key transparency test vectors of docs/wire-format.md section 13; byte strings are hex.",
			"Four card events of app_vectors: a publishes card 11..11, b publishes 22..22, a rotates to 33..33, b revokes 22..22.",
			"Checkpoints after 2 and 4 entries, signed by the log key from seed; lookups of a, b and c at the second.",
		},
		AppID:        vectorApp,
		MapEmptyHash: EmptyMapHash[:],
	}
	for _, id := range vectorIdentities {
		k := MapKey(vectorApp, id)
		v.MapKeys = append(v.MapKeys, mapKeyVector{Identity: id, Input: mapKeyInput(vectorApp, id), Key: k[:]})
	}
	base := time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC).UnixNano()
	events := []struct {
		who            int
		kind           ktv1.LogEventKind
		card, previous byte
	}{
		{0, ktv1.LogEventKind_LOG_EVENT_KIND_PUBLICATION, 0x11, 0},
		{1, ktv1.LogEventKind_LOG_EVENT_KIND_PUBLICATION, 0x22, 0},
		{0, ktv1.LogEventKind_LOG_EVENT_KIND_ENDORSED_ROTATION, 0x33, 0x11},
		{1, ktv1.LogEventKind_LOG_EVENT_KIND_REVOCATION, 0x22, 0},
	}
	for i, e := range events {
		key := MapKey(vectorApp, vectorIdentities[e.who])
		l := &ktv1.LogLeaf{Version: Version, MapKey: key[:], Kind: e.kind, CardId: bytesOf(e.card, HashSize), OccurredAtUnixNanos: base + int64(i)*1_500_000_000}
		if e.previous != 0 {
			l.PreviousCardId = bytesOf(e.previous, HashSize)
		}
		b, err := EncodeLeaf(l)
		if err != nil {
			t.Fatal(err)
		}
		v.Entries = append(v.Entries, entryVector{Index: uint64(i), Identity: vectorIdentities[e.who], Kind: e.kind.String(), CardID: l.CardId,
			PreviousCardID: l.PreviousCardId, OccurredAtUnixNanos: l.OccurredAtUnixNanos, Leaf: b, LeafHash: LeafHash(b)})
	}
	seed := vectortest.Counting(0xc0, 32)
	signer, err := NewLogSigner("umbra.example/kt", seed)
	if err != nil {
		t.Fatal(err)
	}
	v.LogKey = logKeyVector{Origin: signer.Name(), Ed25519Key: vectortest.Ed25519Key{Seed: seed, PublicKey: vectortest.Hex(signer.PublicKey())}, VerifierKey: signer.VerifierKey()}
	m := NewMemory()
	for _, n := range []int{2, 2} {
		var leaves [][]byte
		for _, e := range v.Entries[len(m.Leaves) : len(m.Leaves)+n] {
			leaves = append(leaves, e.Leaf)
		}
		cp, signed := appendSigned(t, m, signer, leaves...)
		v.Checkpoints = append(v.Checkpoints, checkpointVector{Size: cp.Size, LogRoot: cp.LogRoot[:], MapRoot: cp.MapRoot[:], Signed: string(signed)})
	}
	newSeed := vectortest.Counting(0xe0, 32)
	next, err := NewLogSigner(signer.Name(), newSeed)
	if err != nil {
		t.Fatal(err)
	}
	lastText, _, _ := strings.Cut(v.Checkpoints[1].Signed, "\n\n")
	last, err := ParseCheckpoint(lastText + "\n")
	if err != nil {
		t.Fatal(err)
	}
	both, err := SignCheckpoint(last, signer, next)
	if err != nil {
		t.Fatal(err)
	}
	v.Rotation = rotationVector{NewLogKey: logKeyVector{Origin: next.Name(), Ed25519Key: vectortest.Ed25519Key{Seed: newSeed, PublicKey: vectortest.Hex(next.PublicKey())}, VerifierKey: next.VerifierKey()}, Signed: string(both)}
	consistency, err := ConsistencyProof(m.Log, 2, 4)
	if err != nil {
		t.Fatal(err)
	}
	v.Consistency = hexList(consistency)
	for _, id := range vectorIdentities {
		p, err := m.Prove(vectorApp, id)
		if err != nil {
			t.Fatal(err)
		}
		encoded, err := proto.MarshalOptions{Deterministic: true}.Marshal(p)
		if err != nil {
			t.Fatal(err)
		}
		l := lookupVector{Identity: id, MapValue: p.MapValue, Depth: p.MapProof.Depth, Bitmap: p.MapProof.Bitmap, SiblingHashes: p.MapProof.SiblingHashes,
			OtherKey: p.MapProof.OtherKey, OtherValueHash: p.MapProof.OtherValueHash, LeafIndex: p.LeafIndex, Leaf: p.Leaf, Inclusion: p.InclusionHashes, Encoded: encoded}
		if len(p.MapValue) > 0 {
			vh := ValueHash(p.MapValue)
			lh := MapLeafHash(MapKey(vectorApp, id), vh)
			l.ValueHash, l.MapLeafHash = vh[:], lh[:]
		}
		v.Lookups = append(v.Lookups, l)
	}
	return v
}

func toBytes(in []vectortest.Hex) [][]byte {
	out := make([][]byte, len(in))
	for i, b := range in {
		out[i] = b
	}
	return out
}

// verifyVectors checks the vectors with only what they state, as an implementation in
// another language would: the map keys from their inputs, the leaf hashes, the log
// roots by RFC 9162's definition, the map roots by the map's definition from the values
// the entries lead to, the checkpoints' text and signatures, the lookups and the
// consistency proof.
func verifyVectors(t *testing.T, v *vectorFile) {
	if h := sha256.Sum256([]byte{2}); !bytes.Equal(h[:], v.MapEmptyHash) {
		t.Errorf("map_empty_hash is not SHA-256(0x02)")
	}
	keys := map[string][HashSize]byte{}
	for _, k := range v.MapKeys {
		if h := sha256.Sum256(k.Input); !bytes.Equal(h[:], k.Key) || !bytes.Equal(k.Input, mapKeyInput(v.AppID, k.Identity)) {
			t.Errorf("map key of %s", k.Identity)
		}
		keys[k.Identity] = [HashSize]byte(k.Key)
	}
	var leaves [][]byte
	values := map[[HashSize]byte]*ktv1.MapValue{}
	valueHashes := map[[HashSize]byte][HashSize]byte{}
	for _, e := range v.Entries {
		if h := sha256.Sum256(append([]byte{0}, e.Leaf...)); !bytes.Equal(h[:], e.LeafHash) {
			t.Errorf("entry %d: leaf hash", e.Index)
		}
		l, err := ParseLeaf(e.Leaf)
		if err != nil {
			t.Fatalf("entry %d: %v", e.Index, err)
		}
		key := keys[e.Identity]
		if !bytes.Equal(l.MapKey, key[:]) || l.Kind.String() != e.Kind || !bytes.Equal(l.CardId, e.CardID) || !bytes.Equal(l.PreviousCardId, e.PreviousCardID) || l.OccurredAtUnixNanos != e.OccurredAtUnixNanos {
			t.Errorf("entry %d: the leaf's fields are not those stated", e.Index)
		}
		leaves = append(leaves, e.Leaf)
		values[key] = NextMapValue(values[key], l, e.Index)
		b, _ := EncodeMapValue(values[key])
		valueHashes[key] = sha256.Sum256(b)
		for _, c := range v.Checkpoints {
			if c.Size != uint64(len(leaves)) {
				continue
			}
			if !bytes.Equal(referenceLogRoot(leaves), c.LogRoot) {
				t.Errorf("checkpoint %d: log root", c.Size)
			}
			if r := referenceMapRoot(valueHashes, 0); !bytes.Equal(r[:], c.MapRoot) {
				t.Errorf("checkpoint %d: map root", c.Size)
			}
		}
	}
	if !v.LogKey.Agrees() {
		t.Error("log key: seed and public key do not agree")
	}
	if vkey, _ := note.NewEd25519VerifierKey(v.LogKey.Origin, ed25519.PublicKey(v.LogKey.PublicKey)); vkey != v.LogKey.VerifierKey {
		t.Error("log key: verifier key")
	}
	var cps []*Checkpoint
	for _, c := range v.Checkpoints {
		cp, err := OpenCheckpoint([]byte(c.Signed), v.LogKey.VerifierKey)
		if err != nil {
			t.Fatalf("checkpoint %d: %v", c.Size, err)
		}
		if cp.Origin != v.LogKey.Origin || cp.Size != c.Size || !bytes.Equal(cp.LogRoot[:], c.LogRoot) || !bytes.Equal(cp.MapRoot[:], c.MapRoot) {
			t.Errorf("checkpoint %d: the signed note says other values", c.Size)
		}
		cps = append(cps, cp)
	}
	r := v.Rotation.NewLogKey
	if !r.Agrees() {
		t.Error("new log key: seed and public key do not agree")
	}
	if vkey, _ := note.NewEd25519VerifierKey(r.Origin, ed25519.PublicKey(r.PublicKey)); vkey != r.VerifierKey || r.Origin != v.LogKey.Origin || vkey == v.LogKey.VerifierKey {
		t.Error("new log key: verifier key, or not a new key of the same origin")
	}
	if n := strings.Count(v.Rotation.Signed, "\u2014 "+r.Origin+" "); n != 2 {
		t.Errorf("the checkpoint during the rotation has %d signature lines of the origin, want 2", n)
	}
	for _, k := range []string{v.LogKey.VerifierKey, r.VerifierKey} {
		if cp, err := OpenCheckpoint([]byte(v.Rotation.Signed), k); err != nil || *cp != *cps[1] {
			t.Errorf("the checkpoint during the rotation, with %s alone: %+v, %v; want the last checkpoint", k, cp, err)
		}
	}
	if err := VerifyConsistency(cps[0], cps[1], toBytes(v.Consistency)); err != nil {
		t.Errorf("consistency: %v", err)
	}
	for _, l := range v.Lookups {
		p := &ktv1.LookupProof{Identity: l.Identity, MapValue: l.MapValue, LeafIndex: l.LeafIndex, Leaf: l.Leaf, InclusionHashes: l.Inclusion,
			MapProof: &ktv1.MapProof{Depth: l.Depth, Bitmap: l.Bitmap, SiblingHashes: l.SiblingHashes, OtherKey: l.OtherKey, OtherValueHash: l.OtherValueHash}}
		if encoded, err := (proto.MarshalOptions{Deterministic: true}).Marshal(p); err != nil || !bytes.Equal(encoded, l.Encoded) {
			t.Errorf("lookup %s: the fields encode to %x, the vector's LookupProof is %x (%v)", l.Identity, encoded, []byte(l.Encoded), err)
		}
		decoded := &ktv1.LookupProof{}
		if err := proto.Unmarshal(l.Encoded, decoded); err != nil || !proto.Equal(decoded, p) {
			t.Errorf("lookup %s: the vector's LookupProof does not decode to its fields (%v)", l.Identity, err)
		}
		got, err := VerifyLookup(cps[1], v.AppID, l.Identity, decoded)
		if err != nil {
			t.Errorf("lookup %s: %v", l.Identity, err)
			continue
		}
		if len(l.MapValue) > 0 {
			vh := sha256.Sum256(l.MapValue)
			if !bytes.Equal(vh[:], l.ValueHash) || vh != valueHashes[keys[l.Identity]] {
				t.Errorf("lookup %s: value hash", l.Identity)
			}
			key := keys[l.Identity]
			in := append([]byte{0}, key[:]...)
			if lh := sha256.Sum256(append(in, vh[:]...)); !bytes.Equal(lh[:], l.MapLeafHash) {
				t.Errorf("lookup %s: map leaf hash", l.Identity)
			}
		} else if got.Value != nil {
			t.Errorf("lookup %s: absent, but verified as present", l.Identity)
		}
	}
}

func TestVectors(t *testing.T) {
	vectortest.Check(t, vectortest.Set[vectorFile]{
		File:     vectorsFile,
		Section:  "KT TEST VECTORS",
		Generate: generateVectors,
		Verify:   verifyVectors,
		Render:   renderVectors,
		Changed:  "the key transparency format changed",
	})
}

func renderVectors(v *vectorFile) string {
	var w vectortest.Doc
	fmt.Fprintf(&w, "\nThe same values are in `pkg/kt/testdata/vectors.json`. App id: `%s`.\n\n", v.AppID)
	w.WriteString("#### Map keys\n\n```\n")
	w.Field("empty subtree hash, SHA-256(0x02)", v.MapEmptyHash)
	for _, k := range v.MapKeys {
		fmt.Fprintf(&w, "identity: %s\n", k.Identity)
		w.Field("input", k.Input)
		w.Field("map key", k.Key)
	}
	w.WriteString("```\n\n#### Log entries\n\n```\n")
	for _, e := range v.Entries {
		fmt.Fprintf(&w, "entry %d: %s, identity %s, occurred_at_unix_nanos %d\n", e.Index, e.Kind, e.Identity, e.OccurredAtUnixNanos)
		w.Field("LogLeaf", e.Leaf)
		w.Field("leaf hash", e.LeafHash)
	}
	w.WriteString("```\n\n#### Log key and checkpoints\n\n```\n")
	fmt.Fprintf(&w, "origin: %s\n", v.LogKey.Origin)
	w.Field("log key seed", v.LogKey.Seed)
	w.Field("log key public key", v.LogKey.PublicKey)
	fmt.Fprintf(&w, "verifier key: %s\n", v.LogKey.VerifierKey)
	w.WriteString("```\n")
	for _, c := range v.Checkpoints {
		fmt.Fprintf(&w, "\nCheckpoint after %d entries (log root %x, map root %x), signed:\n\n```\n%s```\n", c.Size, []byte(c.LogRoot), []byte(c.MapRoot), c.Signed)
	}
	w.WriteString("\nThe same checkpoint during a log key rotation, signed by the log key and by a new key\nof the same origin; it verifies with either verifier key alone:\n\n```\n")
	w.Field("new log key seed", v.Rotation.NewLogKey.Seed)
	w.Field("new log key public key", v.Rotation.NewLogKey.PublicKey)
	fmt.Fprintf(&w, "new verifier key: %s\n```\n\n```\n%s```\n", v.Rotation.NewLogKey.VerifierKey, v.Rotation.Signed)
	w.WriteString("\n```\n")
	fmt.Fprintf(&w, "consistency proof from %d to %d entries (%d hashes):\n", v.Checkpoints[0].Size, v.Checkpoints[1].Size, len(v.Consistency))
	for _, h := range v.Consistency {
		w.Hex("  ", h)
	}
	w.WriteString("```\n\n#### Lookups at the checkpoint of 4 entries\n")
	for _, l := range v.Lookups {
		fmt.Fprintf(&w, "\n```\nidentity: %s\n", l.Identity)
		if len(l.MapValue) == 0 {
			w.WriteString("map value: none (absent)\n")
		} else {
			w.Field("map value (MapValue)", l.MapValue)
			w.Field("value hash", l.ValueHash)
			w.Field("map leaf hash", l.MapLeafHash)
		}
		fmt.Fprintf(&w, "depth: %d\nbitmap: %x\nsibling_hashes (%d × 32 bytes, concatenated; one a line here):\n", l.Depth, []byte(l.Bitmap), len(l.SiblingHashes)/HashSize)
		w.Hex("  ", l.SiblingHashes)
		if len(l.OtherKey) > 0 {
			w.Field("other_key", l.OtherKey)
			w.Field("other_value_hash", l.OtherValueHash)
		}
		if len(l.MapValue) > 0 {
			fmt.Fprintf(&w, "leaf_index: %d\ninclusion_hashes (%d × 32 bytes, concatenated; one a line here):\n", l.LeafIndex, len(l.Inclusion)/HashSize)
			w.Hex("  ", l.Inclusion)
		}
		w.Field("LookupProof (deterministic protobuf)", l.Encoded)
		w.WriteString("```\n")
	}
	w.WriteString("\n")
	return w.String()
}
