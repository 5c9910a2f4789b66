package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

var (
	builtOnce sync.Once
	builtPath string
	builtErr  error
	builtOut  []byte
)

func TestMain(m *testing.M) {
	code := m.Run()
	if builtPath != "" {
		os.RemoveAll(filepath.Dir(builtPath))
	}
	os.Exit(code)
}

// e2eBinary builds the umbra binary once for every test that runs it; with -short it
// skips the test instead.
func e2eBinary(t *testing.T) string {
	t.Helper()
	if testing.Short() {
		t.Skip("skipped with -short: builds the umbra binary and runs it")
	}
	builtOnce.Do(func() {
		dir, err := os.MkdirTemp("", "umbra-e2e-bin")
		if err != nil {
			builtErr = err
			return
		}
		builtPath = filepath.Join(dir, "umbra")
		builtOut, builtErr = exec.Command("go", "build", "-o", builtPath, "-ldflags", "-X main.version="+e2eVersion, ".").CombinedOutput()
	})
	if builtErr != nil {
		t.Fatalf("go build: %v\n%s", builtErr, builtOut)
	}
	return builtPath
}

// readmeBlock returns the shell block of README.md that follows the marker comment.
func readmeBlock(t *testing.T, marker string) []string {
	t.Helper()
	b, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	_, after, ok := strings.Cut(string(b), "<!-- "+marker)
	if !ok {
		t.Fatalf("README.md has no %q block", marker)
	}
	_, block, ok := strings.Cut(after, "```sh\n")
	if !ok {
		t.Fatalf("README.md: no shell block after %q", marker)
	}
	block, _, _ = strings.Cut(block, "```")
	return strings.Split(strings.TrimSpace(block), "\n")
}

// readmeLine returns the README's block marker, which must be one command.
func readmeLine(t *testing.T, marker string) string {
	t.Helper()
	lines := readmeBlock(t, marker)
	if len(lines) != 1 {
		t.Fatalf("the %s block has %d lines; want the one command", marker, len(lines))
	}
	return lines[0]
}

// readmePrelude is the exports of the README's CLI walk-through, which the reader who
// ran it has in their terminal: what the blocks that follow it run after.
func readmePrelude(t *testing.T) string {
	t.Helper()
	var exports []string
	for _, line := range readmeBlock(t, "cli-round-trip") {
		if strings.HasPrefix(line, "export ") {
			exports = append(exports, line)
		}
	}
	return strings.Join(exports, "\n") + "\n"
}

// shBlock runs script, the README's block name (after its prelude), with sh -e in dir
// with env, and returns what it printed; the test fails, showing that, when it fails.
func shBlock(ctx context.Context, t *testing.T, dir string, env []string, name, script string) string {
	t.Helper()
	c := exec.CommandContext(ctx, "sh", "-e", "-c", script)
	c.Dir, c.Env = dir, env
	out, err := c.CombinedOutput()
	if err != nil {
		t.Fatalf("the %s block failed: %v\n%s", name, err, out)
	}
	return string(out)
}

