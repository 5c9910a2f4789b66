package main

import (
	"strings"
	"testing"
	"time"

	"github.com/umbra-e2ee/umbra/pkg/kt"
)

// TestCardLogKey: `umbra card log-key` prints the key transparency log key as a
// signed-note verifier key, and the latest checkpoint, which that key verifies and
// which grows to hold a card published through the CLI.
func TestCardLogKey(t *testing.T) {
	c := startCLINode(t)
	c.env = append(c.env, "UMBRA_API_KEY="+c.app.APIKey, "UMBRA_SERVER="+c.n.GRPC, "UMBRA_NO_PASSPHRASE=true", c.home("home"))
	ok := func(args ...string) string {
		t.Helper()
		r := c.run("", nil, args...)
		if r.exit != 0 {
			t.Fatalf("umbra %v exited %d\nstdout: %s\nstderr: %s", args, r.exit, r.stdout, r.stderr)
		}
		return r.stdout
	}
	ok("login", "alice")
	ok("keys", "init")
	deadline := time.Now().Add(20 * time.Second)
	for {
		out := ok("card", "log-key")
		wantIn(t, "umbra card log-key", out, "the key transparency log key (origin umbra/kt/", "latest checkpoint, signed by it:")
		lines := strings.Split(out, "\n")
		vkey := lines[1]
		note := out[strings.Index(out, "entries\n")+len("entries\n"):]
		cp, err := kt.OpenCheckpoint([]byte(note), vkey)
		if err != nil {
			t.Fatalf("the printed checkpoint does not verify with the printed key %q: %v\n%s", vkey, err, out)
		}
		if cp.Size >= 1 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the log holds no card event 20 s after a publication:\n%s", out)
		}
		time.Sleep(200 * time.Millisecond)
	}
}
