package keybackup

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"io"

	"golang.org/x/crypto/chacha20poly1305"

	"github.com/umbra-e2ee/umbra/pkg/argon2id"
)

// Sizes of the derived keys and of the AEAD's values.
const (
	KeySize       = 32 // the encryption key and the auth key
	StretchedSize = 32 // Argon2id's output
	NonceSize     = 12
	TagSize       = 16
	// MaxBundleSize is the largest plaintext a record may hold (BackupRecord: 1 MiB).
	MaxBundleSize = 1 << 20
)

// AEAD is the cipher of a record; the values are those of umbra.backup.v1.BackupAead.
type AEAD uint32

// The AEADs.
const (
	ChaCha20Poly1305 AEAD = 1 // the default
	AES256GCM        AEAD = 2
)

func (a AEAD) String() string {
	switch a {
	case ChaCha20Poly1305:
		return "ChaCha20-Poly1305"
	case AES256GCM:
		return "AES-256-GCM"
	}
	return fmt.Sprintf("AEAD %d", uint32(a))
}

// RecoveryArgon2id is the cost for the recovery slot: the least the service accepts
// (t=1, m=8 MiB, p=1). A recovery key has 160 random bits, so stretching it adds no
// meaningful security; the OPRF still keeps a stolen database from testing it.
var RecoveryArgon2id = argon2id.Params{Time: 1, MemoryKiB: 8 * 1024, Threads: 1}

// MinPasswordCost is the least Argon2id cost, passes × memory in KiB, that a client
// accepts for a record of the password slot: argon2id.Default's (3 × 65,536). A service
// that stated cheaper parameters for a restore would get an auth key it could test
// password guesses against more cheaply than against the record it stores, so
// CheckPasswordCost refuses them before anything is derived. (t=1 with 2 GiB, RFC
// 9106's first recommendation, is well above it.)
const MinPasswordCost = 3 * 64 * 1024

// CheckPasswordCost reports ErrWeakParams if p costs less than MinPasswordCost.
func CheckPasswordCost(p argon2id.Params) error {
	if uint64(p.Time)*uint64(p.MemoryKiB) < MinPasswordCost {
		return errorf(ErrWeakParams, "Argon2id t=%d m=%d KiB costs less than t × m = %d: a password record is never written that cheap", p.Time, p.MemoryKiB, MinPasswordCost)
	}
	return nil
}

// NewArgon2id returns p with a fresh argon2id.SaltSize-byte salt from rnd (crypto/rand
// if nil), checked by CheckArgon2id.
func NewArgon2id(p argon2id.Params, rnd io.Reader) (argon2id.Params, error) {
	if rnd == nil {
		rnd = rand.Reader
	}
	p.Salt = make([]byte, argon2id.SaltSize)
	if _, err := io.ReadFull(rnd, p.Salt); err != nil {
		return argon2id.Params{}, fmt.Errorf("keybackup: salt: %w", err)
	}
	return p, CheckArgon2id(p)
}

// minMemoryKiB is the least Argon2id memory of a record, 8 MiB: the backup service
// refuses less (umbra.backup.v1.Argon2idParams).
const minMemoryKiB = 8192

// CheckArgon2id reports, as ErrInvalid, why p is outside the bounds the service
// accepts: argon2id's limits, and at least 8 MiB of memory.
func CheckArgon2id(p argon2id.Params) error {
	switch {
	case p.Time < 1 || p.Time > argon2id.MaxTime:
		return errorf(ErrInvalid, "Argon2id time %d is outside 1 to 16", p.Time)
	case p.MemoryKiB < minMemoryKiB || p.MemoryKiB > argon2id.MaxMemoryKiB:
		return errorf(ErrInvalid, "Argon2id memory %d KiB is outside 8,192 to 4,194,304", p.MemoryKiB)
	case p.Threads < 1 || p.Threads > argon2id.MaxThreads:
		return errorf(ErrInvalid, "Argon2id threads %d is outside 1 to 64", p.Threads)
	case len(p.Salt) < argon2id.MinSaltSize || len(p.Salt) > argon2id.MaxSaltSize:
		return errorf(ErrInvalid, "Argon2id salt is %d bytes; want 16 to 64", len(p.Salt))
	}
	return nil
}

