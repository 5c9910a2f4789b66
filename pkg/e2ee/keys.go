package e2ee

import (
	"crypto/ed25519"
	"crypto/hpke"
	"crypto/rand"
	"crypto/subtle"
	"fmt"
)

// KeyPair is the private half of a card: an Ed25519 signing key and an HPKE KEM key of
// one suite. It never leaves the client but encrypted (keystore, backup).
type KeyPair struct {
	Suite   Suite
	Signing ed25519.PrivateKey
	KEM     hpke.PrivateKey
}

// GenerateKeyPair returns a fresh key pair of suite.
func GenerateKeyPair(suite Suite) (*KeyPair, error) {
	p, err := params(suite)
	if err != nil {
		return nil, err
	}
	_, signing, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("e2ee: generate signing key: %w", err)
	}
	kem, err := p.kem.GenerateKey()
	if err != nil {
		return nil, fmt.Errorf("e2ee: generate KEM key: %w", err)
	}
	return &KeyPair{Suite: suite, Signing: signing, KEM: kem}, nil
}

// DeriveKeyPair derives a key pair from seed: the Ed25519 key from its first 32 bytes
// and the KEM key with the suite's DeriveKeyPair (RFC 9180) from the rest. It makes test
// vectors reproducible; real keys come from GenerateKeyPair.
func DeriveKeyPair(suite Suite, seed []byte) (*KeyPair, error) {
	p, err := params(suite)
	if err != nil {
		return nil, err
	}
	if len(seed) < ed25519.SeedSize+32 {
		return nil, errorf(ErrMalformed, "key seed of %d bytes; want at least %d", len(seed), ed25519.SeedSize+32)
	}
	kem, err := p.kem.DeriveKeyPair(seed[ed25519.SeedSize:])
	if err != nil {
		return nil, fmt.Errorf("e2ee: derive KEM key: %w", err)
	}
	return &KeyPair{Suite: suite, Signing: ed25519.NewKeyFromSeed(seed[:ed25519.SeedSize]), KEM: kem}, nil
}

// NewKeyPair rebuilds a key pair from its serialised private keys: the 32-byte Ed25519
// seed and the KEM private key (RFC 9180 SerializePrivateKey).
func NewKeyPair(suite Suite, signingSeed, kemPrivate []byte) (*KeyPair, error) {
	p, err := params(suite)
	if err != nil {
		return nil, err
	}
	if len(signingSeed) != ed25519.SeedSize {
		return nil, errorf(ErrMalformed, "signing seed of %d bytes; want %d", len(signingSeed), ed25519.SeedSize)
	}
	kem, err := p.kem.NewPrivateKey(kemPrivate)
	if err != nil {
		return nil, errorf(ErrMalformed, "KEM private key: %v", err)
	}
	return &KeyPair{Suite: suite, Signing: ed25519.NewKeyFromSeed(signingSeed), KEM: kem}, nil
}

// SigningSeed returns the 32-byte Ed25519 seed.
func (k *KeyPair) SigningSeed() []byte { return k.Signing.Seed() }

// KEMPrivateKey returns the serialised KEM private key.
func (k *KeyPair) KEMPrivateKey() ([]byte, error) { return k.KEM.Bytes() }

// SigningPublicKey returns the Ed25519 public key.
func (k *KeyPair) SigningPublicKey() ed25519.PublicKey {
	return k.Signing.Public().(ed25519.PublicKey)
}

// KEMPublicKey returns the serialised KEM public key.
func (k *KeyPair) KEMPublicKey() []byte { return k.KEM.PublicKey().Bytes() }

// Equal reports whether k and other are the same key pair: the same suite, signing key
// and KEM private key. The keys are compared in constant time.
func (k *KeyPair) Equal(other *KeyPair) bool {
	a, aerr := k.KEMPrivateKey()
	b, berr := other.KEMPrivateKey()
	return k.Suite == other.Suite && aerr == nil && berr == nil && subtle.ConstantTimeCompare(a, b) == 1 && k.Signing.Equal(other.Signing)
}
