package kinderr_test

import (
	"errors"
	"fmt"
	"testing"

	"github.com/umbra-e2ee/umbra/pkg/e2ee"
	"github.com/umbra-e2ee/umbra/pkg/keybackup"
)

// TestPackagesErrorsReadAsBefore pins what callers see of the errors of the packages
// that use kinderr: their text, their kind for errors.Is, and each package's own *Error
// for errors.As, which does not match the other package's.
func TestPackagesErrorsReadAsBefore(t *testing.T) {
	t.Parallel()
	e2eeErr := fmt.Errorf("context: %w", &e2ee.Error{Kind: e2ee.ErrMalformed, Msg: "3 bytes"})
	backupErr := fmt.Errorf("context: %w", &keybackup.Error{Kind: keybackup.ErrInvalid, Msg: "3 bytes"})
	for _, tc := range []struct {
		name     string
		err      error
		kind     error
		text     string
		isE2EE   bool
		isBackup bool
	}{
		{"e2ee", e2eeErr, e2ee.ErrMalformed, "context: e2ee: malformed: 3 bytes", true, false},
		{"keybackup", backupErr, keybackup.ErrInvalid, "context: keybackup: invalid input: 3 bytes", false, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := tc.err.Error(); got != tc.text {
				t.Errorf("message %q; want %q", got, tc.text)
			}
			if !errors.Is(tc.err, tc.kind) {
				t.Error("errors.Is does not find the kind")
			}
			var a *e2ee.Error
			var b *keybackup.Error
			if errors.As(tc.err, &a) != tc.isE2EE || errors.As(tc.err, &b) != tc.isBackup {
				t.Errorf("errors.As: e2ee %v, keybackup %v; want %v, %v", a != nil, b != nil, tc.isE2EE, tc.isBackup)
			}
		})
	}
}
