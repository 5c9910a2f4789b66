package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/umbra-e2ee/umbra/internal/ktlog/ktlogtest"
	"github.com/umbra-e2ee/umbra/pkg/kt"
)

// binRun runs the binary with args in dir and env, for a minute at most.
func binRun(t *testing.T, bin, dir string, env []string, args ...string) cliResult {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Dir, cmd.Env = dir, env
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	var exitErr *exec.ExitError
	if err != nil && !errors.As(err, &exitErr) {
		t.Fatalf("umbra %v: %v", args, err)
	}
	return cliResult{stdout.String(), stderr.String(), cmd.ProcessState.ExitCode()}
}

// startBackground starts the binary with args, its output in the returned buffer,
// and stops it (SIGINT, then a kill) when the test ends.
func startBackground(t *testing.T, bin, dir string, env []string, args ...string) (*exec.Cmd, *syncBuffer) {
	t.Helper()
	cmd := exec.Command(bin, args...)
	cmd.Dir, cmd.Env = dir, env
	out := &syncBuffer{}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGINT)
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			cmd.Process.Kill()
			<-done
		}
		if t.Failed() {
			t.Logf("umbra %v:\n%s", args, out.String())
		}
	})
	return cmd, out
}

// getNote GETs url; it returns the body of a 200 answer, or nil.
func getNote(url string) []byte {
	resp, err := http.Get(url)
	if err != nil {
		return nil
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		return nil
	}
	return b
}

