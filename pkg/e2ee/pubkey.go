package e2ee

import (
	"bytes"
	"crypto/ed25519"
	"encoding/hex"
	"math/big"
	"slices"
)

// The checks a card's public keys must pass beyond their length (docs/wire-format.md,
// section 5.1). Go's crypto/ed25519 and crypto/ecdh accept, respectively, non-canonical
// Ed25519 encodings and points of small order, and any 32 bytes as an X25519 key; other
// libraries refuse some of these. A card that one client accepts and another refuses,
// or a key that makes every signature or shared secret predictable, has no use, so the
// card parser refuses them all, and every implementation can apply the same rules.

// fieldPrime is p = 2^255 - 19, the field of Curve25519 and edwards25519.
var fieldPrime = new(big.Int).Sub(new(big.Int).Lsh(big.NewInt(1), 255), big.NewInt(19))

// edwardsD is edwards25519's d = -121665 / 121666 mod p.
var edwardsD = func() *big.Int {
	d := new(big.Int).ModInverse(big.NewInt(121666), fieldPrime)
	d.Mul(d, big.NewInt(-121665))
	return d.Mod(d, fieldPrime)
}()

// smallOrderX25519 are the canonical u-coordinates of the points of order 1, 2, 4 or 8
// of Curve25519 and its twist: 0, 1, p - 1 and the two points of order 8. X25519 with
// any clamped scalar (a multiple of 8) sends them to 0, so their shared secret is all
// zero. (The neutral element has no u-coordinate.)
var smallOrderX25519 = [][]byte{
	mustHex("0000000000000000000000000000000000000000000000000000000000000000"),
	mustHex("0100000000000000000000000000000000000000000000000000000000000000"),
	mustHex("ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f"),
	mustHex("e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800"),
	mustHex("5f9c95bca3508c24b1d0b1559c83ef5b04445cc4581c8e86d8224eddd09f1157"),
}

// smallOrderEd25519 are the canonical encodings of the eight points of edwards25519
// whose order divides 8: the neutral element, the point of order 2, the two of order 4
// and the four of order 8.
var smallOrderEd25519 = [][]byte{
	mustHex("0100000000000000000000000000000000000000000000000000000000000000"),
	mustHex("ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f"),
	mustHex("0000000000000000000000000000000000000000000000000000000000000000"),
	mustHex("0000000000000000000000000000000000000000000000000000000000000080"),
	mustHex("26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc05"),
	mustHex("26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc85"),
	mustHex("c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac037a"),
	mustHex("c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac03fa"),
}

func mustHex(s string) []byte {
	b, err := hex.DecodeString(s)
	if err != nil {
		panic(err)
	}
	return b
}

func listed(list [][]byte, b []byte) bool {
	return slices.ContainsFunc(list, func(e []byte) bool { return bytes.Equal(e, b) })
}

// littleEndian returns b, read as a little-endian integer.
func littleEndian(b []byte) *big.Int {
	be := slices.Clone(b)
	slices.Reverse(be)
	return new(big.Int).SetBytes(be)
}

// checkX25519PublicKey checks an X25519 public key (RFC 7748): 32 bytes, a canonical
// u-coordinate (the little-endian integer is below p, so its top bit is 0), and not a
// point of small order, whose shared secret with any key is all zero.
func checkX25519PublicKey(what string, u []byte) error {
	switch {
	case len(u) != 32:
		return errorf(ErrMalformed, "%s: X25519 key of %d bytes; want 32", what, len(u))
	case littleEndian(u).Cmp(fieldPrime) >= 0:
		return errorf(ErrMalformed, "%s: X25519 key is not a canonical u-coordinate (at least 2^255 - 19)", what)
	case listed(smallOrderX25519, u):
		return errorf(ErrMalformed, "%s: X25519 key is a point of small order", what)
	}
	return nil
}

