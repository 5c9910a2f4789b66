package e2ee

import (
	"bytes"
	"crypto/ed25519"
	"errors"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/encoding/protowire"

	envelopev1 "github.com/umbra-e2ee/umbra/proto/umbra/envelope/v1"
)

var (
	alice = "u_" + strings.Repeat("a", 32)
	bob   = "u_" + strings.Repeat("b", 32)
	when  = time.Date(2026, 11, 1, 12, 0, 0, 0, time.UTC)
)

func testKeyPair(t testing.TB, suite Suite, b byte) *KeyPair {
	t.Helper()
	kp, err := DeriveKeyPair(suite, bytes.Repeat([]byte{b}, 64))
	if err != nil {
		t.Fatal(err)
	}
	return kp
}

func TestCardRoundTrip(t *testing.T) {
	t.Parallel()
	for _, suite := range []Suite{SuiteHybrid, SuiteX25519} {
		t.Run(suite.String(), func(t *testing.T) {
			kp := testKeyPair(t, suite, 1)
			content, sig, err := NewCard(kp, alice, when, nil)
			if err != nil {
				t.Fatal(err)
			}
			c, err := ParseCard(content, sig)
			if err != nil {
				t.Fatal(err)
			}
			if c.Identity != alice || c.Suite != suite || !c.CreatedAt.Equal(when) || !bytes.Equal(c.ID, CardID(content)) {
				t.Errorf("parsed card = %+v", c)
			}
			if !bytes.Equal(c.KEMPublicKey.Bytes(), kp.KEMPublicKey()) || !c.SigningKey.Equal(kp.SigningPublicKey()) {
				t.Error("parsed keys differ from the key pair's")
			}
		})
	}
}

func TestParseCardRefusesMalformedCards(t *testing.T) {
	t.Parallel()
	kp := testKeyPair(t, SuiteX25519, 1)
	other := testKeyPair(t, SuiteX25519, 2)
	good, goodSig, err := NewCard(kp, alice, when, nil)
	if err != nil {
		t.Fatal(err)
	}
	// sign re-signs edited content with kp, so each case breaks one rule only.
	sign := func(c *envelopev1.CardContent) ([]byte, []byte) {
		b, err := Marshal(c)
		if err != nil {
			t.Fatal(err)
		}
		return b, ed25519.Sign(kp.Signing, Labelled(LabelCardSelfSignature, b))
	}
	base := func() *envelopev1.CardContent {
		return &envelopev1.CardContent{Version: 1, Identity: alice, SigningPublicKey: kp.SigningPublicKey(), Suite: SuiteX25519, KemPublicKey: kp.KEMPublicKey(), CreatedAtUnixSeconds: when.Unix()}
	}
	edit := func(f func(*envelopev1.CardContent)) func() ([]byte, []byte) {
		return func() ([]byte, []byte) {
			c := base()
			f(c)
			return sign(c)
		}
	}
	withUnknownField := func() ([]byte, []byte) {
		b := protowire.AppendTag(bytes.Clone(good), 99, protowire.VarintType)
		b = protowire.AppendVarint(b, 1)
		return b, ed25519.Sign(kp.Signing, Labelled(LabelCardSelfSignature, b))
	}
	nonCanonical := func() ([]byte, []byte) {
		// The version field written twice: valid protobuf, but not the canonical bytes.
		b := protowire.AppendVarint(protowire.AppendTag(nil, 1, protowire.VarintType), 1)
		b = append(b, good...)
		return b, ed25519.Sign(kp.Signing, Labelled(LabelCardSelfSignature, b))
	}
	cases := []struct {
		name string
		make func() ([]byte, []byte)
		kind error
	}{
		{"signed by another key", func() ([]byte, []byte) {
			return good, ed25519.Sign(other.Signing, Labelled(LabelCardSelfSignature, good))
		}, ErrBadSignature},
		{"signature without the label", func() ([]byte, []byte) { return good, ed25519.Sign(kp.Signing, good) }, ErrBadSignature},
		{"short signature", func() ([]byte, []byte) { return good, goodSig[:10] }, ErrMalformed},
		{"truncated", func() ([]byte, []byte) { return good[:len(good)-5], goodSig }, ErrMalformed},
		{"empty", func() ([]byte, []byte) { return nil, goodSig }, ErrMalformed},
		{"oversized", func() ([]byte, []byte) { return make([]byte, MaxCardContentSize+1), goodSig }, ErrTooLarge},
		{"unknown field", withUnknownField, ErrMalformed},
		{"non-canonical encoding", nonCanonical, ErrMalformed},
		{"version 2", edit(func(c *envelopev1.CardContent) { c.Version = 2 }), ErrMalformed},
		{"raw user id", edit(func(c *envelopev1.CardContent) { c.Identity = "alice" }), ErrMalformed},
		{"unknown suite", edit(func(c *envelopev1.CardContent) { c.Suite = 7 }), ErrUnknownSuite},
		{"unspecified suite", edit(func(c *envelopev1.CardContent) { c.Suite = 0 }), ErrUnknownSuite},
		{"KEM key of the other suite", edit(func(c *envelopev1.CardContent) { c.Suite = SuiteHybrid }), ErrMalformed},
		{"short signing key", edit(func(c *envelopev1.CardContent) { c.SigningPublicKey = c.SigningPublicKey[:31] }), ErrMalformed},
		{"no creation time", edit(func(c *envelopev1.CardContent) { c.CreatedAtUnixSeconds = 0 }), ErrMalformed},
		{"short previous id", edit(func(c *envelopev1.CardContent) { c.PreviousCardId = []byte{1, 2} }), ErrMalformed},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			content, sig := tc.make()
			_, err := ParseCard(content, sig)
			if !errors.Is(err, tc.kind) {
				t.Fatalf("ParseCard = %v; want %v", err, tc.kind)
			}
		})
	}
}

