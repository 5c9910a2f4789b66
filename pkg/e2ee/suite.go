package e2ee

import (
	"crypto/ecdh"
	"crypto/hpke"

	envelopev1 "github.com/umbra-e2ee/umbra/proto/umbra/envelope/v1"
)

// Suite is the HPKE cipher suite of a card's KEM key.
type Suite = envelopev1.Suite

// The suites.
const (
	// SuiteHybrid is the default: ML-KEM-768 + X25519 (X-Wing), HKDF-SHA256,
	// ChaCha20-Poly1305.
	SuiteHybrid = envelopev1.Suite_SUITE_MLKEM768_X25519
	// SuiteX25519 is the compact suite: DHKEM(X25519, HKDF-SHA256), HKDF-SHA256,
	// ChaCha20-Poly1305.
	SuiteX25519 = envelopev1.Suite_SUITE_X25519
)

// DefaultSuite is the suite of new key pairs unless asked otherwise.
const DefaultSuite = SuiteHybrid

// suiteParams are a suite's HPKE components and sizes.
type suiteParams struct {
	kem       hpke.KEM
	publicLen int // SerializePublicKey length
	encLen    int // encapsulated key length
}

var suites = map[Suite]suiteParams{
	SuiteHybrid: {kem: hpke.MLKEM768X25519(), publicLen: 1216, encLen: 1120},
	SuiteX25519: {kem: hpke.DHKEM(ecdh.X25519()), publicLen: 32, encLen: 32},
}

// params returns s's parameters, or ErrUnknownSuite.
func params(s Suite) (suiteParams, error) {
	p, ok := suites[s]
	if !ok {
		return suiteParams{}, errorf(ErrUnknownSuite, "suite %d", int32(s))
	}
	return p, nil
}

// CheckSuite returns ErrUnknownSuite if s is not a suite this version knows.
func CheckSuite(s Suite) error {
	_, err := params(s)
	return err
}

// hpkeKDF and hpkeAEAD are the same for every suite.
func hpkeKDF() hpke.KDF   { return hpke.HKDFSHA256() }
func hpkeAEAD() hpke.AEAD { return hpke.ChaCha20Poly1305() }
