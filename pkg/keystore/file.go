package keystore

// The keystore file's format: encoding, Argon2id key derivation and the checks of a file read back.

import (
	"bytes"
	"crypto/hkdf"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"fmt"

	"golang.org/x/crypto/chacha20poly1305"

	"github.com/umbra-e2ee/umbra/pkg/argon2id"
	"github.com/umbra-e2ee/umbra/pkg/e2ee"
	envelopev1 "github.com/umbra-e2ee/umbra/proto/umbra/envelope/v1"
)

// checkArgon2id refuses a passphrase cost outside what RFC 9106 allows within
// argon2id's limits: t 1-16, p 1-64, m from 8 KiB per thread to 4 GiB. The salt is
// checked apart, when a file is opened.
func checkArgon2id(p argon2id.Params) error {
	if p.Time < 1 || p.Time > argon2id.MaxTime || p.Threads < 1 || p.Threads > argon2id.MaxThreads || p.MemoryKiB < 8*p.Threads || p.MemoryKiB > argon2id.MaxMemoryKiB {
		return errorf(e2ee.ErrMalformed, "Argon2id parameters t=%d m=%d KiB p=%d are outside t 1-16, p 1-64, m 8p KiB-4 GiB (RFC 9106)", p.Time, p.MemoryKiB, p.Threads)
	}
	return nil
}

// encode returns the file's bytes: the magic, then a KeystoreFile.
func (ks *Keystore) encode(bundle []byte) ([]byte, error) {
	h := &envelopev1.KeystoreHeader{Version: keystoreVersion, Protection: envelopev1.KeystoreProtection_KEYSTORE_PROTECTION_NONE}
	if ks.encrypted {
		nonce := make([]byte, chacha20poly1305.NonceSize)
		if _, err := rand.Read(nonce); err != nil {
			return nil, fmt.Errorf("e2ee: keystore nonce: %w", err)
		}
		h = &envelopev1.KeystoreHeader{
			Version:    keystoreVersion,
			Protection: envelopev1.KeystoreProtection_KEYSTORE_PROTECTION_ARGON2ID_CHACHA20_POLY1305,
			Argon2Id: &envelopev1.KeystoreArgon2Id{
				Time: ks.kdf.Time, MemoryKib: ks.kdf.MemoryKiB, Threads: ks.kdf.Threads, Salt: ks.kdf.Salt,
			},
			KeyCheck: ks.keyCheck,
			Nonce:    nonce,
		}
	}
	header, err := e2ee.Marshal(h)
	if err != nil {
		return nil, err
	}
	if ks.encrypted {
		c, err := chacha20poly1305.New(ks.key)
		if err != nil {
			return nil, err
		}
		bundle = c.Seal(nil, h.GetNonce(), bundle, header)
	}
	file, err := e2ee.Marshal(&envelopev1.KeystoreFile{Header: header, KeyBundle: bundle})
	if err != nil {
		return nil, err
	}
	return append([]byte(keystoreMagic), file...), nil
}

// decode checks a keystore file and returns its KeyBundle bytes, setting ks's
// protection from its header.
func (ks *Keystore) decode(data, passphrase []byte) ([]byte, error) {
	if !bytes.HasPrefix(data, []byte(keystoreMagic)) {
		return nil, errorf(e2ee.ErrMalformed, "not an Umbra keystore file (no %q magic)", keystoreMagic)
	}
	header, sealed, err := e2ee.ParseBytesPair("keystore file", data[len(keystoreMagic):])
	if err != nil {
		return nil, err
	}
	var h envelopev1.KeystoreHeader
	if err := e2ee.UnmarshalStrict("keystore header", header, &h); err != nil {
		return nil, err
	}
	if h.GetVersion() != keystoreVersion {
		return nil, errorf(e2ee.ErrMalformed, "keystore version %d; this client reads version %d", h.GetVersion(), keystoreVersion)
	}
	switch h.GetProtection() {
	case envelopev1.KeystoreProtection_KEYSTORE_PROTECTION_NONE:
		if h.GetArgon2Id() != nil || len(h.GetKeyCheck()) != 0 || len(h.GetNonce()) != 0 {
			return nil, errorf(e2ee.ErrMalformed, "unencrypted keystore with encryption parameters")
		}
		if len(passphrase) > 0 {
			return nil, errorf(e2ee.ErrPassphrase, "the keystore is not encrypted, yet a passphrase was given")
		}
		return sealed, nil
	case envelopev1.KeystoreProtection_KEYSTORE_PROTECTION_ARGON2ID_CHACHA20_POLY1305:
	default:
		return nil, errorf(e2ee.ErrUnknownSuite, "keystore protection %d", int32(h.GetProtection()))
	}
	a := h.GetArgon2Id()
	if a == nil || a.GetThreads() > 64 {
		return nil, errorf(e2ee.ErrMalformed, "keystore Argon2id parameters missing or out of bounds")
	}
	kdf := argon2id.Params{Time: a.GetTime(), MemoryKiB: a.GetMemoryKib(), Threads: a.GetThreads(), Salt: bytes.Clone(a.GetSalt())}
	if err := checkArgon2id(kdf); err != nil {
		return nil, err
	}
	switch {
	case len(a.GetSalt()) < 16 || len(a.GetSalt()) > 64:
		return nil, errorf(e2ee.ErrMalformed, "keystore salt is %d bytes; want 16 to 64", len(a.GetSalt()))
	case len(h.GetKeyCheck()) != keyCheckSize:
		return nil, errorf(e2ee.ErrMalformed, "keystore key check is %d bytes; want %d", len(h.GetKeyCheck()), keyCheckSize)
	case len(h.GetNonce()) != chacha20poly1305.NonceSize:
		return nil, errorf(e2ee.ErrMalformed, "keystore nonce is %d bytes; want %d", len(h.GetNonce()), chacha20poly1305.NonceSize)
	case len(passphrase) == 0:
		return nil, errorf(e2ee.ErrPassphrase, "the keystore is encrypted; a passphrase is required")
	}
	key, keyCheck, err := stretch(passphrase, kdf)
	if err != nil {
		return nil, err
	}
	if subtle.ConstantTimeCompare(keyCheck, h.GetKeyCheck()) != 1 {
		return nil, errorf(e2ee.ErrPassphrase, "wrong passphrase (or altered Argon2id parameters)")
	}
	c, err := chacha20poly1305.New(key)
	if err != nil {
		return nil, err
	}
	bundle, err := c.Open(nil, h.GetNonce(), sealed, header)
	if err != nil {
		return nil, errorf(e2ee.ErrDecrypt, "the keystore's passphrase is right but its content does not authenticate: the file was altered or damaged")
	}
	ks.encrypted, ks.kdf, ks.key, ks.keyCheck = true, kdf, key, keyCheck
	return bundle, nil
}

// stretch derives the keystore's AEAD key and key check value from a passphrase, with
// p's cost and salt.
func stretch(passphrase []byte, p argon2id.Params) (key, keyCheck []byte, err error) {
	master := p.Key(passphrase, 32)
	if key, err = hkdf.Key(sha256.New, master, nil, string(e2ee.Labelled(LabelKeystoreEncryptionKey)), keystoreKeySize); err != nil {
		return nil, nil, fmt.Errorf("e2ee: derive the keystore key: %w", err)
	}
	if keyCheck, err = hkdf.Key(sha256.New, master, nil, string(e2ee.Labelled(LabelKeystoreKeyCheck)), keyCheckSize); err != nil {
		return nil, nil, fmt.Errorf("e2ee: derive the keystore key check: %w", err)
	}
	return key, keyCheck, nil
}