func TestEndorsement(t *testing.T) {
	t.Parallel()
	oldKP, newKP := testKeyPair(t, SuiteX25519, 1), testKeyPair(t, SuiteHybrid, 2)
	oldContent, oldSig, _ := NewCard(oldKP, alice, when, nil)
	oldCard, err := ParseCard(oldContent, oldSig)
	if err != nil {
		t.Fatal(err)
	}
	newContent, newSig, _ := NewCard(newKP, alice, when.Add(time.Hour), oldCard.ID)
	newCard, err := ParseCard(newContent, newSig)
	if err != nil {
		t.Fatal(err)
	}
	e, esig, err := Endorse(oldKP, newCard)
	if err != nil {
		t.Fatal(err)
	}
	if err := VerifyEndorsement(oldCard, newCard, e, esig); err != nil {
		t.Fatalf("honest endorsement: %v", err)
	}
	forged, fsig, _ := Endorse(newKP, newCard) // signed by the new key, not the old one
	if err := VerifyEndorsement(oldCard, newCard, forged, fsig); !errors.Is(err, ErrBadSignature) {
		t.Errorf("endorsement by the wrong key: %v", err)
	}
	bobContent, bobSig, _ := NewCard(testKeyPair(t, SuiteX25519, 3), bob, when, nil)
	bobCard, _ := ParseCard(bobContent, bobSig)
	if err := VerifyEndorsement(bobCard, newCard, e, esig); !errors.Is(err, ErrMalformed) {
		t.Errorf("endorsement checked against another identity's card: %v", err)
	}
	if _, _, err := Endorse(oldKP, oldCard); !errors.Is(err, ErrMalformed) {
		t.Errorf("endorsing a first card: %v", err)
	}
}

func TestServiceSignature(t *testing.T) {
	t.Parallel()
	_, key, _ := ed25519.GenerateKey(nil)
	id := CardID([]byte("content"))
	sig := ServiceSign(key, id)
	pub := key.Public().(ed25519.PublicKey)
	if err := VerifyServiceSignature(pub, id, sig); err != nil {
		t.Fatal(err)
	}
	if err := VerifyServiceSignature(pub, CardID([]byte("other")), sig); !errors.Is(err, ErrBadSignature) {
		t.Errorf("signature over another id: %v", err)
	}
}
