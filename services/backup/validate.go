package backup

import (
	"bytes"
	"crypto/sha256"

	"github.com/cloudflare/circl/oprf"

	"github.com/umbra-e2ee/umbra/pkg/errs"
	backupv1 "github.com/umbra-e2ee/umbra/proto/umbra/backup/v1"
)

// Bounds on requests (backup.proto states them).
const (
	// MinCiphertext is a 1-byte bundle and the 16-byte AEAD tag; MaxCiphertext a 1 MiB
	// bundle and its tag.
	MinCiphertext = 1 + aeadTagSize
	MaxCiphertext = 1<<20 + aeadTagSize
	aeadTagSize   = 16
	// NonceSize is the AEAD nonce of both AEADs.
	NonceSize = 12
	// AuthKeySize is the client's auth key; its SHA-256 is the stored verifier.
	AuthKeySize = 32
	// Argon2id bounds (RFC 9106 parameters t, m in KiB, p) and salt length.
	MinArgon2Time      = 1
	MaxArgon2Time      = 16
	MinArgon2MemoryKiB = 8 << 10
	MaxArgon2MemoryKiB = 4 << 20
	MinArgon2Threads   = 1
	MaxArgon2Threads   = 64
	MinSaltSize        = 16
	MaxSaltSize        = 64
)

// validSlot checks a slot field and returns its stored value.
func validSlot(s backupv1.BackupSlot) (uint32, error) {
	switch s {
	case backupv1.BackupSlot_BACKUP_SLOT_PASSWORD, backupv1.BackupSlot_BACKUP_SLOT_RECOVERY:
		return uint32(s), nil
	case backupv1.BackupSlot_BACKUP_SLOT_UNSPECIFIED:
		return 0, errs.Invalidf("slot is unspecified: want BACKUP_SLOT_PASSWORD or BACKUP_SLOT_RECOVERY")
	}
	return 0, errs.Invalidf("slot %d is not a backup slot: want BACKUP_SLOT_PASSWORD or BACKUP_SLOT_RECOVERY", int32(s))
}

// validPurpose checks an evaluation purpose.
func validPurpose(p backupv1.EvaluationPurpose) error {
	switch p {
	case backupv1.EvaluationPurpose_EVALUATION_PURPOSE_BACKUP, backupv1.EvaluationPurpose_EVALUATION_PURPOSE_RESTORE:
		return nil
	case backupv1.EvaluationPurpose_EVALUATION_PURPOSE_UNSPECIFIED:
		return errs.Invalidf("purpose is unspecified: want EVALUATION_PURPOSE_BACKUP or EVALUATION_PURPOSE_RESTORE")
	}
	return errs.Invalidf("purpose %d is not an evaluation purpose: want EVALUATION_PURPOSE_BACKUP or EVALUATION_PURPOSE_RESTORE", int32(p))
}

// parseElement decodes a blinded element: a canonical ristretto255 encoding of an
// element other than the identity (RFC 9497 DeserializeElement).
func parseElement(b []byte) (oprf.Blinded, error) {
	if len(b) != elementSize {
		return nil, errs.Invalidf("blinded_element is %d bytes; want %d (a serialised ristretto255 element)", len(b), elementSize)
	}
	e := suite.Group().NewElement()
	if err := e.UnmarshalBinary(b); err != nil {
		return nil, errs.Invalidf("blinded_element is not the canonical encoding of a ristretto255 element")
	}
	if again, err := e.MarshalBinaryCompress(); err != nil || !bytes.Equal(again, b) {
		return nil, errs.Invalidf("blinded_element is not the canonical encoding of a ristretto255 element")
	}
	if e.IsIdentity() {
		return nil, errs.Invalidf("blinded_element is the identity element: blind the input with a non-zero scalar")
	}
	return e, nil
}

// validRecord checks every field of a record to store.
func validRecord(r *backupv1.BackupRecord) error {
	if r == nil {
		return errs.Invalidf("record is missing")
	}
	switch n := len(r.GetCiphertext()); {
	case n == 0:
		return errs.Invalidf("record.ciphertext is empty: send the AEAD ciphertext of the key bundle, tag appended")
	case n < MinCiphertext:
		return errs.Invalidf("record.ciphertext is %d bytes; at least %d (a 1-byte bundle and the %d-byte tag)", n, MinCiphertext, aeadTagSize)
	case n > MaxCiphertext:
		return errs.TooLargef("record.ciphertext is %d bytes; at most %d (a 1 MiB bundle and the %d-byte tag)", n, MaxCiphertext, aeadTagSize)
	}
	if n := len(r.GetNonce()); n != NonceSize {
		return errs.Invalidf("record.nonce is %d bytes; want %d", n, NonceSize)
	}
	switch r.GetAead() {
	case backupv1.BackupAead_BACKUP_AEAD_CHACHA20_POLY1305, backupv1.BackupAead_BACKUP_AEAD_AES_256_GCM:
	case backupv1.BackupAead_BACKUP_AEAD_UNSPECIFIED:
		return errs.Invalidf("record.aead is unspecified: want BACKUP_AEAD_CHACHA20_POLY1305 or BACKUP_AEAD_AES_256_GCM")
	default:
		return errs.Invalidf("record.aead %d is not a backup AEAD: want BACKUP_AEAD_CHACHA20_POLY1305 or BACKUP_AEAD_AES_256_GCM", int32(r.GetAead()))
	}
	if n := len(r.GetAuthKeyHash()); n != sha256.Size {
		return errs.Invalidf("record.auth_key_hash is %d bytes; want %d (the SHA-256 of the auth key)", n, sha256.Size)
	}
	return validKDF(r.GetKdf())
}

// validKDF checks Argon2id parameters against the bounds.
func validKDF(k *backupv1.Argon2IdParams) error {
	switch {
	case k == nil:
		return errs.Invalidf("record.kdf is missing: send the Argon2id parameters and salt the keys were derived with")
	case k.GetTime() < MinArgon2Time || k.GetTime() > MaxArgon2Time:
		return errs.Invalidf("record.kdf.time is %d; want %d to %d passes", k.GetTime(), MinArgon2Time, MaxArgon2Time)
	case k.GetMemoryKib() < MinArgon2MemoryKiB || k.GetMemoryKib() > MaxArgon2MemoryKiB:
		return errs.Invalidf("record.kdf.memory_kib is %d; want %d (8 MiB) to %d (4 GiB)", k.GetMemoryKib(), MinArgon2MemoryKiB, MaxArgon2MemoryKiB)
	case k.GetThreads() < MinArgon2Threads || k.GetThreads() > MaxArgon2Threads:
		return errs.Invalidf("record.kdf.threads is %d; want %d to %d", k.GetThreads(), MinArgon2Threads, MaxArgon2Threads)
	case len(k.GetSalt()) < MinSaltSize || len(k.GetSalt()) > MaxSaltSize:
		return errs.Invalidf("record.kdf.salt is %d bytes; want %d to %d random bytes", len(k.GetSalt()), MinSaltSize, MaxSaltSize)
	}
	return nil
}

// validAuthKey checks the auth key of a Restore.
func validAuthKey(k []byte) error {
	if len(k) != AuthKeySize {
		return errs.Invalidf("auth_key is %d bytes; want %d", len(k), AuthKeySize)
	}
	return nil
}