// TestReadmeCLIRoundTrip runs the README's CLI walk-through, as written, against a real
// `umbra dev`: only the build line is replaced by the binary the test built, and the
// server address by the test's free port.
func TestReadmeCLIRoundTrip(t *testing.T) {
	bin, p, grpcPort, work := e2eDevAndWork(t)
	defer p.stop(t)
	e2eLinkBinary(t, bin, work)
	var script []string
	for _, line := range readmeBlock(t, "cli-round-trip") {
		if strings.HasPrefix(line, "go build ") {
			continue
		}
		script = append(script, line)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "sh", "-e", "-c", strings.Join(script, "\n"))
	cmd.Dir = work
	cmd.Env = append(e2eEnv(os.Environ()),
		"UMBRA_API_KEY="+p.apiKey,
		fmt.Sprintf("UMBRA_SERVER=127.0.0.1:%d", grpcPort),
	)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("the README walk-through failed: %v\nstdout:\n%s\nstderr:\n%s", err, &stdout, &stderr)
	}
	out := stdout.String()
	if n := strings.Count(out, "hello bob\n"); n != 2 {
		t.Errorf("decrypted %d times; want 2 (before and after alice's rotation)\n%s", n, out)
	}
	if !strings.Contains(out, "2 cards, newest first") || !strings.Contains(out, "CARD_STATUS_SUPERSEDED") || !strings.Contains(out, "endorsed by the previous key") {
		t.Errorf("card history does not show the endorsed rotation:\n%s", out)
	}
	env, err := os.ReadFile(filepath.Join(work, "msg.txt"))
	if err != nil || bytes.Contains(env, []byte("hello bob")) {
		t.Errorf("msg.txt: %v; the plaintext must not appear in it", err)
	}

	// The two-terminal chat, with the same profiles (and so the same exports): bob
	// listens while alice sends.
	prelude := readmePrelude(t)
	// runBlock runs the README's block name after prelude (the exports, as in the
	// reader's terminal), and returns what it printed.
	runBlock := func(name, prelude string) string {
		t.Helper()
		return shBlock(ctx, t, work, cmd.Env, name, prelude+strings.Join(readmeBlock(t, name), "\n"))
	}
	lctx, stopListen := context.WithCancel(ctx)
	defer stopListen()
	listen := exec.CommandContext(lctx, "sh", "-c", prelude+"exec "+readmeLine(t, "chat-listen"))
	listen.Dir, listen.Env = work, cmd.Env
	var heard syncBuffer
	listen.Stdout, listen.Stderr = &heard, &heard
	if err := listen.Start(); err != nil {
		t.Fatal(err)
	}
	defer listen.Wait()
	waitFor(t, &heard, "listening for bob", 20*time.Second)
	runBlock("chat-send", prelude)
	waitFor(t, &heard, "alice: lunch at noon", 20*time.Second)
	if !strings.Contains(heard.String(), "alice: are you there?") {
		t.Errorf("bob's terminal:\n%s\nwant both of alice's messages, in order", heard.String())
	}
	if i, j := strings.Index(heard.String(), "are you there?"), strings.Index(heard.String(), "lunch at noon"); i > j {
		t.Errorf("messages out of order:\n%s", heard.String())
	}
	stopListen()

	// Groups and key backup, with the same profiles.
	gbOut := runBlock("groups-and-backup", prelude)
	// In order: bob's listing (ending with alice's second message), carol's, then the
	// backup and the laptop.
	out = gbOut
	endBob := strings.Index(out, "alice: carol has left\n") + len("alice: carol has left\n")
	startBackup := strings.Index(out, "keys of bob backed up")
	if endBob < len("alice: carol has left\n") || startBackup < endBob {
		t.Fatalf("the groups-and-backup block printed its parts out of order, or bob did not read alice's second message:\n%s", out)
	}
	bobSaw, carolSaw, laptop := out[:endBob], out[endBob:startBackup], out[startBackup:]
	for _, want := range []string{"alice: hello team", "alice removed carol", "alice started epoch 2"} {
		if !strings.Contains(bobSaw, want) {
			t.Errorf("bob's group listing lacks %q:\n%s", want, out)
		}
	}
	if !strings.Contains(carolSaw, "alice removed carol") || strings.Contains(carolSaw, "carol has left") || strings.Contains(carolSaw, "alice: hello team") {
		t.Errorf("carol's listing after her removal shows what she must not read, or not her removal:\n%s", carolSaw)
	}
	if !strings.Contains(laptop, "keys of bob restored") || !strings.HasSuffix(strings.TrimSpace(laptop), "hello bob") {
		t.Errorf("the restored laptop did not decrypt alice's message:\n%s", laptop)
	}

	// A key change: bob resets his keys; alice's client refuses until she accepts,
	// and the safety numbers both sides show match.
	checkKeyChangeOutput(t, runBlock("key-change", prelude))

	// Key transparency: alice's lookup of bob with its proofs, bob's monitoring on
	// his first device (nothing) and on the laptop that did not make the reset (an
	// alert).
	checkKtOutput(t, runBlock("kt-lookup", prelude))

	// umbra demo, as the README gives it.
	checkDemoOutput(t, runBlock("demo", ""))
}

