// Package refusal words what the services answer to bad input, the same way in each:
// a quoted value kept short, and a failure of pkg/e2ee's checks as the refusal a caller
// sees.
package refusal

import (
	"errors"

	"github.com/umbra-e2ee/umbra/pkg/e2ee"
	"github.com/umbra-e2ee/umbra/pkg/errs"
)

// maxQuoted is how much of a value a refusal quotes back.
const maxQuoted = 64

// Truncate keeps a refusal short when a caller sent something huge (a value quoted
// back): the first 64 bytes and "...".
func Truncate(s string) string {
	if len(s) > maxQuoted {
		return s[:maxQuoted] + "..."
	}
	return s
}

// E2EE turns a pkg/e2ee failure of what (a card, a commit, a statement) into the
// refusal, keeping its message: TOO_LARGE for input over a limit, INVALID_ARGUMENT
// naming the kind otherwise. Any other error is returned as it is.
func E2EE(what string, err error) error {
	var e *e2ee.Error
	if !errors.As(err, &e) {
		return err
	}
	if errors.Is(err, e2ee.ErrTooLarge) {
		return errs.TooLargef("%s refused: %s", what, e.Msg)
	}
	return errs.Invalidf("%s refused (%s): %s", what, e.Kind, e.Msg)
}
