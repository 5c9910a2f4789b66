package refusal

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/umbra-e2ee/umbra/pkg/e2ee"
	"github.com/umbra-e2ee/umbra/pkg/errs"
)

func TestTruncate(t *testing.T) {
	long := strings.Repeat("x", 65)
	for _, tc := range []struct{ in, want string }{
		{"", ""},
		{"short", "short"},
		{long[:64], long[:64]},
		{long, long[:64] + "..."},
	} {
		if got := Truncate(tc.in); got != tc.want {
			t.Errorf("Truncate(%d bytes) = %q, want %q", len(tc.in), got, tc.want)
		}
	}
}

func TestE2EE(t *testing.T) {
	_, malformed := e2ee.ParseCard([]byte{1, 2, 3}, nil)
	if !errors.Is(malformed, e2ee.ErrMalformed) {
		t.Fatalf("ParseCard of 3 bytes: %v, want ErrMalformed", malformed)
	}
	var e *e2ee.Error
	errors.As(malformed, &e)
	got := E2EE("card", malformed)
	if !errors.Is(got, errs.ErrInvalid) || got.Error() != fmt.Sprintf("card refused (malformed): %s", e.Msg) {
		t.Errorf("E2EE of a malformed card = %v, want INVALID_ARGUMENT naming the kind", got)
	}
	tooLarge := fmt.Errorf("wrapped: %w", &e2ee.Error{Kind: e2ee.ErrTooLarge, Msg: "over 1 KiB"})
	if got := E2EE("commit", tooLarge); !errors.Is(got, errs.ErrTooLarge) || got.Error() != "commit refused: over 1 KiB" {
		t.Errorf("E2EE of a commit too large = %v, want TOO_LARGE with its message", got)
	}
	other := errors.New("disk on fire")
	if got := E2EE("card", other); got != other {
		t.Errorf("E2EE of another error = %v, want it unchanged", got)
	}
}
