package main

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/umbra-e2ee/umbra/pkg/node/nodetest"
)

// TestKeysReset: alice loses her phone, her only device. On a new one, `keys init`
// refuses (her card is active) and says how to get back in; `keys reset` does, with a
// grant the CLI gets with the API key (development) or one passed with --grant, and
// bob sees the reset in her card history. After a revocation, `card publish` (the
// token alone) is refused; a reset without an API key or grant says what it needs, and
// a grant works once.
func TestKeysReset(t *testing.T) {
	if testing.Short() {
		t.Skip("skipped with -short: builds the umbra binary and runs it as a subprocess")
	}
	bin := e2eBinary(t)
	n := nodetest.Start(t)
	app := n.NewApp(t)
	work := t.TempDir()
	base := append(e2eEnv(os.Environ()),
		"UMBRA_SERVER="+n.GRPC,
		"UMBRA_PASSPHRASE=a local keystore passphrase",
	)
	withKey := []string{"UMBRA_API_KEY=" + app.APIKey}
	type result struct {
		stdout, stderr string
		exit           int
	}
	// umbra runs the binary on device (a home folder of its own) with extra
	// environment variables.
	umbra := func(device string, env []string, args ...string) result {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		cmd := exec.CommandContext(ctx, bin, args...)
		cmd.Dir = work
		cmd.Env = append(append(append([]string(nil), base...), "UMBRA_HOME="+filepath.Join(work, device)), env...)
		var stdout, stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		err := cmd.Run()
		var exitErr *exec.ExitError
		if err != nil && !errors.As(err, &exitErr) {
			t.Fatalf("umbra %v: %v", args, err)
		}
		return result{stdout.String(), stderr.String(), cmd.ProcessState.ExitCode()}
	}
	ok := func(device string, env []string, args ...string) string {
		t.Helper()
		r := umbra(device, env, args...)
		if r.exit != 0 {
			t.Fatalf("umbra %v exited %d\nstdout: %s\nstderr: %s", args, r.exit, r.stdout, r.stderr)
		}
		return r.stdout
	}
	fails := func(device string, env []string, want []string, args ...string) {
		t.Helper()
		r := umbra(device, env, args...)
		for _, w := range want {
			if r.exit != 1 || !strings.Contains(r.stderr, w) {
				t.Fatalf("umbra %v exited %d with %q; want 1 and %q", args, r.exit, r.stderr, w)
			}
		}
	}
	contains := func(what, out string, want ...string) {
		t.Helper()
		for _, w := range want {
			if !strings.Contains(out, w) {
				t.Fatalf("%s:\n%s\nwant %q in it", what, out, w)
			}
		}
	}

	ok("phone", withKey, "login", "alice")
	ok("phone", withKey, "keys", "init")
	ok("desk", withKey, "login", "bob")
	ok("desk", withKey, "keys", "init")
	msg := filepath.Join(work, "msg.txt")
	if err := os.WriteFile(msg, []byte(ok("phone", withKey, "encrypt", "--to", "bob", "before the loss")), 0o600); err != nil {
		t.Fatal(err)
	}
	contains("bob decrypts", ok("desk", withKey, "decrypt", "--from", "alice", msg), "before the loss")

	// The phone is lost. A new phone: init refuses and says what to do.
	ok("newphone", withKey, "login", "alice")
	fails("newphone", withKey, []string{"already registered", "umbra keys reset"}, "keys", "init")
	fails("newphone", withKey, []string{"PermissionDenied", "reset_grant is malformed"}, "keys", "reset", "--grant", "not-a-grant")
	out := ok("newphone", withKey, "keys", "reset")
	contains("keys reset", out, "keys reset for alice", "the card that was active, if any, is revoked",
		"reset        published under a reset grant from the app backend")
	hist := ok("desk", withKey, "card", "history", "alice")
	contains("bob's view of alice's cards", hist, "2 cards, newest first", "reset        published under a reset grant", "CARD_STATUS_REVOKED")
	if strings.Count(hist, "reset        published") != 1 {
		t.Errorf("alice's history marks %d cards as reset; want 1:\n%s", strings.Count(hist, "reset        published"), hist)
	}
	contains("bob still reads alice's old message", ok("desk", withKey, "decrypt", "--from", "alice", msg), "before the loss")
	ok("desk", withKey, "send", "--to", "alice", "welcome back")
	contains("the new phone reads bob", ok("newphone", withKey, "listen", "--from-start", "--until-caught-up"), ": welcome back")

	// A revocation with the token alone; a new card after it is a reset.
	contains("revoke", ok("newphone", withKey, "card", "revoke"), "umbra keys reset starts afresh")
	fails("newphone", withKey, []string{"a reset grant is required", "umbra keys reset"}, "card", "publish")
	fails("newphone", nil, []string{"a reset needs a grant from the app backend: pass --grant", "API key"}, "keys", "reset")
	grant := app.ResetGrant(t, app.User(t, "alice"))
	contains("reset with --grant", ok("newphone", nil, "keys", "reset", "--grant", grant),
		"keys reset for alice", "the older private keys stay in this keystore")
	fails("newphone", nil, []string{"was already used"}, "keys", "reset", "--grant", grant)
	contains("history", ok("desk", withKey, "card", "history", "alice"), "3 cards, newest first")
}
