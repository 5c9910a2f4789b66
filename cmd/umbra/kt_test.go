package main

import (
	"context"
	"encoding/base64"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/umbra-e2ee/umbra/pkg/kt"
	cardv1 "github.com/umbra-e2ee/umbra/proto/umbra/card/v1"
)

// TestCardLogKey: `umbra card log-key` prints the key transparency log key as a
// signed-note verifier key, and the latest checkpoint, which that key verifies and
// which grows to hold a card published through the CLI.
func TestCardLogKey(t *testing.T) {
	c := startCLIUser(t)
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

// TestKtLookupAndMonitor: `umbra kt lookup` prints a card with the proofs the CLI
// verified and the checkpoint (size and roots, as the log key signed them), and an
// identity without a card proved absent; `umbra kt monitor` finds nothing on the
// device that published the card, and, on a device of the same user that did not
// publish the card now current (a reset made elsewhere), an alert naming it, with
// exit status 1. A CLI given another log key (--log-key) refuses every lookup.
func TestKtLookupAndMonitor(t *testing.T) {
	c := startCLINode(t)
	c.env = append(c.env, "UMBRA_API_KEY="+c.app.APIKey, "UMBRA_SERVER="+c.n.GRPC, "UMBRA_NO_PASSPHRASE=true")
	c.ok("phone", "login", "alice")
	c.ok("phone", "keys", "init")
	c.ok("desk", "login", "bob")
	c.ok("desk", "keys", "init")
	c.ok("laptop", "login", "bob")
	c.ok("laptop", "keys", "reset") // another device of bob's: a reset the desk did not make

	out := c.ok("phone", "kt", "lookup", "bob", "carol")
	wantIn(t, "kt lookup", out, "bob (u_", "proved by the key transparency log", "(RESET)", "carol (u_", "no card, proved: the map has no entry", "checkpoint of umbra/kt/", "log root", "map root", "the first checkpoint this client saw")
	resp, err := cardv1.NewCardServiceClient(c.n.Conn()).GetCheckpoint(context.Background(), &cardv1.GetCheckpointRequest{})
	if err != nil {
		t.Fatal(err)
	}
	cp, err := kt.OpenCheckpoint(resp.GetCheckpoint(), ktLogKey(t, c))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out, fmt.Sprintf(": %d entries", cp.Size)) || !strings.Contains(out, base64.StdEncoding.EncodeToString(cp.LogRoot[:])) || !strings.Contains(out, base64.StdEncoding.EncodeToString(cp.MapRoot[:])) {
		t.Errorf("kt lookup printed:\n%s\nwant the checkpoint of %d entries and its roots", out, cp.Size)
	}
	wantIn(t, "kt lookup again", c.ok("phone", "kt", "lookup", "bob"), "the checkpoint this client kept")

	wantIn(t, "kt monitor on the laptop", c.ok("laptop", "kt", "monitor"), "the key transparency log shows only what this device knows of", "bob (u_")
	r := c.on("desk", "", nil, "kt", "monitor")
	if r.exit != 1 {
		t.Fatalf("kt monitor on the desk, after a reset it did not make: exit %d\n%s\n%s", r.exit, r.stdout, r.stderr)
	}
	wantIn(t, "kt monitor on the desk", r.stdout, "ALERT: a card this device did not publish")
	wantIn(t, "kt monitor on the desk", r.stderr, "key transparency alert", "someone else published it")

	rogue, err := kt.NewLogSigner(cp.Origin, make([]byte, 32))
	if err != nil {
		t.Fatal(err)
	}
	r = c.run("", []string{c.home("tablet")}, "login", "carol")
	r = c.run("", []string{c.home("tablet"), "UMBRA_LOG_KEY=" + rogue.VerifierKey()}, "kt", "lookup", "bob")
	if r.exit != 1 || !strings.Contains(r.stderr, "unknown key transparency log key") {
		t.Errorf("kt lookup with another log key: exit %d, %q; want the checkpoint refused", r.exit, r.stderr)
	}
}

// ktLogKey is the node's log key.
func ktLogKey(t *testing.T, c *cliNode) string {
	t.Helper()
	resp, err := cardv1.NewCardServiceClient(c.n.Conn()).GetLogKey(context.Background(), &cardv1.GetLogKeyRequest{})
	if err != nil {
		t.Fatal(err)
	}
	return resp.GetVerifierKey()
}
