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

// TestBinaryFlagsBeforeTheSubcommand runs the real binary with the connection flags
// before the subcommand of each client command group (`umbra keys --server X init`),
// against a node in the test process whose address only the flags give.
func TestBinaryFlagsBeforeTheSubcommand(t *testing.T) {
	if testing.Short() {
		t.Skip("skipped with -short: builds the umbra binary and runs it as a subprocess")
	}
	bin := e2eBinary(t)
	n := nodetest.Start(t)
	app := n.NewApp(t)
	env := append(e2eEnv(os.Environ()),
		"UMBRA_API_KEY="+app.APIKey,
		"UMBRA_NO_PASSPHRASE=true",
		"UMBRA_HOME="+filepath.Join(t.TempDir(), "home"),
	)
	umbra := func(args ...string) (string, string, int) {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		cmd := exec.CommandContext(ctx, bin, args...)
		cmd.Env = env
		var out, errOut bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &errOut
		err := cmd.Run()
		var exitErr *exec.ExitError
		if err != nil && !errors.As(err, &exitErr) {
			t.Fatalf("umbra %v: %v", args, err)
		}
		return out.String(), errOut.String(), cmd.ProcessState.ExitCode()
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
