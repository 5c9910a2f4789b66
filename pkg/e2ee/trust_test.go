package e2ee

import (
	"crypto/ed25519"
	"errors"
	"strings"
	"testing"
	"time"
)

func TestSafetyNumber(t *testing.T) {
	t.Parallel()
	a, b := testKeyPair(t, SuiteX25519, 1), testKeyPair(t, SuiteX25519, 2)
	ab, err := SafetyNumber(alice, a.SigningPublicKey(), bob, b.SigningPublicKey())
	if err != nil {
		t.Fatal(err)
	}
	ba, err := SafetyNumber(bob, b.SigningPublicKey(), alice, a.SigningPublicKey())
	if err != nil {
		t.Fatal(err)
	}
	if ab != ba || len(strings.Fields(ab)) != 12 || len(ab) != 60+11 {
		t.Errorf("safety numbers %q and %q: want the same 12 groups of 5 digits from both sides", ab, ba)
	}
	c := testKeyPair(t, SuiteX25519, 3)
	if other, _ := SafetyNumber(alice, a.SigningPublicKey(), bob, c.SigningPublicKey()); other == ab {
		t.Error("another key of bob gives the same safety number")
	}
	if other, _ := SafetyNumber(alice, a.SigningPublicKey(), "u_cccccccccccccccccccccccccccccccc", b.SigningPublicKey()); other == ab {
		t.Error("the same key under another identity gives the same safety number")
	}
	for _, tc := range []struct {
		name       string
		idA, idB   string
		keyA, keyB ed25519.PublicKey
	}{
		{"same identity twice", alice, alice, a.SigningPublicKey(), b.SigningPublicKey()},
		{"short key", alice, bob, a.SigningPublicKey()[:31], b.SigningPublicKey()},
		{"small-order key", alice, bob, a.SigningPublicKey(), make(ed25519.PublicKey, 32)},
		{"no identity", "", bob, a.SigningPublicKey(), b.SigningPublicKey()},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := SafetyNumber(tc.idA, tc.keyA, tc.idB, tc.keyB); !errors.Is(err, ErrMalformed) {
				t.Errorf("got %v; want ErrMalformed", err)
			}
		})
	}
}

func TestServiceKeyRotation(t *testing.T) {
	t.Parallel()
	prevPub, prev, _ := ed25519.GenerateKey(nil)
	nextPub, _, _ := ed25519.GenerateKey(nil)
	otherPub, other, _ := ed25519.GenerateKey(nil)
	at := time.Unix(1793534400, 0).UTC()
	content, sig, err := SignServiceKeyRotation(prev, "k1", "k2", nextPub, at)
	if err != nil {
		t.Fatal(err)
	}
	r, err := VerifyServiceKeyRotation("k1", prevPub, content, sig)
	if err != nil {
		t.Fatal(err)
	}
	if r.NewKeyID != "k2" || !nextPub.Equal(r.NewPublicKey) || !r.CreatedAt.Equal(at) {
		t.Errorf("verified rotation %+v; want k2, its key and its time", r)
	}
	forged, forgedSig, err := SignServiceKeyRotation(other, "k1", "k2", otherPub, at)
	if err != nil {
		t.Fatal(err)
	}
	flipped := append([]byte(nil), sig...)
	flipped[0] ^= 1
	for _, tc := range []struct {
		name     string
		id       string
		key      ed25519.PublicKey
		content  []byte
		sig      []byte
		wantKind error
	}{
		{"signed by another key", "k1", prevPub, forged, forgedSig, ErrBadSignature},
		{"signature altered", "k1", prevPub, content, flipped, ErrBadSignature},
		{"names another previous key", "k0", prevPub, content, sig, ErrMalformed},
		{"short signature", "k1", prevPub, content, sig[:63], ErrMalformed},
		{"truncated content", "k1", prevPub, content[:len(content)-1], sig, ErrMalformed},
		{"trailing byte", "k1", prevPub, append(append([]byte(nil), content...), 0), sig, ErrMalformed},
		{"too large", "k1", prevPub, make([]byte, MaxServiceKeyRotationSize+1), sig, ErrTooLarge},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := VerifyServiceKeyRotation(tc.id, tc.key, tc.content, tc.sig); !errors.Is(err, tc.wantKind) {
				t.Errorf("got %v; want %v", err, tc.wantKind)
			}
		})
	}
	if _, _, err := SignServiceKeyRotation(prev, "k1", "k1", nextPub, at); !errors.Is(err, ErrMalformed) {
		t.Errorf("a rotation to the same key id: %v; want ErrMalformed", err)
	}
	if _, _, err := SignServiceKeyRotation(prev, "k1", "k2", make(ed25519.PublicKey, 32), at); !errors.Is(err, ErrMalformed) {
		t.Errorf("a rotation to a small-order key: %v; want ErrMalformed", err)
	}
}
