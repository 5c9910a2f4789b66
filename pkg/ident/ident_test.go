package ident

import (
	"errors"
	"strings"
	"testing"

	"github.com/umbra-e2ee/umbra/pkg/errs"
)

func TestValidUser(t *testing.T) {
	good := "u_" + strings.Repeat("a2", 16)
	if err := ValidUser("identity", good); err != nil {
		t.Fatalf("ValidUser(%q) = %v", good, err)
	}
	for name, s := range map[string]string{
		"empty":          "",
		"too short":      "u_abc",
		"too long":       good + "a",
		"group prefix":   "g_" + strings.Repeat("a", 32),
		"upper case":     "u_" + strings.Repeat("A", 32),
		"digit 1":        "u_" + strings.Repeat("1", 32),
		"raw user id":    "alice@example.com" + strings.Repeat("x", 17),
		"non-ascii body": "u_" + strings.Repeat("é", 16),
	} {
		t.Run(name, func(t *testing.T) {
			err := ValidUser("identity", s)
			if !errors.Is(err, errs.ErrInvalid) {
				t.Fatalf("ValidUser(%q) = %v, want ErrInvalid", s, err)
			}
			if !strings.Contains(err.Error(), "identity") {
				t.Errorf("message %q does not name the field", err)
			}
		})
	}
	if err := ValidGroup("group_id", "g_"+strings.Repeat("z", 32)); err != nil {
		t.Errorf("ValidGroup = %v", err)
	}
}
