package e2ee

import (
	"bytes"
	"crypto/ed25519"
	"crypto/sha512"
	"encoding/binary"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/umbra-e2ee/umbra/pkg/internal/vectortest"
)

// The trust test vectors of docs/wire-format.md (5.5 safety numbers, 5.6 service key
// rotations). They use the key pairs, cards and card service key of
// testdata/vectors.json and a second service key from a fixed seed; nothing in them
// is random. TestTrustVectors checks them as TestVectors checks the others. Regenerate
// after an intended change with
//
//	go test ./pkg/e2ee -run '^TestTrustVectors$' -update-vectors

const trustVectorsFile = "testdata/trust_vectors.json"

type trustVectorFile struct {
	Comment            []string                 `json:"comment"`
	SafetyNumbers      []safetyNumberVector     `json:"safety_numbers"`
	ServiceKeyRotation serviceKeyRotationVector `json:"service_key_rotation"`
}

type safetyNumberVector struct {
	CardA  string         `json:"card_a"`
	CardB  string         `json:"card_b"`
	InputA vectortest.Hex `json:"first_hash_input_a"`
	InputB vectortest.Hex `json:"first_hash_input_b"`
	HalfA  string         `json:"half_a"`
	HalfB  string         `json:"half_b"`
	Number string         `json:"safety_number"`
}

type serviceKeyRotationVector struct {
	PreviousKeyID        string         `json:"previous_key_id"`
	PreviousPublicKey    vectortest.Hex `json:"previous_public_key"`
	NewKeyID             string         `json:"new_key_id"`
	NewSeed              vectortest.Hex `json:"new_seed"`
	NewPublicKey         vectortest.Hex `json:"new_public_key"`
	CreatedAtUnixSeconds int64          `json:"created_at_unix_seconds"`
	Content              vectortest.Hex `json:"content"`
	SignatureInput       vectortest.Hex `json:"signature_input"`
	Signature            vectortest.Hex `json:"signature"`
}

var trustSafetyPairs = [][2]string{{"alice-1", "bob"}, {"alice-2", "bob"}, {"bob", "carol"}}

func safetyFirstInput(identity string, key []byte) []byte {
	return Labelled(LabelSafetyNumber, u16(SafetyNumberVersion), str(identity), key)
}

func generateTrustVectors(t *testing.T) *trustVectorFile {
	_, cards := loadVectorKeys(t)
	base := vectortest.Load[vectorFile](t, vectorsFile)
	v := &trustVectorFile{Comment: []string{
		"Trust test vectors of docs/wire-format.md (5.5, 5.6): all byte strings are hex.",
		"Cards and the previous service key are those of vectors.json; the new service key is Ed25519 from new_seed.",
	}}
	for _, p := range trustSafetyPairs {
		a, b := cards[p[0]], cards[p[1]]
		ha, err := SafetyNumberHalf(a.Identity, a.SigningKey)
		if err != nil {
			t.Fatal(err)
		}
		hb, err := SafetyNumberHalf(b.Identity, b.SigningKey)
		if err != nil {
			t.Fatal(err)
		}
		n, err := SafetyNumber(a.Identity, a.SigningKey, b.Identity, b.SigningKey)
		if err != nil {
			t.Fatal(err)
		}
		v.SafetyNumbers = append(v.SafetyNumbers, safetyNumberVector{
			CardA: p[0], CardB: p[1],
			InputA: safetyFirstInput(a.Identity, a.SigningKey), InputB: safetyFirstInput(b.Identity, b.SigningKey),
			HalfA: ha, HalfB: hb, Number: n,
		})
	}
	previous := ed25519.NewKeyFromSeed(base.ServiceKey.Seed)
	next := ed25519.NewKeyFromSeed(vectortest.Counting(0xa0, ed25519.SeedSize))
	created := time.Date(2026, 11, 2, 12, 0, 0, 0, time.UTC)
	r := serviceKeyRotationVector{
		PreviousKeyID: "service-key-1", PreviousPublicKey: vectortest.Hex(previous.Public().(ed25519.PublicKey)),
		NewKeyID: "service-key-2", NewSeed: next.Seed(), NewPublicKey: vectortest.Hex(next.Public().(ed25519.PublicKey)),
		CreatedAtUnixSeconds: created.Unix(),
	}
	var err error
	r.Content, r.Signature, err = SignServiceKeyRotation(previous, r.PreviousKeyID, r.NewKeyID, ed25519.PublicKey(r.NewPublicKey), created)
	if err != nil {
		t.Fatal(err)
	}
	r.SignatureInput = Labelled(LabelCardServiceKeyRotation, r.Content)
	v.ServiceKeyRotation = r
	return v
}

func TestTrustVectors(t *testing.T) {
	vectortest.Check(t, vectortest.Set[trustVectorFile]{
		File:     trustVectorsFile,
		Section:  "TRUST TEST VECTORS",
		Generate: generateTrustVectors,
		Verify:   verifyTrustVectors,
		Render:   renderTrustVectors,
		Changed:  "the safety number or service key rotation format changed",
	})
}