// CheckSigningPublicKey checks an Ed25519 public key as a card's signing key must be:
// 32 bytes that are the canonical encoding (RFC 8032, section 5.1.3) of a point of
// edwards25519 — y below p, and the sign bit clear when x is 0 — and not a point of
// small order, under which signatures could be forged.
func CheckSigningPublicKey(pub []byte) error { return checkSigningKey("Ed25519 key", pub) }

func checkSigningKey(what string, pub []byte) error {
	if len(pub) != ed25519.PublicKeySize {
		return errorf(ErrMalformed, "%s is %d bytes; want %d", what, len(pub), ed25519.PublicKeySize)
	}
	if problem := edwardsProblem(pub); problem != "" {
		return errorf(ErrMalformed, "%s %s", what, problem)
	}
	return nil
}

const smallOrderProblem = "is a point of small order"

// edwardsProblem says what keeps the 32 bytes b from being the canonical encoding of
// an edwards25519 point that is not of small order, or "" if nothing does.
func edwardsProblem(b []byte) string {
	yBytes := bytes.Clone(b)
	sign := yBytes[31] >> 7
	yBytes[31] &= 0x7f
	y := littleEndian(yBytes)
	if y.Cmp(fieldPrime) >= 0 {
		return "is not canonical: y is at least 2^255 - 19"
	}
	// x^2 = (y^2 - 1) / (d y^2 + 1); d y^2 + 1 is never 0 because -1/d is no square.
	y2 := new(big.Int).Mul(y, y)
	num := new(big.Int).Sub(y2, big.NewInt(1))
	den := new(big.Int).Mul(edwardsD, y2)
	den.Add(den, big.NewInt(1)).Mod(den, fieldPrime)
	x2 := new(big.Int).Mul(num, new(big.Int).ModInverse(den, fieldPrime))
	x2.Mod(x2, fieldPrime)
	switch {
	case x2.Sign() == 0 && sign == 1:
		return "is not canonical: x is 0 but the sign bit is set"
	case x2.Sign() != 0 && big.Jacobi(x2, fieldPrime) != 1: // no square root mod p
		return "is not a point of the curve"
	}
	if listed(smallOrderEd25519, b) {
		return smallOrderProblem
	}
	return ""
}

// checkKEMPublicKey applies the checks of its suite to a serialised KEM public key whose
// length is already known to be right: for DHKEM(X25519), those of an X25519 key; for
// MLKEM768-X25519, those of its X25519 half (the last 32 bytes) — the ML-KEM half's
// encapsulation key check of FIPS 203, section 7.2, is crypto/mlkem's, in NewPublicKey.
func checkKEMPublicKey(suite Suite, pub []byte) error {
	switch suite {
	case SuiteX25519:
		return checkX25519PublicKey("card KEM key", pub)
	case SuiteHybrid:
		return checkX25519PublicKey("card KEM key, X25519 half", pub[len(pub)-32:])
	}
	return errorf(ErrUnknownSuite, "suite %d", int32(suite))
}

// verify is Ed25519 verification (RFC 8032, pure) as docs/wire-format.md section 3
// specifies it: Go's ed25519.Verify — S below the group order L, R compared byte for
// byte with the canonical encoding of [S]B - [k]A (so a non-canonical R never
// verifies), without the cofactor — and, in addition, R must not be a point of small
// order. No honest signer makes such an R (it would take a nonce that is a multiple of
// L), and libsodium refuses it where Go would accept it: refusing it too keeps the two
// in agreement, so a signer cannot craft a signature that some clients accept and
// others refuse. Keys are checked when their card is parsed (CheckSigningPublicKey).
func verify(pub ed25519.PublicKey, message, sig []byte) bool {
	if len(pub) != ed25519.PublicKeySize || len(sig) != ed25519.SignatureSize {
		return false
	}
	if smallOrderR(sig[:32]) {
		return false
	}
	return ed25519.Verify(pub, message, sig)
}

// smallOrderR reports whether a signature's R is the canonical encoding of a point of
// small order. A non-canonical encoding never equals the encoding Verify computes, so
// only canonical ones need refusing.
func smallOrderR(r []byte) bool {
	return edwardsProblem(r) == smallOrderProblem
}
