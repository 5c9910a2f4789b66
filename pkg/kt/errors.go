package kt

import (
	"errors"
	"fmt"
)

// The kinds of verification errors. Every error of this package's checks wraps one.
var (
	// ErrMalformed is input that is not in the format at all: a checkpoint, leaf, map
	// value or proof that does not parse, is not canonical, or has the wrong sizes.
	ErrMalformed = errors.New("kt: malformed")
	// ErrBadSignature is a checkpoint whose signature by the log key does not verify.
	ErrBadSignature = errors.New("kt: bad checkpoint signature")
	// ErrUnknownLogKey is a checkpoint signed by no log key the verifier knows.
	ErrUnknownLogKey = errors.New("kt: unknown log key")
	// ErrInconsistent is two checkpoints that cannot both be views of one append-only
	// log: a consistency proof that fails, the same size with two roots, or a size that
	// went down.
	ErrInconsistent = errors.New("kt: inconsistent checkpoints")
	// ErrBadProof is an inclusion or map proof that does not lead to the committed
	// root, or a lookup whose parts disagree with each other.
	ErrBadProof = errors.New("kt: bad proof")
	// ErrBadCosignature is a witness's cosignature that does not verify, or that was
	// made in the future.
	ErrBadCosignature = errors.New("kt: bad cosignature")
	// ErrNotWitnessed is a checkpoint without the cosignatures a client's witness
	// policy requires.
	ErrNotWitnessed = errors.New("kt: checkpoint not witnessed")
)

func malformedf(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrMalformed, fmt.Sprintf(format, args...))
}

func badProoff(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrBadProof, fmt.Sprintf(format, args...))
}
