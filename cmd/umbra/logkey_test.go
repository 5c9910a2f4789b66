package main

import (
	"strings"
	"testing"

	"github.com/umbra-e2ee/umbra/internal/node/nodetest"
	"github.com/umbra-e2ee/umbra/pkg/kt"
)

// TestAdminLogKeyRotation: the operator rotates the log key with the real binary.
// `umbra admin rotate-log-key` prints both keys as --log-key takes them, `umbra card
// log-key` then lists both and a checkpoint each verifies; `umbra kt audit` with the
// old key alone passes during the overlap; after `umbra admin retire-log-key`, the old
// key alone is refused, the new one passes, and the audit across the rotation, given
// both, passes. Without the admin credential nothing changes.
func TestAdminLogKeyRotation(t *testing.T) {
	c := startCLIUser(t)
	server := []string{"--server", c.n.GRPC}
	run := func(args ...string) cliResult {
		t.Helper()
		return c.run("", nil, args...)
	}
	ok := func(args ...string) string {
		t.Helper()
		r := run(args...)
		if r.exit != 0 {
			t.Fatalf("umbra %v exited %d\nstdout: %s\nstderr: %s", args, r.exit, r.stdout, r.stderr)
		}
		return r.stdout
	}
	// signingKeys reads the keys `umbra card log-key` prints on its second line, and
	// checks the checkpoint it prints with each.
	signingKeys := func() []string {
		t.Helper()
		out := ok(append([]string{"card", "log-key"}, server...)...)
		keys := strings.Split(strings.Split(out, "\n")[1], ",")
		note := out[strings.Index(out, "entries\n")+len("entries\n"):]
		for _, k := range keys {
			if _, err := kt.OpenCheckpoint([]byte(note), k); err != nil {
				t.Fatalf("the printed checkpoint with the printed key %q: %v\n%s", k, err, out)
			}
		}
		return keys
	}
	ok("login", "alice")
	before := signingKeys()
	if len(before) != 1 {
		t.Fatalf("before a rotation: %d keys", len(before))
	}
	oldKey := before[0]

	if r := run(append([]string{"admin", "rotate-log-key", "--admin-token", "wrong"}, server...)...); r.exit == 0 || !strings.Contains(r.stderr, "Unauthenticated") {
		t.Errorf("rotate-log-key with a wrong credential: exit %d, %s", r.exit, r.stderr)
	}
	if got := signingKeys(); len(got) != 1 {
		t.Fatalf("a refused rotation changed the keys: %v", got)
	}
	out := ok(append([]string{"admin", "rotate-log-key", "--admin-token", nodetest.Admin}, server...)...)
	during := signingKeys()
	if len(during) != 2 || during[0] != oldKey {
		t.Fatalf("during the rotation, umbra card log-key lists %v; want the old key and a new one", during)
	}
	newKey := during[1]
	wantIn(t, "umbra admin rotate-log-key", out, "new log key "+newKey, oldKey+","+newKey, "umbra admin retire-log-key")
	ok(append([]string{"kt", "audit", "--log-key", oldKey}, server...)...)

	out = ok(append([]string{"admin", "retire-log-key", "--admin-token", nodetest.Admin, "--key", oldKey}, server...)...)
	wantIn(t, "umbra admin retire-log-key", out, "log key "+oldKey, "retired", newKey)
	if got := signingKeys(); len(got) != 1 || got[0] != newKey {
		t.Fatalf("after the retirement, umbra card log-key lists %v; want the new key", got)
	}
	wantIn(t, "umbra card log-key", ok(append([]string{"card", "log-key"}, server...)...), "retired log keys", oldKey)
	if r := run(append([]string{"kt", "audit", "--log-key", oldKey}, server...)...); r.exit == 0 || !strings.Contains(r.stderr, "unknown") {
		t.Errorf("an audit with the retired key alone: exit %d, %s; want refused, unknown log key", r.exit, r.stderr)
	}
	ok(append([]string{"kt", "audit", "--log-key", oldKey + "," + newKey}, server...)...)
	if r := run(append([]string{"admin", "retire-log-key", "--admin-token", nodetest.Admin, "--key", newKey}, server...)...); r.exit == 0 || !strings.Contains(r.stderr, "only key") {
		t.Errorf("retiring the only key: exit %d, %s", r.exit, r.stderr)
	}
}
