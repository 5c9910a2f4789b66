package main

import (
	"strings"
	"testing"

	"github.com/umbra-e2ee/umbra/internal/node/nodetest"
)

// TestBinaryFlagsBeforeTheSubcommand runs the real binary with the connection flags
// before the subcommand of each client command group (`umbra keys --server X init`),
// against a node in the test process whose address only the flags give.
func TestBinaryFlagsBeforeTheSubcommand(t *testing.T) {
	c := startCLINode(t)
	c.env = append(c.env, "UMBRA_API_KEY="+c.app.APIKey, "UMBRA_NO_PASSPHRASE=true", c.home("home"))
	n := c.n
	umbra := func(args ...string) (string, string, int) {
		t.Helper()
		r := c.run("", nil, args...)
		return r.stdout, r.stderr, r.exit
	}
	server := "--server=" + n.GRPC
	for _, args := range [][]string{
		{"login", "--server", n.GRPC, "alice"},
		{"keys", "--server", n.GRPC, "init"}, // the form of the issue
		{"keys", server, "--user", "alice", "show"},
		{"card", "--server", n.GRPC, "find", "alice"},
		{"backup", "--server", n.GRPC, "status"},
		{"group", "--server", n.GRPC, "create", "family"},
		{"admin", "--server", n.GRPC, "--admin-token", nodetest.Admin, "stores"},
	} {
		if out, errOut, code := umbra(args...); code != 0 {
			t.Fatalf("umbra %s exited %d\nstdout: %s\nstderr: %s", strings.Join(args, " "), code, out, errOut)
		}
	}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"keys", "--user", "show", "show"}, "flag needs an argument: -user"},
		{[]string{"--server", n.GRPC, "keys", "init"}, "flags go after the command"},
	} {
		if out, errOut, code := umbra(tc.args...); code != 2 || !strings.Contains(errOut, tc.want) {
			t.Errorf("umbra %s exited %d with %q %q; want 2 and %q", strings.Join(tc.args, " "), code, out, errOut, tc.want)
		}
	}
}
