package main

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/umbra-e2ee/umbra/pkg/node/nodetest"
)

// TestGroupCommands runs the group subcommands of the real binary against a node in
// the test process: alice creates a group with bob, carol asks to join and is approved,
// the messages are read back decrypted; bob is removed and does not receive what is
// written after; the mode goes to optional for a plaintext message; an invitation is
// accepted in a second group; listing, roles, ownership and deletion; history shared
// with a later member; bans and the last member's departure.
func TestGroupCommands(t *testing.T) {
	if testing.Short() {
		t.Skip("skipped with -short: builds the umbra binary and runs it as a subprocess")
	}
	bin := e2eBinary(t)
	n := nodetest.Start(t)
	app := n.NewApp(t)
	work := t.TempDir()
	base := append(e2eEnv(os.Environ()),
		"UMBRA_API_KEY="+app.APIKey,
		"UMBRA_SERVER="+n.GRPC,
		"UMBRA_NO_PASSPHRASE=true",
		"UMBRA_HOME="+filepath.Join(work, "home"),
	)
	umbra := func(user string, args ...string) (stdout, stderr string, exit int) {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		cmd := exec.CommandContext(ctx, bin, args...)
		cmd.Env = append(append([]string(nil), base...), "UMBRA_USER="+user)
		var out, errOut bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &errOut
		err := cmd.Run()
		var exitErr *exec.ExitError
		if err != nil && !errors.As(err, &exitErr) {
			t.Fatalf("umbra %v: %v", args, err)
		}
		return out.String(), errOut.String(), cmd.ProcessState.ExitCode()
	}
	ok := func(user string, args ...string) string {
		t.Helper()
		out, errOut, code := umbra(user, args...)
		if code != 0 {
			t.Fatalf("%s: umbra %v exited %d\nstdout: %s\nstderr: %s", user, args, code, out, errOut)
		}
		return out
	}
	fails := func(want, user string, args ...string) {
		t.Helper()
		out, errOut, code := umbra(user, args...)
		if code == 0 || !strings.Contains(errOut, want) {
			t.Fatalf("%s: umbra %v exited %d with %q %q; want a failure saying %q", user, args, code, out, errOut, want)
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
	// listensFor runs a listen command until what it printed, together, holds every
	// want: group events (joins, deletion, shared keys) reach the streams through the
	// group service's outbox, a moment after the call that made them returned.
	listensFor := func(what, user string, args []string, want ...string) {
		t.Helper()
		var seen strings.Builder
		for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(50 * time.Millisecond) {
			seen.WriteString(ok(user, args...))
			missing := slices.ContainsFunc(want, func(w string) bool { return !strings.Contains(seen.String(), w) })
			if !missing {
				return
			}
			if time.Now().After(deadline) {
				contains(what+" (for 10 s)", seen.String(), want...)
			}
		}
	}
	for _, u := range []string{"alice", "bob", "carol"} {
		ok(u, "login", u)
		ok(u, "keys", "init")
	}

	contains("create", ok("alice", "group", "create", "--members", "bob", "family"), "group family created", "2 members", "encryption required")
	ok("alice", "group", "send", "family", "hello family")
	contains("bob listens", ok("bob", "group", "listen", "--from-start", "--until-caught-up", "family"), "alice: hello family")

	contains("join", ok("carol", "group", "join", "family"), "asked to join family")
	contains("requests", ok("alice", "group", "approve", "family"), "carol asked to join")
	contains("approve", ok("alice", "group", "approve", "family", "carol"), "carol is a member of family")
	ok("carol", "group", "send", "family", "hi from carol")
	listensFor("alice listens", "alice", []string{"group", "listen", "--from-start", "--until-caught-up", "family"},
		"me: hello family", "carol: hi from carol", "carol joined")

	contains("remove", ok("alice", "group", "remove", "family", "bob"), "removed bob")
	ok("alice", "group", "send", "family", "bob is gone")
	bobSees := ok("bob", "group", "listen", "--until-caught-up", "family")
	if strings.Contains(bobSees, "bob is gone") {
		t.Fatalf("the removed member received a later message:\n%s", bobSees)
	}
	contains("carol listens", ok("carol", "group", "listen", "--from-start", "--until-caught-up", "family"), "alice: bob is gone")
	fails("PermissionDenied", "bob", "group", "send", "family", "still here?")

	fails("FailedPrecondition", "alice", "group", "send", "--plaintext", "family", "in the clear")
	contains("mode", ok("alice", "group", "mode", "family", "optional"), "encryption optional")
	ok("alice", "group", "send", "--plaintext", "family", "in the clear")
	contains("carol listens", ok("carol", "group", "listen", "--until-caught-up", "family"), "alice: in the clear")

	// An invitation to a second group.
	ok("alice", "group", "create", "club")
	contains("invite", ok("alice", "group", "invite", "--ttl", "1h", "club", "bob"), "invited bob to club")
	contains("invitations", ok("bob", "group", "accept"), "alice invited you to g_")
	contains("accept", ok("bob", "group", "accept", "club"), "bob is a member of club")
	ok("bob", "group", "send", "club", "thanks for the invite")
	contains("alice listens", ok("alice", "group", "listen", "--from-start", "--until-caught-up", "club"), "bob: thanks for the invite")

	// Listing, roles, ownership and deletion, in the second group.
	contains("bob lists", ok("bob", "group", "list"), "member, 2 members, owner alice, encryption required")
	if out := ok("bob", "group", "list"); strings.Count(out, "g_") != 1 {
		t.Fatalf("bob's groups:\n%s\nwant only club: he was removed from family", out)
	}
	fails("PermissionDenied", "bob", "group", "role", "club", "alice", "member")
	contains("role", ok("alice", "group", "role", "club", "bob", "admin"), "bob is admin of club now")
	contains("bob lists", ok("bob", "group", "list"), "admin, 2 members, owner alice")
	fails("want admin or member", "alice", "group", "role", "club", "bob", "owner")
	fails("PermissionDenied", "bob", "group", "delete", "club")
	contains("transfer", ok("alice", "group", "transfer", "club", "bob"), "bob owns club now")
	contains("alice lists", ok("alice", "group", "list"), "admin, 2 members, owner bob")
	fails("PermissionDenied", "alice", "group", "role", "club", "bob", "member")
	contains("delete", ok("bob", "group", "delete", "club"), "group club deleted")
	listensFor("alice listens", "alice", []string{"group", "listen", "--until-caught-up", "club"}, "the group was deleted")
	fails("NotFound", "alice", "group", "send", "club", "anyone?")

	// Shared history: a later member reads older messages once a member shares their keys.
	ok("alice", "group", "create", "--history", "shared", "book")
	ok("alice", "group", "send", "book", "chapter one")
	ok("alice", "group", "add", "book", "carol")
	contains("carol's history before the share", ok("carol", "group", "history", "book"), "alice: (cannot read this message")
	contains("share", ok("alice", "group", "share", "book", "carol"), "shared 1 older keys of book with carol")
	listensFor("carol listens", "carol", []string{"group", "listen", "--from-start", "--until-caught-up", "book"}, "alice shared older keys with you")
	contains("carol's history after the share", ok("carol", "group", "history", "book"), "alice: chapter one")
	contains("history since joining", ok("carol", "group", "history", "family"), "alice: bob is gone")
	if out := ok("carol", "group", "history", "family"); strings.Contains(out, "hello family") {
		t.Fatalf("carol's history of family (since-join) shows a message from before she joined:\n%s", out)
	}
	fails("FailedPrecondition", "alice", "group", "share", "family", "carol")

	contains("ban", ok("alice", "group", "ban", "family", "carol"), "banned carol", "removed")
	fails("PermissionDenied", "carol", "group", "join", "family")
	contains("lift", ok("alice", "group", "ban", "--lift", "family", "carol"), "lifted the ban")
	contains("leave", ok("alice", "group", "leave", "family"), "the group is deleted")
	ok("alice", "group", "delete", "book")
	contains("no groups left", ok("alice", "group", "list"), "no groups")

	if _, errOut, code := umbra("alice", "group", "add", "family"); code != 2 || !strings.Contains(errOut, "usage: umbra group add") {
		t.Errorf("group add without a user exited %d with %q; want 2 and the usage", code, errOut)
	}
	fails("want required, optional or off", "alice", "group", "mode", "club", "sometimes")
}
