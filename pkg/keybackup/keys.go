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

	"golang.org/x/crypto/argon2"
	"golang.org/x/crypto/chacha20poly1305"
)

// Sizes of the derived keys and of the AEAD's values.
const (
	KeySize        = 32 // the encryption key and the auth key
	StretchedSize  = 32 // Argon2id's output
	NonceSize      = 12
	TagSize        = 16
	DefaultSaltLen = 32
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

// Argon2idParams are the Argon2id (RFC 9106, version 0x13) parameters and salt of a
// record, within the bounds of umbra.backup.v1.Argon2idParams.
type Argon2idParams struct {
	Time      uint32 // passes: 1 to 16
	MemoryKiB uint32 // 8,192 (8 MiB) to 4,194,304 (4 GiB)
	Threads   uint32 // 1 to 64
	Salt      []byte // 16 to 64 bytes, fresh for every record
}

// DefaultArgon2id is the cost of stretching a password: RFC 9106's second recommended
// setting (section 4), t=3, m=64 MiB, p=4. One derivation takes 64 MiB and, on the
// 2-vCPU Intel Xeon VM this was written on, about 160 ms (BenchmarkRestoreClientArgon2id:
// 153-200 ms over 8 runs, up to 400 ms while other work shared the CPUs); it runs
// once per backup or restore, and is nearly all of a restore's time (see
// BenchmarkRestoreClient and pkg/sdk's BenchmarkRestorePrivateKey). A fresh salt is
// added by NewArgon2id.
var DefaultArgon2id = Argon2idParams{Time: 3, MemoryKiB: 64 * 1024, Threads: 4}

// RecoveryArgon2id is the cost for the recovery slot: the least the service accepts
// (t=1, m=8 MiB, p=1). A recovery key has 160 random bits, so stretching it adds no
// meaningful security; the OPRF still keeps a stolen database from testing it.
var RecoveryArgon2id = Argon2idParams{Time: 1, MemoryKiB: 8 * 1024, Threads: 1}

// MinPasswordCost is the least Argon2id cost, passes × memory in KiB, that a client
// accepts for a record of the password slot: DefaultArgon2id's (3 × 65,536). A service
// that stated cheaper parameters for a restore would get an auth key it could test
// password guesses against more cheaply than against the record it stores, so
// CheckPasswordCost refuses them before anything is derived. (t=1 with 2 GiB, RFC
// 9106's first recommendation, is well above it.)
const MinPasswordCost = 3 * 64 * 1024

// CheckPasswordCost reports ErrWeakParams if p costs less than MinPasswordCost.
func CheckPasswordCost(p Argon2idParams) error {
	if uint64(p.Time)*uint64(p.MemoryKiB) < MinPasswordCost {
		return errorf(ErrWeakParams, "Argon2id t=%d m=%d KiB costs less than t × m = %d: a password record is never written that cheap", p.Time, p.MemoryKiB, MinPasswordCost)
	}
	return nil
}

// NewArgon2id returns p with a fresh DefaultSaltLen-byte salt from rnd (crypto/rand if
// nil).
func NewArgon2id(p Argon2idParams, rnd io.Reader) (Argon2idParams, error) {
	if rnd == nil {
		rnd = rand.Reader
	}
	p.Salt = make([]byte, DefaultSaltLen)
	if _, err := io.ReadFull(rnd, p.Salt); err != nil {
		return Argon2idParams{}, fmt.Errorf("keybackup: salt: %w", err)
	}
	return p, p.Check()
}

// Check reports, as ErrInvalid, why p is outside the bounds the service accepts.
func (p Argon2idParams) Check() error {
	switch {
	case p.Time < 1 || p.Time > 16:
		return errorf(ErrInvalid, "Argon2id time %d is outside 1 to 16", p.Time)
	case p.MemoryKiB < 8192 || p.MemoryKiB > 4<<20:
		return errorf(ErrInvalid, "Argon2id memory %d KiB is outside 8,192 to 4,194,304", p.MemoryKiB)
	case p.Threads < 1 || p.Threads > 64:
		return errorf(ErrInvalid, "Argon2id threads %d is outside 1 to 64", p.Threads)
	case len(p.Salt) < 16 || len(p.Salt) > 64:
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
	KDF     Argon2idParams
}

func (p Params) check() error {
	if p.Version == 0 {
		return errorf(ErrInvalid, "record version 0; versions start at 1")
	}
	if p.AEAD != ChaCha20Poly1305 && p.AEAD != AES256GCM {
		return errorf(ErrInvalid, "unknown AEAD %d", uint32(p.AEAD))
	}
	return p.KDF.Check()
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
func Stretch(out *Output, kdf Argon2idParams) ([]byte, error) {
	if out == nil || len(out.Value) != OutputSize {
		return nil, errorf(ErrInvalid, "no %d-byte OPRF output", OutputSize)
	}
	if err := kdf.Check(); err != nil {
		return nil, err
	}
	return argon2.IDKey(out.Value, kdf.Salt, kdf.Time, kdf.MemoryKiB, uint8(kdf.Threads), StretchedSize), nil
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