// TestWitnessEndToEnd: `umbra dev`, and `umbra witness` following it as its own
// process; a card is published, and the witness cosigns the checkpoint that holds it.
// Clients then get the checkpoint cosigned (`umbra kt checkpoint --witness`), and the
// auditor replays the log and checks the witness's cosigned checkpoint against it.
func TestWitnessEndToEnd(t *testing.T) {
	if testing.Short() {
		t.Skip("skipped with -short: builds the umbra binary and runs it as a subprocess")
	}
	bin, p, grpcPort, work := e2eDevAndWork(t)
	defer p.stop(t)
	server := fmt.Sprintf("127.0.0.1:%d", grpcPort)
	env := append(e2eEnv(os.Environ()), "UMBRA_API_KEY="+p.apiKey, "UMBRA_SERVER="+server, "UMBRA_HOME="+filepath.Join(work, "home"), "UMBRA_NO_PASSPHRASE=true")
	ok := func(args ...string) string {
		t.Helper()
		r := binRun(t, bin, work, env, args...)
		if r.exit != 0 {
			t.Fatalf("umbra %v exited %d\nstdout: %s\nstderr: %s", args, r.exit, r.stdout, r.stderr)
		}
		return r.stdout
	}

	// The witness's key: 0600, its verifier key alone on stdout, never overwritten.
	wdir := filepath.Join(work, "witness")
	vkey := strings.TrimSpace(ok("witness", "keygen", "--name", "witness.test/e2e", "--witness-dir", wdir))
	wkey, err := kt.ParseWitnessKey(vkey)
	if err != nil {
		t.Fatalf("keygen printed %q: %v", vkey, err)
	}
	if fi, err := os.Stat(filepath.Join(wdir, "witness.key")); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("the witness key file: %v, %v", err, fi)
	}
	if r := binRun(t, bin, work, env, "witness", "keygen", "--name", "witness.test/other", "--witness-dir", wdir); r.exit == 0 || !strings.Contains(r.stderr, "exists") {
		t.Fatalf("a second keygen over the key: exit %d\n%s", r.exit, r.stderr)
	}
	if got := strings.TrimSpace(ok("witness", "key", "--witness-dir", wdir)); got != vkey {
		t.Fatalf("umbra witness key = %q, want %q", got, vkey)
	}
	ok("login", "erin")
	logKey := strings.Split(ok("card", "log-key"), "\n")[1]

	listen := fmt.Sprintf("127.0.0.1:%d", e2eFreePort(t))
	url := "http://" + listen
	_, out := startBackground(t, bin, work, env, "witness", "--witness-dir", wdir, "--log-key", logKey, "--listen", listen, "--interval", "200ms")
	waitFor(t, out, "cosigned checkpoints at "+url, 20*time.Second)

	// cosigned waits for the witness's checkpoint to hold at least size entries, and
	// checks both of its signatures.
	cosigned := func(size uint64) (*kt.Checkpoint, []byte) {
		t.Helper()
		deadline := time.Now().Add(30 * time.Second)
		for {
			if b := getNote(url + "/checkpoint"); b != nil {
				cp, err := kt.OpenCheckpoint(b, logKey)
				if err != nil {
					t.Fatalf("the witness serves a checkpoint the log key does not verify: %v\n%s", err, b)
				}
				if _, err := kt.VerifyCosignature(b, wkey); err != nil {
					t.Fatalf("the witness's checkpoint lacks its cosignature: %v\n%s", err, b)
				}
				if cp.Size >= size {
					return cp, b
				}
			}
			if time.Now().After(deadline) {
				t.Fatalf("the witness cosigned no checkpoint of %d entries or more within 30 s\n%s", size, out.String())
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	before, _ := cosigned(0)

	// A card is published; the witness cosigns the checkpoint that holds it.
	ok("keys", "init")
	_, note := cosigned(before.Size + 1)
	if !bytes.Contains(note, []byte("\n— witness.test/e2e ")) {
		t.Errorf("no cosignature line of the witness:\n%s", note)
	}

	// A client requires the witness: the latest checkpoint, cosigned.
	got := ok("kt", "checkpoint", "--log-key", logKey, "--witness", vkey+"@"+url)
	wantIn(t, "umbra kt checkpoint", got, "signed by the log key of umbra/kt/", "cosigned by 1 of the 1 witnesses required:", "witness.test/e2e at ")
	// ... and refuses a witness it names that does not answer.
	silent := fmt.Sprintf("http://127.0.0.1:%d", e2eFreePort(t))
	if r := binRun(t, bin, work, env, "kt", "checkpoint", "--log-key", logKey, "--witness", vkey+"@"+silent); r.exit != 1 || !strings.Contains(r.stderr, "checkpoint not witnessed") {
		t.Errorf("a witness that does not answer: exit %d\n%s%s", r.exit, r.stdout, r.stderr)
	}

	// The auditor replays the log and checks the witness's checkpoint against it.
	got = ok("kt", "audit", "--log-key", logKey, "--witness-state", filepath.Join(wdir, "state.json"))
	wantIn(t, "umbra kt audit", got, "recomputed its map", "(witness state ", "log root and map root match", "audit passed")
	// ... and through the REST gateway, as an auditor outside the cluster would.
	got = ok("kt", "audit", "--server", p.base, "--log-key", logKey)
	wantIn(t, "umbra kt audit through the gateway", got, "(the log's latest): log root and map root match", "audit passed")

	if status := getNote(url + "/forks"); !bytes.Contains(status, []byte(`"forks": []`)) {
		t.Errorf("GET /forks on an honest log:\n%s", status)
	}
}

// TestAuditCommand: `umbra kt audit` exits 0 on an honest log, and 1 with a message
// naming the checkpoint and the root on a map that disagrees with the log or a
// checkpoint that is not the log's entries.
func TestAuditCommand(t *testing.T) {
	log := ktlogtest.New(t)
	honest := log.NewView()
	honest.Append(t, ktlogtest.Publications(t, 0, 5)...)
	split := honest.Fork(t)
	honest.Append(t, ktlogtest.Publications(t, 5, 3)...)
	other := split.Append(t, ktlogtest.Publications(t, 50, 3)...)
	otherFile := filepath.Join(t.TempDir(), "shown-to-bob.txt")
	if err := os.WriteFile(otherFile, other, 0o600); err != nil {
		t.Fatal(err)
	}
	hiding := honest.Fork(t)
	cp := hiding.Checkpoint(t)
	cp.MapRoot[5] ^= 0x40
	hiding.Serve(log.Sign(t, cp))

	audit := func(v *ktlogtest.View, extra ...string) (int, string, string) {
		t.Helper()
		var stdout, stderr bytes.Buffer
		args := slices.Concat([]string{"kt", "audit", "--server", v.Listen(t), "--log-key", log.VerifierKey()}, extra)
		code := run(context.Background(), args, &stdout, &stderr)
		return code, stdout.String(), stderr.String()
	}
	if code, out, errOut := audit(honest); code != 0 || !strings.Contains(out, "audit passed") {
		t.Fatalf("an honest log: exit %d\n%s%s", code, out, errOut)
	}
	for _, tc := range []struct {
		name  string
		view  *ktlogtest.View
		extra []string
		want  []string
	}{
		{"a map that disagrees with the log", hiding, nil, []string{"AUDIT FAILED", "checkpoint of 8 entries (the log's latest): its map root is", "hides or invents a card event"}},
		{"a checkpoint that is not the log's entries", honest, []string{"--checkpoint", otherFile}, []string{"AUDIT FAILED", "checkpoint of 8 entries (" + otherFile + "): its log root is"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, out, errOut := audit(tc.view, tc.extra...)
			if code != 1 {
				t.Fatalf("exit %d, want 1\n%s%s", code, out, errOut)
			}
			wantIn(t, "umbra kt audit", errOut, tc.want...)
		})
	}
}

// TestReadmeWitness runs the README's witness blocks, as written, against a real
// `umbra dev`: the key, the witness as a process of its own, and a client requiring its
// cosignature, then the auditor. Only the addresses change, to the test's free ports.
func TestReadmeWitness(t *testing.T) {
	if testing.Short() {
		t.Skip("skipped with -short: builds the umbra binary and runs it as a subprocess")
	}
	bin, p, grpcPort, work := e2eDevAndWork(t)
	defer p.stop(t)
	e2eLinkBinary(t, bin, work)
	listen := fmt.Sprintf("127.0.0.1:%d", e2eFreePort(t))
	addrs := strings.NewReplacer("127.0.0.1:8091", listen, "localhost:8091", listen)
	// The exports of the CLI walk-through, which the reader has already run.
	prelude := readmePrelude(t)
	env := append(e2eEnv(os.Environ()), "UMBRA_API_KEY="+p.apiKey, fmt.Sprintf("UMBRA_SERVER=127.0.0.1:%d", grpcPort), "UMBRA_LISTEN="+listen)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	sh := func(marker string) string {
		t.Helper()
		return shBlock(ctx, t, work, env, marker, prelude+addrs.Replace(strings.Join(readmeBlock(t, marker), "\n")))
	}
	sh("witness-keygen")
	_, out := startBackground(t, "/bin/sh", work, env, "-c", prelude+"exec "+addrs.Replace(readmeLine(t, "witness-run")))
	waitFor(t, out, "cosigned checkpoints at http://"+listen, 20*time.Second)
	got := sh("witness-cosign")
	for _, want := range []string{
		"cosigned by 1 of the 1 witnesses required:",
		"  witness.example/w1 at ",
		"\n— witness.example/w1 ",
		"(witness state umbra-witness/state.json): log root and map root match",
		"audit passed",
		`"forks": []`,
	} {
		if !strings.Contains(got, want) {
			t.Errorf("the witness-cosign block did not print %q:\n%s", want, got)
		}
	}
}