// Params are a record's parameters besides its binding and OPRF public key: all of
// them are bound into the keys or the associated data, so none can be changed without
// the restore failing.
type Params struct {
	// Version is the record's version: for a backup, the BACKUP evaluation's
	// oprf_key_version; for a restore, the RESTORE evaluation's.
	Version uint64
	AEAD    AEAD
	KDF     argon2id.Params
}

func (p Params) check() error {
	if p.Version == 0 {
		return errorf(ErrInvalid, "record version 0; versions start at 1")
	}
	if p.AEAD != ChaCha20Poly1305 && p.AEAD != AES256GCM {
		return errorf(ErrInvalid, "unknown AEAD %d", uint32(p.AEAD))
	}
	return CheckArgon2id(p.KDF)
}

// Keys are the keys derived for one record.
type Keys struct {
	binding    Binding
	publicKey  []byte
	params     Params
	encryption []byte
	auth       []byte
}

// Stretch returns Argon2id(password = the OPRF output, salt, t, m, p, 32 bytes): the
// costly step of DeriveKeys, separate so that it can be measured.
func Stretch(out *Output, kdf argon2id.Params) ([]byte, error) {
	if out == nil || len(out.Value) != OutputSize {
		return nil, errorf(ErrInvalid, "no %d-byte OPRF output", OutputSize)
	}
	if err := CheckArgon2id(kdf); err != nil {
		return nil, err
	}
	return kdf.Key(out.Value, StretchedSize), nil
}

// DeriveKeys stretches the OPRF output with Argon2id (p.KDF) and derives with
// HKDF-SHA256 the encryption key and the auth key, each bound to the identity, slot,
// record version and OPRF public key:
//
//	stretched = Argon2id(out.Value, salt, t, m, p, 32)
//	context   = str(app) || str(identity) || u32(slot) || u64(version) || public key
//	enc key   = HKDF-SHA256(stretched, salt = "", info = LABEL("umbra/v1/backup-encryption-key") || context, 32)
//	auth key  = HKDF-SHA256(stretched, salt = "", info = LABEL("umbra/v1/backup-auth-key") || context, 32)
func DeriveKeys(out *Output, p Params) (*Keys, error) {
	if err := p.check(); err != nil {
		return nil, err
	}
	stretched, err := Stretch(out, p.KDF)
	if err != nil {
		return nil, err
	}
	return deriveFromStretched(out, p, stretched)
}

func deriveFromStretched(out *Output, p Params, stretched []byte) (*Keys, error) {
	if err := out.Binding.check(); err != nil {
		return nil, err
	}
	if len(out.PublicKey) != ElementSize {
		return nil, errorf(ErrInvalid, "OPRF public key is %d bytes; want %d", len(out.PublicKey), ElementSize)
	}
	context := keyContext(out.Binding, p.Version, out.PublicKey)
	enc, err := hkdf.Key(sha256.New, stretched, nil, string(append(labelled(LabelEncryptionKey), context...)), KeySize)
	if err != nil {
		return nil, fmt.Errorf("keybackup: derive the encryption key: %w", err)
	}
	auth, err := hkdf.Key(sha256.New, stretched, nil, string(append(labelled(LabelAuthKey), context...)), KeySize)
	if err != nil {
		return nil, fmt.Errorf("keybackup: derive the auth key: %w", err)
	}
	kdf := p.KDF
	kdf.Salt = bytes.Clone(kdf.Salt)
	p.KDF = kdf
	return &Keys{binding: out.Binding, publicKey: bytes.Clone(out.PublicKey), params: p, encryption: enc, auth: auth}, nil
}

// keyContext is str(app) || str(identity) || u32(slot) || u64(version) || public key.
func keyContext(b Binding, version uint64, publicKey []byte) []byte {
	out := b.encode()
	out = binary.BigEndian.AppendUint64(out, version)
	return append(out, publicKey...)
}

