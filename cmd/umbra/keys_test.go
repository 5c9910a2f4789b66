package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestKeysReset: alice loses her phone, her only device. On a new one, `keys init`
// refuses (her card is active) and says how to get back in; `keys reset` does, with a
// grant the CLI gets with the API key (development) or one passed with --grant, and
// bob sees the reset in her card history. After a revocation, `card publish` (the
// token alone) is refused; a reset without an API key or grant says what it needs, and
// a grant works once.
func TestKeysReset(t *testing.T) {
	c := startCLINode(t)
	c.env = append(c.env, "UMBRA_SERVER="+c.n.GRPC, "UMBRA_PASSPHRASE=a local keystore passphrase")
	app, work := c.app, c.work
	withKey := []string{"UMBRA_API_KEY=" + app.APIKey}
	// umbra runs the binary on device (a home folder of its own) with extra
	// environment variables.
	umbra := func(device string, env []string, args ...string) cliResult { return c.on(device, "", env, args...) }
	ok := func(device string, env []string, args ...string) string {
		return c.succeeded(c.on(device, "", env, args...), args)
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

	ok("phone", withKey, "login", "alice")
	ok("phone", withKey, "keys", "init")
	ok("desk", withKey, "login", "bob")
	ok("desk", withKey, "keys", "init")
	msg := filepath.Join(work, "msg.txt")
	if err := os.WriteFile(msg, []byte(ok("phone", withKey, "encrypt", "--to", "bob", "before the loss")), 0o600); err != nil {
		t.Fatal(err)
	}
	wantIn(t, "bob decrypts", ok("desk", withKey, "decrypt", "--from", "alice", msg), "before the loss")

	// The phone is lost. A new phone: init refuses and says what to do.
	ok("newphone", withKey, "login", "alice")
	fails("newphone", withKey, []string{"already registered", "umbra keys reset"}, "keys", "init")
	fails("newphone", withKey, []string{"PermissionDenied", "reset_grant is malformed"}, "keys", "reset", "--grant", "not-a-grant")
	out := ok("newphone", withKey, "keys", "reset")
	wantIn(t, "keys reset", out, "keys reset for alice", "the card that was active, if any, is revoked",
		"reset        published under a reset grant from the app backend")
	hist := ok("desk", withKey, "card", "history", "alice")
	wantIn(t, "bob's view of alice's cards", hist, "2 cards, newest first", "reset        published under a reset grant", "CARD_STATUS_REVOKED")
	if strings.Count(hist, "reset        published") != 1 {
		t.Errorf("alice's history marks %d cards as reset; want 1:\n%s", strings.Count(hist, "reset        published"), hist)
	}
	wantIn(t, "bob still reads alice's old message", ok("desk", withKey, "decrypt", "--from", "alice", msg), "before the loss")
	// To bob, who pinned alice's old card, the reset is a key change: refused until he
	// accepts it (after comparing safety numbers with alice).
	fails("desk", withKey, []string{"alice's key changed", "umbra trust accept alice"}, "send", "--to", "alice", "welcome back")
	wantIn(t, "bob accepts", ok("desk", withKey, "trust", "accept", "alice"), "accepted alice's new key")
	ok("desk", withKey, "send", "--to", "alice", "welcome back")
	wantIn(t, "the new phone reads bob", ok("newphone", withKey, "listen", "--from-start", "--until-caught-up"), ": welcome back")

	// A revocation with the token alone; a new card after it is a reset.
	wantIn(t, "revoke", ok("newphone", withKey, "card", "revoke"), "umbra keys reset starts afresh")
	fails("newphone", withKey, []string{"a reset grant is required", "umbra keys reset"}, "card", "publish")
	fails("newphone", nil, []string{"a reset needs a grant from the app backend: pass --grant", "API key"}, "keys", "reset")
	grant := app.ResetGrant(t, app.User(t, "alice"))
	wantIn(t, "reset with --grant", ok("newphone", nil, "keys", "reset", "--grant", grant),
		"keys reset for alice", "the older private keys stay in this keystore")
	fails("newphone", nil, []string{"was already used"}, "keys", "reset", "--grant", grant)
	wantIn(t, "history", ok("desk", withKey, "card", "history", "alice"), "3 cards, newest first")
}
