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
		`epoch 1 committed by alice`,
		`after the removal: epoch 1, 2 members, rotation required: true`,
		`after alice's SDK rotated and resent: epoch 2, 2 members, rotation required: false`,
		`bob read:  group message 2, epoch 2`,
		`carol:  refused: `,
		`laptop:  a wrong password: `,
		`bob's laptop read:  message 1 `,
		`bob's laptop read:  group message 2, epoch 2 (`,
	} {
		if !strings.Contains(out, want) {
			t.Errorf("umbra demo printed no %q\n%s", want, out)
		}
	}
	if n := strings.Count(out, demoHello); n != 4 {
		t.Errorf("the first message appears %d times; want 4 (written, read, read after the rotation, read on the restored laptop)\n%s", n, out)
	}
	if n := strings.Count(out, demoAfterRemoval); n != 2 {
		t.Errorf("the message after carol's removal appears %d times; want 2 (bob, bob's laptop): carol must not read it\n%s", n, out)
	}
}
