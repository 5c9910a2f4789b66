package main

import (
	"strings"
	"testing"
)

// checkDemoOutput checks that a run of umbra demo told the whole story: every step
// printed what the server stored next to what the clients read, and the clients read
// what was written.
func checkDemoOutput(t *testing.T, out string) {
	t.Helper()
	for _, want := range []string{
		`server stored:  conversation d_`,
		`bob read:       "hello bob, only you can read this"`,
		`bob read:  message 1 (`,
		`"sent with my new key"`,
	} {
		if !strings.Contains(out, want) {
			t.Errorf("umbra demo printed no %q\n%s", want, out)
		}
	}
	if strings.Contains(out, "only you can read this") && strings.Count(out, "only you can read this") != 3 {
		t.Errorf("the plaintext appears %d times; want 3 (written, read, read after rotation)\n%s", strings.Count(out, "only you can read this"), out)
	}
}
