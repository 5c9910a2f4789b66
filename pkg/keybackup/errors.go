package keybackup

import (
	"errors"
	"fmt"
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

// Error is a failure of one kind, with what was wrong.
type Error struct {
	Kind error
	Msg  string
}

func (e *Error) Error() string { return fmt.Sprintf("keybackup: %s: %s", e.Kind, e.Msg) }

// Unwrap returns the kind.
func (e *Error) Unwrap() error { return e.Kind }

func errorf(kind error, format string, args ...any) error {
	return &Error{Kind: kind, Msg: fmt.Sprintf(format, args...)}
}
