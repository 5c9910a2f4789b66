package keybackup

import (
	"errors"

	"github.com/umbra-e2ee/umbra/pkg/internal/kinderr"
)

// The kinds of failure. Errors returned by this package wrap exactly one of them, with
// a message that says what was wrong; test with errors.Is.
var (
	// ErrInvalid: an input that breaks a rule of the format (a size, a bound, an
	// unknown slot or AEAD, a malformed element).
	ErrInvalid = errors.New("invalid input")
	// ErrBadProof: the service's evaluation does not come with a valid DLEQ proof for
	// the public key it named, so its output cannot be trusted.
	ErrBadProof = errors.New("OPRF proof does not verify")
	// ErrDecrypt: a backup ciphertext that does not authenticate under the derived
	// key: a wrong password or recovery key, or a ciphertext or parameters altered.
	ErrDecrypt = errors.New("backup does not decrypt")
	// ErrRecoveryKey: a recovery key that does not parse, or whose check group does not
	// match (a mistyped character).
	ErrRecoveryKey = errors.New("invalid recovery key")
	// ErrWeakParams: a password record whose Argon2id parameters are cheaper than
	// MinPasswordCost. A client refuses to derive a key under them, since the service
	// could hand out weak parameters to make the auth key it receives cheap to attack.
	ErrWeakParams = errors.New("Argon2id parameters too weak")
)

// Error is a failure of one kind, with what was wrong. Its fields are
// Kind (one of the kinds above) and Msg; it reads "keybackup: <kind>: <msg>", and Unwrap
// returns the kind.
type Error = kinderr.Error[kinderr.KeyBackup]

var errorf = kinderr.Errorf[kinderr.KeyBackup]
