package keybackup

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base32"
	"fmt"
	"io"
	"strings"
)

// Recovery keys are written in Crockford's base32: digits and upper-case letters
// without I, L, O and U, so that what is written down by hand reads back unambiguously.
const (
	recoveryAlphabet = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
	// RecoveryKeySize is the recovery key's secret: 160 random bits.
	RecoveryKeySize = 20
	groupLen        = 4
	dataGroups      = 8 // 160 bits = 32 characters of 5 bits
	// RecoveryKeyLen is the length of a formatted recovery key: nine groups of four
	// characters and eight dashes.
	RecoveryKeyLen = (dataGroups+1)*groupLen + dataGroups
)

var recoveryEncoding = base32.NewEncoding(recoveryAlphabet).WithPadding(base32.NoPadding)

// RecoveryKey is a recovery key's 20 secret bytes: the secret of the recovery slot's
// OPRF input.
type RecoveryKey [RecoveryKeySize]byte

// NewRecoveryKey returns a random recovery key from rnd (crypto/rand if nil).
func NewRecoveryKey(rnd io.Reader) (RecoveryKey, error) {
	if rnd == nil {
		rnd = rand.Reader
	}
	var k RecoveryKey
	if _, err := io.ReadFull(rnd, k[:]); err != nil {
		return RecoveryKey{}, fmt.Errorf("keybackup: recovery key: %w", err)
	}
	return k, nil
}

// String formats k for the user: its 160 bits in eight groups of four base32
// characters, then a ninth group of four that checks them (the first 20 bits of
// SHA-256(LABEL("umbra/v1/recovery-key-check") || k)), joined by dashes, like
// "0123-4567-89AB-CDEF-GHJK-MNPQ-RSTV-WXYZ-CHCK".
func (k RecoveryKey) String() string {
	chars := recoveryEncoding.EncodeToString(k[:]) + recoveryCheck(k)
	groups := make([]string, 0, dataGroups+1)
	for i := 0; i < len(chars); i += groupLen {
		groups = append(groups, chars[i:i+groupLen])
	}
	return strings.Join(groups, "-")
}

// recoveryCheck is the check group: the first 20 bits of the hash as four characters.
func recoveryCheck(k RecoveryKey) string {
	h := sha256.Sum256(append(labelled(LabelRecoveryCheck), k[:]...))
	return recoveryEncoding.EncodeToString(h[:3])[:groupLen]
}

// ParseRecoveryKey reads a recovery key as String writes it, tolerating lower case,
// spaces, dashes and other white space anywhere, and reading O as 0 and I or L as 1.
// A key of the wrong length, with a character outside the alphabet, or whose check
// group does not match (a mistyped or swapped character) is ErrRecoveryKey.
func ParseRecoveryKey(s string) (RecoveryKey, error) {
	var b strings.Builder
	for _, r := range s {
		switch {
		case r == '-' || r == ' ' || r == '\t' || r == '\n' || r == '\r':
			continue
		case r >= 'a' && r <= 'z':
			r -= 'a' - 'A'
		}
		switch r {
		case 'O':
			r = '0'
		case 'I', 'L':
			r = '1'
		}
		if !strings.ContainsRune(recoveryAlphabet, r) {
			return RecoveryKey{}, errorf(ErrRecoveryKey, "%q is not a character of a recovery key", r)
		}
		b.WriteRune(r)
	}
	chars := b.String()
	if want := (dataGroups + 1) * groupLen; len(chars) != want {
		return RecoveryKey{}, errorf(ErrRecoveryKey, "%d characters; a recovery key has %d (nine groups of four)", len(chars), want)
	}
	var k RecoveryKey
	n, err := recoveryEncoding.Decode(k[:], []byte(chars[:dataGroups*groupLen]))
	if err != nil || n != RecoveryKeySize {
		return RecoveryKey{}, errorf(ErrRecoveryKey, "does not decode: %v", err)
	}
	if subtle.ConstantTimeCompare([]byte(recoveryCheck(k)), []byte(chars[dataGroups*groupLen:])) != 1 {
		return RecoveryKey{}, errorf(ErrRecoveryKey, "the check group does not match: a character is mistyped")
	}
	return k, nil
}