// AuthKey is the 32-byte auth key: RestoreRequest.auth_key. Secret until presented.
func (k *Keys) AuthKey() []byte { return bytes.Clone(k.auth) }

// AuthKeyHash is SHA-256 of the auth key: BackupRecord.auth_key_hash.
func (k *Keys) AuthKeyHash() []byte {
	h := sha256.Sum256(k.auth)
	return h[:]
}

// EncryptionKey is the 32-byte AEAD key. Secret: it never leaves the client.
func (k *Keys) EncryptionKey() []byte { return bytes.Clone(k.encryption) }

// Params returns the parameters the keys were derived for.
func (k *Keys) Params() Params { return k.params }

// AssociatedData is the AEAD's associated data of a record:
//
//	LABEL("umbra/v1/backup-record") || str(app) || str(identity) || u32(slot) || u64(version)
//	  || public key (32) || u32(aead) || u32(time) || u32(memory_kib) || u32(threads)
//	  || u16(len(salt)) || salt
func (k *Keys) AssociatedData() []byte {
	ad := labelled(LabelAssociatedData)
	ad = append(ad, keyContext(k.binding, k.params.Version, k.publicKey)...)
	ad = binary.BigEndian.AppendUint32(ad, uint32(k.params.AEAD))
	ad = binary.BigEndian.AppendUint32(ad, k.params.KDF.Time)
	ad = binary.BigEndian.AppendUint32(ad, k.params.KDF.MemoryKiB)
	ad = binary.BigEndian.AppendUint32(ad, k.params.KDF.Threads)
	ad = binary.BigEndian.AppendUint16(ad, uint16(len(k.params.KDF.Salt)))
	return append(ad, k.params.KDF.Salt...)
}

func (k *Keys) aead() (cipher.AEAD, error) {
	switch k.params.AEAD {
	case ChaCha20Poly1305:
		return chacha20poly1305.New(k.encryption)
	case AES256GCM:
		b, err := aes.NewCipher(k.encryption)
		if err != nil {
			return nil, err
		}
		return cipher.NewGCM(b)
	}
	return nil, errorf(ErrInvalid, "unknown AEAD %d", uint32(k.params.AEAD))
}

// Seal encrypts bundle (1 byte to MaxBundleSize) with a fresh random nonce from rnd
// (crypto/rand if nil), and returns the nonce and the ciphertext with its tag.
func (k *Keys) Seal(rnd io.Reader, bundle []byte) (nonce, ciphertext []byte, err error) {
	if len(bundle) == 0 || len(bundle) > MaxBundleSize {
		return nil, nil, errorf(ErrInvalid, "key bundle is %d bytes; want 1 to %d", len(bundle), MaxBundleSize)
	}
	if rnd == nil {
		rnd = rand.Reader
	}
	nonce = make([]byte, NonceSize)
	if _, err := io.ReadFull(rnd, nonce); err != nil {
		return nil, nil, fmt.Errorf("keybackup: nonce: %w", err)
	}
	a, err := k.aead()
	if err != nil {
		return nil, nil, err
	}
	return nonce, a.Seal(nil, nonce, bundle, k.AssociatedData()), nil
}

// Open decrypts a record's ciphertext. One that does not authenticate (a wrong secret,
// or the ciphertext, nonce or parameters altered) is ErrDecrypt.
func (k *Keys) Open(nonce, ciphertext []byte) ([]byte, error) {
	if len(nonce) != NonceSize {
		return nil, errorf(ErrInvalid, "nonce is %d bytes; want %d", len(nonce), NonceSize)
	}
	if len(ciphertext) < TagSize+1 || len(ciphertext) > MaxBundleSize+TagSize {
		return nil, errorf(ErrInvalid, "ciphertext is %d bytes; want %d to %d", len(ciphertext), TagSize+1, MaxBundleSize+TagSize)
	}
	a, err := k.aead()
	if err != nil {
		return nil, err
	}
	bundle, err := a.Open(nil, nonce, ciphertext, k.AssociatedData())
	if err != nil {
		return nil, errorf(ErrDecrypt, "the key bundle does not authenticate under the derived key: a wrong secret, or the record was altered")
	}
	return bundle, nil
}