// verifyTrustVectors checks the vectors with only what they state and the cards of
// vectors.json, deriving the safety numbers with their own code from the document's
// steps rather than with SafetyNumber alone.
func verifyTrustVectors(t *testing.T, v *trustVectorFile) {
	_, cards := loadVectorKeys(t)
	half := func(input, key []byte) string {
		h := sha512.Sum512(input)
		for range SafetyNumberIterations {
			h = sha512.Sum512(append(h[:], key...))
		}
		var s strings.Builder
		for i := range 6 {
			n := uint64(0)
			for _, c := range h[i*5 : i*5+5] {
				n = n<<8 | uint64(c)
			}
			fmt.Fprintf(&s, "%05d", n%100000)
		}
		return s.String()
	}
	for _, sv := range v.SafetyNumbers {
		a, b := cards[sv.CardA], cards[sv.CardB]
		wantA := append(append(append([]byte(LabelSafetyNumber+"\x00"), 0, 1), byte(len(a.Identity)>>8), byte(len(a.Identity))), a.Identity...)
		wantA = append(wantA, a.SigningKey...)
		if !bytes.Equal(sv.InputA, wantA) || !bytes.Equal(sv.InputB, safetyFirstInput(b.Identity, b.SigningKey)) {
			t.Errorf("%s/%s: the first hash input is not LABEL || u16(1) || str(identity) || key", sv.CardA, sv.CardB)
		}
		if got := half(sv.InputA, a.SigningKey); got != sv.HalfA {
			t.Errorf("%s: half %s; the vector says %s", sv.CardA, got, sv.HalfA)
		}
		if got := half(sv.InputB, b.SigningKey); got != sv.HalfB {
			t.Errorf("%s: half %s; the vector says %s", sv.CardB, got, sv.HalfB)
		}
		lo, hi := min(sv.HalfA, sv.HalfB), max(sv.HalfA, sv.HalfB)
		if strings.ReplaceAll(sv.Number, " ", "") != lo+hi || len(strings.Fields(sv.Number)) != 12 {
			t.Errorf("%s/%s: safety number %q is not the halves in ascending order, in 12 groups of 5", sv.CardA, sv.CardB, sv.Number)
		}
		for _, order := range [][2]*Card{{a, b}, {b, a}} {
			got, err := SafetyNumber(order[0].Identity, order[0].SigningKey, order[1].Identity, order[1].SigningKey)
			if err != nil || got != sv.Number {
				t.Errorf("SafetyNumber(%s, %s) = %q, %v; want %q from either side", order[0].Identity, order[1].Identity, got, err, sv.Number)
			}
		}
	}
	r := v.ServiceKeyRotation
	if !(vectortest.Ed25519Key{Seed: r.NewSeed, PublicKey: r.NewPublicKey}).Agrees() {
		t.Error("the new service key is not the key of its seed")
	}
	if !bytes.Equal(r.SignatureInput, append([]byte(LabelCardServiceKeyRotation+"\x00"), r.Content...)) || !ed25519.Verify(ed25519.PublicKey(r.PreviousPublicKey), r.SignatureInput, r.Signature) {
		t.Error("the rotation signature is not Ed25519 by the previous key over LABEL || content")
	}
	got, err := VerifyServiceKeyRotation(r.PreviousKeyID, ed25519.PublicKey(r.PreviousPublicKey), r.Content, r.Signature)
	if err != nil {
		t.Fatal(err)
	}
	if got.NewKeyID != r.NewKeyID || !bytes.Equal(got.NewPublicKey, r.NewPublicKey) || got.CreatedAt.Unix() != r.CreatedAtUnixSeconds || got.PreviousKeyID != r.PreviousKeyID {
		t.Errorf("the rotation content says %+v; the vector says otherwise", got)
	}
	// The content field by field, as section 2 encodes it.
	want := []byte{0x08, 0x01, 0x12, byte(len(r.PreviousKeyID))}
	want = append(append(want, r.PreviousKeyID...), 0x1a, byte(len(r.NewKeyID)))
	want = append(append(want, r.NewKeyID...), 0x22, 32)
	want = append(append(want, r.NewPublicKey...), 0x28)
	want = binary.AppendUvarint(want, uint64(r.CreatedAtUnixSeconds))
	if !bytes.Equal(r.Content, want) {
		t.Errorf("rotation content %x; its fields encode as %x", r.Content, want)
	}
}

func renderTrustVectors(v *trustVectorFile) string {
	var b vectortest.Doc
	b.WriteString("\nThe same values are in `pkg/e2ee/testdata/trust_vectors.json`; the cards are those of section 9.\n")
	for _, s := range v.SafetyNumbers {
		b.Block(fmt.Sprintf("Safety number of cards %s and %s", s.CardA, s.CardB), func() {
			b.Field(fmt.Sprintf("first hash input, %s", s.CardA), s.InputA)
			fmt.Fprintf(&b, "half, %s: %s\n", s.CardA, s.HalfA)
			b.Field(fmt.Sprintf("first hash input, %s", s.CardB), s.InputB)
			fmt.Fprintf(&b, "half, %s: %s\n", s.CardB, s.HalfB)
			fmt.Fprintf(&b, "safety number: %s\n", s.Number)
		})
	}
	r := v.ServiceKeyRotation
	b.Block("Service key rotation: from the card service key of section 9 to a new key", func() {
		fmt.Fprintf(&b, "previous_key_id: %s\n", r.PreviousKeyID)
		b.Field("previous public key", r.PreviousPublicKey)
		fmt.Fprintf(&b, "new_key_id: %s\n", r.NewKeyID)
		b.Field("new key seed", r.NewSeed)
		b.Field("new_public_key", r.NewPublicKey)
		fmt.Fprintf(&b, "created_at_unix_seconds: %d\n", r.CreatedAtUnixSeconds)
		b.Field("content (ServiceKeyRotationContent)", r.Content)
		b.Field("signature input", r.SignatureInput)
		b.Field("signature", r.Signature)
	})
	b.WriteString("\n")
	return b.String()
}