// checkKeyChangeOutput checks what the README's key-change block printed: the refusal
// naming the change and what to run, alice's pending change with a new safety number
// that is the one bob shows, the acceptance, the message read with bob's new key, and
// the verification.
func checkKeyChangeOutput(t *testing.T, out string) {
	t.Helper()
	for _, want := range []string{
		"umbra encrypt: bob's key changed, so nothing was encrypted",
		"umbra trust accept bob",
		"alice's client refused",
		"KEY CHANGE: bob's key changed",
		"accepted bob's new key",
		"welcome back\n",
		"bob is verified",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("the key-change block did not print %q:\n%s", want, out)
		}
	}
	lineAfter := func(s, label string) string {
		_, after, ok := strings.Cut(s, label)
		if !ok {
			return ""
		}
		line, _, _ := strings.Cut(after, "\n")
		return strings.TrimSpace(line)
	}
	pending, bobs := lineAfter(out, "new safety number"), ""
	if i := strings.Index(out, "alice (u_"); i >= 0 { // bob's trust show
		bobs = lineAfter(out[i:], "safety number")
	}
	if pending == "" || len(strings.Fields(pending)) != 12 || pending != bobs {
		t.Errorf("alice's new safety number for bob is %q and bob's for alice %q; want the same 12 groups\n%s", pending, bobs, out)
	}
}

// checkKtOutput checks what the README's kt-lookup block printed: bob's card proved
// (his reset, in the log and the map), the checkpoint with its roots, extending the
// one alice's client kept; nothing on bob's first device; an alert on his laptop.
func checkKtOutput(t *testing.T, out string) {
	t.Helper()
	for _, want := range []string{
		"bob (u_", "proved by the key transparency log", "(RESET)", "inclusion proof of entry",
		"checkpoint of umbra/kt/", "entries, signed by its log key", "log root", "map root", "this client kept",
		"the key transparency log shows only what this device knows of",
		"ALERT: a card this device did not publish",
		"bob's laptop raised the alert",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("the kt-lookup block did not print %q:\n%s", want, out)
		}
	}
}

// syncBuffer is a bytes.Buffer safe for a process writing while the test reads.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// waitFor waits until out contains want.
func waitFor(t *testing.T, out *syncBuffer, want string, within time.Duration) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !strings.Contains(out.String(), want) {
		if time.Now().After(deadline) {
			t.Fatalf("no %q within %s; output so far:\n%s", want, within, out.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestLicense: the repository carries the Apache License 2.0 unchanged, and the README
// says so, so anyone may self-host Umbra under its terms.
func TestLicense(t *testing.T) {
	license, err := os.ReadFile("../../LICENSE")
	if err != nil {
		t.Fatalf("no LICENSE at the root of the repository: %v", err)
	}
	// The SHA-256 of the Apache License 2.0 text as apache.org and the Go modules in
	// go.sum (grpc, for one) ship it.
	if sum := sha256.Sum256(license); hex.EncodeToString(sum[:]) != apacheLicenseSHA256 {
		t.Errorf("LICENSE is not the Apache License 2.0 text unchanged (SHA-256 %x)", sum)
	}
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	_, notice, ok := strings.Cut(string(readme), "\n## License\n")
	if !ok || !strings.Contains(notice, "Licensed under the Apache License, Version 2.0") || !strings.Contains(notice, "[LICENSE](LICENSE)") {
		t.Errorf("README.md has no License section naming the Apache License 2.0 and the LICENSE file")
	}
}

const apacheLicenseSHA256 = "cfc7749b96f63bd31c3c42b5c471bf756814053e847c10f3eb003417bc523d30"
