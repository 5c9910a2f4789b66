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

	"github.com/umbra-e2ee/umbra/internal/node/nodetest"
)

// cliNode is a whole node in the test process with an app on it, and the real binary
// to drive against it as users do. A test that runs its node as a process of the binary
// (TestAdminMigrate) leaves n and app nil, and drives the binary the same way.
type cliNode struct {
	t   *testing.T
	bin string
	n   *nodetest.Node
	app *nodetest.App
	// work is the test's folder: the binary runs in it, and devices' homes are in it.
	work string
	// env is the environment of every run: the test process's (e2eEnv), then what the
	// test adds.
	env []string
}

// startCLINode skips the test under -short; otherwise it builds the binary and starts
// the node and its app.
func startCLINode(t *testing.T) *cliNode {
	t.Helper()
	bin := e2eBinary(t)
	n := nodetest.Start(t)
	return &cliNode{t: t, bin: bin, n: n, app: n.NewApp(t), work: t.TempDir(), env: e2eEnv(os.Environ())}
}

// startCLIUser is startCLINode with the environment of a user of its app: the API key,
// the server, no passphrase, and UMBRA_HOME in its work folder.
func startCLIUser(t *testing.T) *cliNode {
	t.Helper()
	c := startCLINode(t)
	c.env = append(c.env, "UMBRA_API_KEY="+c.app.APIKey, "UMBRA_SERVER="+c.n.GRPC, "UMBRA_NO_PASSPHRASE=true", c.home("home"))
	return c
}

// cliResult is what one run of the binary printed, and how it exited.
type cliResult struct {
	stdout, stderr string
	exit           int
}

// run runs the binary with args in c.work, with c.env and then extra as its
// environment and stdin as its standard input, for a minute at most.
func (c *cliNode) run(stdin string, extra []string, args ...string) cliResult {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, c.bin, args...)
	cmd.Dir = c.work
	cmd.Env = slices.Concat(c.env, extra)
	cmd.Stdin = strings.NewReader(stdin)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	var exitErr *exec.ExitError
	if err != nil && !errors.As(err, &exitErr) {
		c.t.Fatalf("umbra %v: %v", args, err)
	}
	return cliResult{stdout.String(), stderr.String(), cmd.ProcessState.ExitCode()}
}

// on runs the binary as on device (a home folder of its own), with stdin and extra
// environment variables.
func (c *cliNode) on(device, stdin string, extra []string, args ...string) cliResult {
	c.t.Helper()
	return c.run(stdin, append([]string{c.home(device)}, extra...), args...)
}

// ok runs the binary as on device, failing the test unless it exits 0; it returns what
// it printed.
func (c *cliNode) ok(device string, args ...string) string {
	c.t.Helper()
	return c.succeeded(c.on(device, "", nil, args...), args)
}

// succeeded returns what the run of args printed, failing the test unless it exited 0.
func (c *cliNode) succeeded(r cliResult, args []string) string {
	c.t.Helper()
	if r.exit != 0 {
		c.t.Fatalf("umbra %v exited %d\nstdout: %s\nstderr: %s", args, r.exit, r.stdout, r.stderr)
	}
	return r.stdout
}

// home is the environment variable that gives device its own home, a folder in c.work.
func (c *cliNode) home(device string) string {
	return "UMBRA_HOME=" + filepath.Join(c.work, device)
}

// wantIn fails the test unless out, the output of what, holds every want.
func wantIn(t *testing.T, what, out string, want ...string) {
	t.Helper()
	for _, w := range want {
		if !strings.Contains(out, w) {
			t.Fatalf("%s:\n%s\nwant %q in it", what, out, w)
		}
	}
}
