package e2ee

import (
	"bytes"
	"crypto/ecdh"
	"crypto/ed25519"
	"crypto/mlkem"
	"crypto/sha512"
	"encoding/hex"
	"errors"
	"math/big"
	"slices"
	"strings"
	"testing"

	envelopev1 "github.com/umbra-e2ee/umbra/proto/umbra/envelope/v1"
)

func unhex(t testing.TB, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// fieldBytes encodes x (reduced mod p) as 32 little-endian bytes.
func fieldBytes(x *big.Int) []byte {
	be := x.FillBytes(make([]byte, 32))
	slices.Reverse(be)
	return be
}

// x25519IsZero reports whether X25519 with a clamped scalar gives the all-zero value
// for u, which crypto/ecdh refuses: u is a point of small order.
func x25519IsZero(t *testing.T, u []byte) bool {
	pub, err := ecdh.X25519().NewPublicKey(u)
	if err != nil {
		t.Fatal(err)
	}
	priv, err := ecdh.X25519().NewPrivateKey(bytes.Repeat([]byte{9}, 32))
	if err != nil {
		t.Fatal(err)
	}
	_, err = priv.ECDH(pub)
	return err != nil
}

// TestSmallOrderLists checks the two lists of points of small order that the key
// checks (and docs/wire-format.md) use, with an oracle of their own: crypto/ecdh's
// refusal of an all-zero X25519 result, and for edwards25519 the birational map
// u = (1 + y) / (1 - y) to Curve25519, which keeps a point's order.
func TestSmallOrderLists(t *testing.T) {
	t.Parallel()
	for _, u := range smallOrderX25519 {
		if !x25519IsZero(t, u) {
			t.Errorf("X25519 u = %x is listed as of small order, but its shared secret is not zero", u)
		}
	}
	seen := map[string]bool{}
	for _, e := range smallOrderEd25519 {
		if seen[string(e)] {
			t.Errorf("%x is listed twice", e)
		}
		seen[string(e)] = true
		if p := edwardsProblem(e); p != smallOrderProblem {
			t.Errorf("%x: %q; want a canonical point of small order", e, p)
		}
		y := bytes.Clone(e)
		y[31] &= 0x7f
		yi := littleEndian(y)
		if yi.Cmp(big.NewInt(1)) == 0 {
			continue // the neutral element
		}
		den := new(big.Int).Sub(big.NewInt(1), yi)
		den.Mod(den, fieldPrime)
		u := new(big.Int).Add(big.NewInt(1), yi)
		u.Mul(u, new(big.Int).ModInverse(den, fieldPrime)).Mod(u, fieldPrime)
		if !x25519IsZero(t, fieldBytes(u)) {
			t.Errorf("edwards25519 point %x is listed as of small order, but its Montgomery image is not", e)
		}
	}
	if len(seen) != 8 {
		t.Errorf("%d edwards25519 points of small order listed; there are 8", len(seen))
	}
	// And a real key is none of them.
	kp := testKeyPair(t, SuiteX25519, 5)
	if x25519IsZero(t, kp.KEMPublicKey()) || listed(smallOrderEd25519, kp.SigningPublicKey()) {
		t.Error("a real key counts as of small order")
	}
}

func TestCheckSigningPublicKey(t *testing.T) {
	t.Parallel()
	valid := testKeyPair(t, SuiteX25519, 7).SigningPublicKey()
	negated := bytes.Clone(valid)
	negated[31] ^= 0x80 // the same y, the other x: a point of the curve too
	// notOnCurve is a y whose x^2 is no square; Go's own decoder (inside Verify) agrees.
	var notOnCurve []byte
	for y := byte(2); notOnCurve == nil; y++ {
		k := make([]byte, 32)
		k[0] = y
		if err := ed25519.VerifyWithOptions(k, nil, make([]byte, 64), &ed25519.Options{}); err != nil && strings.Contains(err.Error(), "bad public key") {
			notOnCurve = k
		}
	}
	bad := map[string][]byte{
		"short":                        valid[:31],
		"y = p":                        unhex(t, "edffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f"),
		"y = p + 1, the neutral point": unhex(t, "eeffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f"),
		"x = 0 with the sign bit set":  unhex(t, "0100000000000000000000000000000000000000000000000000000000000080"),
		"not a point of the curve":     notOnCurve,
	}
	for i, e := range smallOrderEd25519 {
		bad["small order "+string(rune('0'+i))] = e
	}
	for name, k := range bad {
		t.Run(name, func(t *testing.T) {
			if err := CheckSigningPublicKey(k); !errors.Is(err, ErrMalformed) {
				t.Fatalf("CheckSigningPublicKey(%x) = %v; want ErrMalformed", k, err)
			}
		})
	}
	t.Run("keys of real seeds", func(t *testing.T) {
		for i := range 256 {
			pub := ed25519.NewKeyFromSeed(bytes.Repeat([]byte{byte(i)}, 32)).Public().(ed25519.PublicKey)
			if err := CheckSigningPublicKey(pub); err != nil {
				t.Fatalf("seed %d: %v", i, err)
			}
		}
		if err := CheckSigningPublicKey(negated); err != nil {
			t.Fatalf("negated key: %v", err)
		}
	})
}

func TestCheckX25519PublicKey(t *testing.T) {
	t.Parallel()
	valid := testKeyPair(t, SuiteX25519, 7).KEMPublicKey()
	highBit := bytes.Clone(valid)
	highBit[31] |= 0x80 // the same point to RFC 7748, which ignores the bit; not canonical
	bad := map[string][]byte{
		"u = p":           unhex(t, "edffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f"),
		"u = p + 1":       unhex(t, "eeffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f"),
		"top bit set":     highBit,
		"31 bytes":        valid[:31],
		"all ones":        bytes.Repeat([]byte{0xff}, 32),
		"small order 0":   smallOrderX25519[0],
		"small order 1":   smallOrderX25519[1],
		"small order p-1": smallOrderX25519[2],
		"small order 8 a": smallOrderX25519[3],
		"small order 8 b": smallOrderX25519[4],
	}
	for name, k := range bad {
		t.Run(name, func(t *testing.T) {
			if err := checkX25519PublicKey("test", k); !errors.Is(err, ErrMalformed) {
				t.Fatalf("checkX25519PublicKey(%x) = %v; want ErrMalformed", k, err)
			}
		})
	}
	t.Run("keys of real seeds", func(t *testing.T) {
		for i := range 256 {
			kp := testKeyPair(t, SuiteX25519, byte(i))
			if err := checkX25519PublicKey("test", kp.KEMPublicKey()); err != nil {
				t.Fatalf("seed %d: %v", i, err)
			}
		}
	})
}

// TestParseCardRefusesWeakPublicKeys: a card's keys must pass the checks of
// docs/wire-format.md section 5.1 when the card is parsed, not only fail later.
func TestParseCardRefusesWeakPublicKeys(t *testing.T) {
	t.Parallel()
	x := testKeyPair(t, SuiteX25519, 1)
	h := testKeyPair(t, SuiteHybrid, 2)
	card := func(kp *KeyPair, edit func(*envelopev1.CardContent)) *envelopev1.CardContent {
		c := &envelopev1.CardContent{Version: 1, Identity: alice, SigningPublicKey: kp.SigningPublicKey(), Suite: kp.Suite, KemPublicKey: kp.KEMPublicKey(), CreatedAtUnixSeconds: when.Unix()}
		edit(c)
		return c
	}
	signed := func(kp *KeyPair, c *envelopev1.CardContent) ([]byte, []byte) {
		b, err := Marshal(c)
		if err != nil {
			t.Fatal(err)
		}
		return b, ed25519.Sign(kp.Signing, Labelled(LabelCardSelfSignature, b))
	}
	// invalidEK is a hybrid key whose first ML-KEM coefficient is q = 3329: it fails
	// the encapsulation key check (FIPS 203, section 7.2).
	invalidEK := bytes.Clone(h.KEMPublicKey())
	invalidEK[0], invalidEK[1] = 0x01, invalidEK[1]&0xf0|0x0d
	if _, err := mlkem.NewEncapsulationKey768(invalidEK[:mlkem.EncapsulationKeySize768]); err == nil {
		t.Fatal("the crafted ML-KEM key passes crypto/mlkem's check")
	}
	lowOrderHalf := append(bytes.Clone(h.KEMPublicKey()[:mlkem.EncapsulationKeySize768]), smallOrderX25519[3]...)
	cases := map[string]func() ([]byte, []byte){
		"X25519 KEM key of small order": func() ([]byte, []byte) {
			return signed(x, card(x, func(c *envelopev1.CardContent) { c.KemPublicKey = smallOrderX25519[4] }))
		},
		"X25519 KEM key zero": func() ([]byte, []byte) {
			return signed(x, card(x, func(c *envelopev1.CardContent) { c.KemPublicKey = make([]byte, 32) }))
		},
		"X25519 KEM key not canonical": func() ([]byte, []byte) {
			return signed(x, card(x, func(c *envelopev1.CardContent) { c.KemPublicKey[31] |= 0x80 }))
		},
		"hybrid KEM key with an X25519 half of small order": func() ([]byte, []byte) {
			return signed(h, card(h, func(c *envelopev1.CardContent) { c.KemPublicKey = lowOrderHalf }))
		},
		"hybrid KEM key failing the ML-KEM encapsulation key check": func() ([]byte, []byte) {
			return signed(h, card(h, func(c *envelopev1.CardContent) { c.KemPublicKey = invalidEK }))
		},
		// With the neutral element as key, [k]A vanishes: R = [S]B signs anything. Go's
		// ed25519.Verify accepts such a signature, so the card check has to refuse the key.
		"signing key the neutral element, with a signature that verifies": func() ([]byte, []byte) {
			b, err := Marshal(card(x, func(c *envelopev1.CardContent) { c.SigningPublicKey = smallOrderEd25519[0] }))
			if err != nil {
				t.Fatal(err)
			}
			basePoint := unhex(t, "5866666666666666666666666666666666666666666666666666666666666666")
			sig := append(basePoint, append([]byte{1}, make([]byte, 31)...)...) // R = [1]B, S = 1
			if !ed25519.Verify(smallOrderEd25519[0], Labelled(LabelCardSelfSignature, b), sig) {
				t.Fatal("the forged self-signature does not verify under the neutral element")
			}
			return b, sig
		},
		"signing key not canonical": func() ([]byte, []byte) {
			return signed(x, card(x, func(c *envelopev1.CardContent) {
				c.SigningPublicKey = unhex(t, "0100000000000000000000000000000000000000000000000000000000000080")
			}))
		},
	}
	for name, make := range cases {
		t.Run(name, func(t *testing.T) {
			content, sig := make()
			if _, err := ParseCard(content, sig); !errors.Is(err, ErrMalformed) {
				t.Fatalf("ParseCard = %v; want ErrMalformed", err)
			}
		})
	}
}

// groupOrder is edwards25519's prime order L = 2^252 + 27742317777372353535851937790883648493.
var groupOrder, _ = new(big.Int).SetString("7237005577332262213973186563042994240857116359379907606001950938285454250989", 10)

// signWithR signs message with seed's key, but with the nonce point R given: the
// signature a signer who knows the key can make with R of its choosing, when R's
// discrete logarithm is known (here R is of small order, whose log modulo L is 0).
func signWithR(seed, r, message []byte) []byte {
	h := sha512.Sum512(seed)
	h[0] &= 248
	h[31] &= 127
	h[31] |= 64
	a := littleEndian(h[:32])
	pub := ed25519.NewKeyFromSeed(seed).Public().(ed25519.PublicKey)
	kh := sha512.New()
	kh.Write(r)
	kh.Write(pub)
	kh.Write(message)
	k := littleEndian(kh.Sum(nil))
	s := new(big.Int).Mul(k, a)
	s.Mod(s, groupOrder)
	return append(bytes.Clone(r), fieldBytes(s)...)
}

// TestSignatureRules pins the Ed25519 verification rules that docs/wire-format.md
// section 3 states, through ParseCard's self-signature check.
func TestSignatureRules(t *testing.T) {
	t.Parallel()
	kp := testKeyPair(t, SuiteX25519, 3)
	content, sig, err := NewCard(kp, alice, when, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ParseCard(content, sig); err != nil {
		t.Fatal(err)
	}
	message := Labelled(LabelCardSelfSignature, content)

	// S + L: the same scalar, not reduced. RFC 8032 requires S < L.
	s := littleEndian(sig[32:])
	unreduced := append(bytes.Clone(sig[:32]), fieldBytes(s.Add(s, groupOrder))...)
	// R of small order: Go's ed25519.Verify accepts it, libsodium does not, and neither
	// does Umbra.
	smallR := signWithR(kp.SigningSeed(), smallOrderEd25519[0], message)
	if !ed25519.Verify(kp.SigningPublicKey(), message, smallR) {
		t.Fatal("the small-order-R signature does not verify under Go's ed25519.Verify: the test premise is wrong")
	}
	for name, bad := range map[string][]byte{"S not reduced": unreduced, "R of small order": smallR} {
		t.Run(name, func(t *testing.T) {
			if _, err := ParseCard(content, bad); !errors.Is(err, ErrBadSignature) {
				t.Fatalf("ParseCard = %v; want ErrBadSignature", err)
			}
		})
	}
}
