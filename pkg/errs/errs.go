// Package errs holds the sentinel errors that stores and domain code return. It does not
// import gRPC: package errstatus turns the kinds into gRPC statuses, so a store that
// returns them depends on no RPC library.
//
// Domain code wraps a sentinel with a message for the caller:
//
//	return errs.Invalidf("identity %q is longer than %d bytes", id, max)
//
// and the server's error interceptor calls errstatus.Status, so no handler builds a
// status itself.
package errs

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"syscall"

	"google.golang.org/protobuf/proto"
)

// The kinds of failure. Each maps to one gRPC code (errstatus).
var (
	ErrInvalid         = errors.New("invalid argument")
	ErrNotFound        = errors.New("not found")
	ErrExists          = errors.New("already exists")
	ErrPermission      = errors.New("permission denied")
	ErrUnauthenticated = errors.New("unauthenticated")
	ErrConflict        = errors.New("conflict")
	ErrPrecondition    = errors.New("failed precondition")
	ErrExhausted       = errors.New("resource exhausted")
	ErrUnavailable     = errors.New("unavailable")
	ErrTooLarge        = errors.New("too large")
	// ErrOutOfRange is a position past the end of something that grows (a log index
	// or size beyond the log): the same request may succeed once it has grown.
	ErrOutOfRange = errors.New("out of range")
	// ErrStorageFull is a write refused for lack of space (a full disk or a quota):
	// nothing was written, so the same request may be retried once there is room.
	ErrStorageFull = errors.New("storage full")
	// ErrDamaged is stored data that failed an integrity check: a record whose checksum
	// does not match, a file whose pages are damaged. Its message names the store, the
	// bucket and the key, for the operator's log; the caller gets DATA_LOSS with
	// DamagedMessage instead, never the altered bytes.
	ErrDamaged = errors.New("stored data is damaged")
)

// DamagedMessage is what a caller is told when the data its request needs is damaged.
// The details (which store, bucket and key) are internal: they go to the log.
const DamagedMessage = "stored data this request needs is damaged and was not served; the operator has been alerted in the service's log and must restore the store from a backup"

// Error is a sentinel kind with a message for the caller and optional status details.
type Error struct {
	kind    error
	msg     string
	details []proto.Message
}

func (e *Error) Error() string { return e.msg }

// Unwrap returns the kind, so errors.Is(err, ErrInvalid) holds.
func (e *Error) Unwrap() error { return e.kind }

// WithDetails returns a copy of e that carries details into the gRPC status, for errors
// a client acts on (the current epoch of a group, the attempts left on a backup).
func (e *Error) WithDetails(details ...proto.Message) *Error {
	c := *e
	c.details = append(append([]proto.Message(nil), e.details...), details...)
	return &c
}

// Details returns the details given with WithDetails, for the gRPC status (errstatus).
func (e *Error) Details() []proto.Message { return slices.Clone(e.details) }

func newf(kind error, format string, args ...any) *Error {
	return &Error{kind: kind, msg: fmt.Sprintf(format, args...)}
}

// Invalidf reports a request that is malformed or out of range.
func Invalidf(format string, args ...any) *Error { return newf(ErrInvalid, format, args...) }

// NotFoundf reports a missing resource.
func NotFoundf(format string, args ...any) *Error { return newf(ErrNotFound, format, args...) }

// Existsf reports a resource that already exists.
func Existsf(format string, args ...any) *Error { return newf(ErrExists, format, args...) }

// Permissionf reports an authenticated caller that may not do this.
func Permissionf(format string, args ...any) *Error { return newf(ErrPermission, format, args...) }

// Unauthenticatedf reports a missing, malformed or invalid credential.
func Unauthenticatedf(format string, args ...any) *Error {
	return newf(ErrUnauthenticated, format, args...)
}

// Conflictf reports a lost compare-and-swap: the caller should reload and retry.
func Conflictf(format string, args ...any) *Error { return newf(ErrConflict, format, args...) }

// Preconditionf reports a request the current state does not allow.
func Preconditionf(format string, args ...any) *Error {
	return newf(ErrPrecondition, format, args...)
}

// Exhaustedf reports a rate limit or quota that has run out.
func Exhaustedf(format string, args ...any) *Error { return newf(ErrExhausted, format, args...) }

// Unavailablef reports a dependency that cannot answer now; the caller may retry.
func Unavailablef(format string, args ...any) *Error {
	return newf(ErrUnavailable, format, args...)
}

// Damagedf reports stored data that failed an integrity check; the message is for the
// log, not the caller (errstatus.Status replaces it with DamagedMessage).
func Damagedf(format string, args ...any) *Error { return newf(ErrDamaged, format, args...) }

// TooLargef reports a request over a size limit.
func TooLargef(format string, args ...any) *Error { return newf(ErrTooLarge, format, args...) }

// OutOfRangef returns an ErrOutOfRange error with a message.
func OutOfRangef(format string, args ...any) *Error { return newf(ErrOutOfRange, format, args...) }

// StorageFullf reports a write that failed for lack of space (NoSpace), in words that
// say what to retry: a service whose request carries an idempotency key names it.
func StorageFullf(format string, args ...any) *Error {
	return newf(ErrStorageFull, format, args...)
}

// StorageFullMessage is what a caller reads when a write failed for lack of space and
// the service said nothing more specific (StorageFullf).
const StorageFullMessage = "the server's storage is full: nothing was written, and retrying the same request later is safe"

// NoSpace reports whether err, anywhere in its chain, is a write refused for lack of
// space: the operating system's ENOSPC (no space left on device) or EDQUOT (disk quota
// exceeded). bbolt flattens the error of growing its file into text ("file resize
// error: %s"), so the text is matched as well.
func NoSpace(err error) bool {
	if err == nil {
		return false
	}
	if errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EDQUOT) {
		return true
	}
	msg := err.Error()
	return strings.Contains(msg, syscall.ENOSPC.Error()) || strings.Contains(msg, syscall.EDQUOT.Error())
}
