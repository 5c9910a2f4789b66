package main

import (
	"slices"
	"strings"
	"testing"
	"time"
)

// TestGroupCommands runs the group subcommands of the real binary against a node in
// the test process: alice creates a group with bob, carol asks to join and is approved,
// the messages are read back decrypted; bob is removed and does not receive what is
// written after; the mode goes to optional for a plaintext message; an invitation is
// accepted in a second group; listing, roles, ownership and deletion; history shared
// with a later member; bans and the last member's departure.
func TestGroupCommands(t *testing.T) {
	c := startCLIUser(t)
	umbra := func(user string, args ...string) (stdout, stderr string, exit int) {
		t.Helper()
		r := c.run("", []string{"UMBRA_USER=" + user}, args...)
		return r.stdout, r.stderr, r.exit
	}
	ok := func(user string, args ...string) string {
		t.Helper()
		return c.succeeded(c.run("", []string{"UMBRA_USER=" + user}, args...), args)
	}
	fails := func(want, user string, args ...string) {
		t.Helper()
		out, errOut, code := umbra(user, args...)
		if code == 0 || !strings.Contains(errOut, want) {
			t.Fatalf("%s: umbra %v exited %d with %q %q; want a failure saying %q", user, args, code, out, errOut, want)
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
				wantIn(t, what+" (for 10 s)", seen.String(), want...)
			}
		}
	}
	for _, u := range []string{"alice", "bob", "carol"} {
		ok(u, "login", u)
		ok(u, "keys", "init")
	}

	wantIn(t, "create", ok("alice", "group", "create", "--members", "bob", "family"), "group family created", "2 members", "encryption required")
	ok("alice", "group", "send", "family", "hello family")
	wantIn(t, "bob listens", ok("bob", "group", "listen", "--from-start", "--until-caught-up", "family"), "alice: hello family")

	wantIn(t, "join", ok("carol", "group", "join", "family"), "asked to join family")
	wantIn(t, "requests", ok("alice", "group", "approve", "family"), "carol asked to join")
	wantIn(t, "approve", ok("alice", "group", "approve", "family", "carol"), "carol is a member of family")
	wantIn(t, "members", ok("bob", "group", "members", "family"), "family: 3 members, verified from 2 signed membership statements", "alice  owner", "bob  member", "carol  member")
	ok("carol", "group", "send", "family", "hi from carol")
	listensFor("alice listens", "alice", []string{"group", "listen", "--from-start", "--until-caught-up", "family"},
		"me: hello family", "carol: hi from carol", "carol joined")

	wantIn(t, "remove", ok("alice", "group", "remove", "family", "bob"), "removed bob")
	ok("alice", "group", "send", "family", "bob is gone")
	bobSees := ok("bob", "group", "listen", "--until-caught-up", "family")
	if strings.Contains(bobSees, "bob is gone") {
		t.Fatalf("the removed member received a later message:\n%s", bobSees)
	}
	wantIn(t, "carol listens", ok("carol", "group", "listen", "--from-start", "--until-caught-up", "family"), "alice: bob is gone")
	fails("PermissionDenied", "bob", "group", "send", "family", "still here?")

	fails("FailedPrecondition", "alice", "group", "send", "--plaintext", "family", "in the clear")
	wantIn(t, "mode", ok("alice", "group", "mode", "family", "optional"), "encryption optional")
	ok("alice", "group", "send", "--plaintext", "family", "in the clear")
	wantIn(t, "carol listens", ok("carol", "group", "listen", "--until-caught-up", "family"), "alice: in the clear")

	// An invitation to a second group.
	ok("alice", "group", "create", "club")
	wantIn(t, "invite", ok("alice", "group", "invite", "--ttl", "1h", "club", "bob"), "invited bob to club")
	wantIn(t, "invitations", ok("bob", "group", "accept"), "alice invited you to g_")
	wantIn(t, "accept", ok("bob", "group", "accept", "club"), "bob is a member of club")
	ok("bob", "group", "send", "club", "thanks for the invite")
	wantIn(t, "alice listens", ok("alice", "group", "listen", "--from-start", "--until-caught-up", "club"), "bob: thanks for the invite")

	// Listing, roles, ownership and deletion, in the second group.
	wantIn(t, "bob lists", ok("bob", "group", "list"), "member, 2 members, owner alice, encryption required")
	if out := ok("bob", "group", "list"); strings.Count(out, "g_") != 1 {
		t.Fatalf("bob's groups:\n%s\nwant only club: he was removed from family", out)
	}
	fails("PermissionDenied", "bob", "group", "role", "club", "alice", "member")
	wantIn(t, "role", ok("alice", "group", "role", "club", "bob", "admin"), "bob is admin of club now")
	wantIn(t, "bob lists", ok("bob", "group", "list"), "admin, 2 members, owner alice")
	fails("want admin or member", "alice", "group", "role", "club", "bob", "owner")
	fails("PermissionDenied", "bob", "group", "delete", "club")
	wantIn(t, "transfer", ok("alice", "group", "transfer", "club", "bob"), "bob owns club now")
	wantIn(t, "alice lists", ok("alice", "group", "list"), "admin, 2 members, owner bob")
	fails("PermissionDenied", "alice", "group", "role", "club", "bob", "member")
	wantIn(t, "delete", ok("bob", "group", "delete", "club"), "group club deleted")
	listensFor("alice listens", "alice", []string{"group", "listen", "--until-caught-up", "club"}, "the group was deleted")
	fails("NotFound", "alice", "group", "send", "club", "anyone?")

	// Shared history: a later member reads older messages once a member shares their keys.
	ok("alice", "group", "create", "--history", "shared", "book")
	ok("alice", "group", "send", "book", "chapter one")
	ok("alice", "group", "add", "book", "carol")
	wantIn(t, "carol's history before the share", ok("carol", "group", "history", "book"), "alice: (cannot read this message")
	wantIn(t, "share", ok("alice", "group", "share", "book", "carol"), "shared 1 older keys of book with carol")
	listensFor("carol listens", "carol", []string{"group", "listen", "--from-start", "--until-caught-up", "book"}, "alice shared older keys with you")
	wantIn(t, "carol's history after the share", ok("carol", "group", "history", "book"), "alice: chapter one")
	wantIn(t, "history since joining", ok("carol", "group", "history", "family"), "alice: bob is gone")
	if out := ok("carol", "group", "history", "family"); strings.Contains(out, "hello family") {
		t.Fatalf("carol's history of family (since-join) shows a message from before she joined:\n%s", out)
	}
	fails("FailedPrecondition", "alice", "group", "share", "family", "carol")

	wantIn(t, "ban", ok("alice", "group", "ban", "family", "carol"), "banned carol", "removed")
	fails("PermissionDenied", "carol", "group", "join", "family")
	wantIn(t, "lift", ok("alice", "group", "ban", "--lift", "family", "carol"), "lifted the ban")
	wantIn(t, "leave", ok("alice", "group", "leave", "family"), "the group is deleted")
	ok("alice", "group", "delete", "book")
	wantIn(t, "no groups left", ok("alice", "group", "list"), "no groups")

	if _, errOut, code := umbra("alice", "group", "add", "family"); code != 2 || !strings.Contains(errOut, "usage: umbra group add") {
		t.Errorf("group add without a user exited %d with %q; want 2 and the usage", code, errOut)
	}
	fails("want required, optional or off", "alice", "group", "mode", "club", "sometimes")
}
