package main

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/metadata"

	"github.com/umbra-e2ee/umbra/pkg/grpcclient"
	messagingv1 "github.com/umbra-e2ee/umbra/proto/umbra/messaging/v1"
)

// umbraRun runs the binary to its end (30 s at most) and returns its output, stdout and
// stderr together, and its exit code.
func umbraRun(t *testing.T, bin string, env []string, args ...string) (string, int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var out bytes.Buffer
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Env = append(e2eEnv(os.Environ()), env...)
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	if ctx.Err() != nil {
		t.Fatalf("umbra %s still running after 30 s:\n%s", strings.Join(args, " "), out.String())
	}
	if err != nil && cmd.ProcessState == nil {
		t.Fatal(err)
	}
	return out.String(), cmd.ProcessState.ExitCode()
}

// copyDir copies the files of from into a new folder.
func copyDir(t *testing.T, from string) string {
	t.Helper()
	to := t.TempDir()
	entries, err := os.ReadDir(from)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		b, err := os.ReadFile(filepath.Join(from, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(to, e.Name()), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return to
}

// boltLayout reads what bbolt's current meta page says of a file (bbolt's format, in
// this machine's byte order): the page size, the root page and the high-water page id;
// and finds a data page: the root page of the first bucket that has a page of its own
// (the root page itself when every bucket is small enough to live inside it).
func boltLayout(t *testing.T, path string) (pageSize, root, pgid, data int64) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	le := binary.NativeEndian
	meta := func(off int64) (ps, root, pgid, txid int64) {
		m := b[off+16:]
		return int64(le.Uint32(m[8:])), int64(le.Uint64(m[16:])), int64(le.Uint64(m[40:])), int64(le.Uint64(m[48:]))
	}
	ps, root0, pgid0, tx0 := meta(0)
	_, root1, pgid1, tx1 := meta(ps)
	root, pgid = root0, pgid0
	if tx1 > tx0 {
		root, pgid = root1, pgid1
	}
	data = root
	page := b[root*ps:]
	for i := range int64(le.Uint16(page[10:])) {
		elem := page[16+16*i:]
		flags, pos, ksize := le.Uint32(elem), int64(le.Uint32(elem[4:])), int64(le.Uint32(elem[8:]))
		if flags&1 == 0 {
			continue
		}
		if r := int64(le.Uint64(elem[pos+ksize:])); r != 0 {
			data = r
			break
		}
	}
	return ps, root, pgid, data
}

// xorFile inverts n bytes of the file at off.
func xorFile(t *testing.T, path string, off int64, n int) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	for i := range int64(n) {
		b[off+i] ^= 0xFF
	}
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

// TestDamagedMissingAndEmptyStores runs the real binary over data folders damaged the
// ways issue 12 found: pages of identity.db, group.db and messaging.db flipped or cut,
// messaging.db emptied. Each start ends with one line that names the file and says what
// to do, never a panic or a fault; `umbra admin verify` finds the damage; `umbra admin
// restore` refuses a damaged backup, leaving the old file as it was, and accepts a sound
// one; an emptied store starts only with --allow-empty-store.
func TestDamagedMissingAndEmptyStores(t *testing.T) {
	bin := e2eBinary(t)
	grpcPort, httpPort := e2eFreePorts(t)
	devArgs := func(dir string) []string {
		return []string{"dev", "--data", dir, "--grpc-addr", fmt.Sprintf("127.0.0.1:%d", grpcPort), "--http-addr", fmt.Sprintf("127.0.0.1:%d", httpPort)}
	}

	// A data folder with an app, identities and messages.
	pristine := filepath.Join(t.TempDir(), "umbra-data")
	p := e2eStartDev(t, bin, pristine, grpcPort, httpPort, "--send-rate", "1e6", "--send-burst", "1000000")
	ids := e2eResolve(t, p, "alice", "bob")
	e2eAllowPlaintext(t, p) // opaque bytes: the point is the files, not encryption
	conn, err := grpcclient.Dial(grpcclient.Config{Addr: fmt.Sprintf("127.0.0.1:%d", grpcPort)})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	client := messagingv1.NewMessagingServiceClient(conn)
	aliceCtx := metadata.AppendToOutgoingContext(context.Background(), "authorization", "Bearer "+e2eIssue(t, p, ids["alice"]))
	const sent = 300
	for i := range sent {
		_, err := client.Send(aliceCtx, &messagingv1.SendRequest{
			ConversationId: ids["bob"], ClientMessageId: fmt.Sprintf("m-%d", i),
			Header:   &messagingv1.MessageHeader{Kind: messagingv1.MessageKind_MESSAGE_KIND_PLAINTEXT},
			Envelope: fmt.Appendf(nil, "message %d %s", i, strings.Repeat("x", 200)),
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	p.stop(t)

	// wantOneLine checks the output of a refused start.
	wantOneLine := func(t *testing.T, out string, code int, wants ...string) {
		t.Helper()
		if code != 1 {
			t.Errorf("exit code %d, want 1", code)
		}
		for _, bad := range []string{"panic", "SIGBUS", "SIGSEGV", "fatal error", "goroutine "} {
			if strings.Contains(out, bad) {
				t.Errorf("output has %q:\n%s", bad, out)
			}
		}
		if lines := strings.Split(strings.TrimSpace(out), "\n"); len(lines) != 1 {
			t.Errorf("%d lines of output, want one:\n%s", len(lines), out)
		}
		for _, want := range wants {
			if !strings.Contains(out, want) {
				t.Errorf("output does not say %q:\n%s", want, out)
			}
		}
	}

	damages := []struct {
		name   string
		damage func(t *testing.T, path string)
	}{
		{"64 bytes flipped in a data page", func(t *testing.T, path string) {
			ps, _, _, data := boltLayout(t, path)
			xorFile(t, path, data*ps+16, 64)
		}},
		{"damaged page header", func(t *testing.T, path string) {
			ps, _, _, data := boltLayout(t, path)
			xorFile(t, path, data*ps, 16)
		}},
		{"damaged root page", func(t *testing.T, path string) {
			ps, root, _, _ := boltLayout(t, path)
			xorFile(t, path, root*ps, 64)
		}},
		{"truncated to half", func(t *testing.T, path string) {
			// Half of its pages: bbolt grows a file ahead of its pages, and cutting only
			// that slack loses nothing (and is not refused).
			ps, _, pgid, _ := boltLayout(t, path)
			if err := os.Truncate(path, pgid*ps/2); err != nil {
				t.Fatal(err)
			}
		}},
	}
	for _, store := range []string{"identity", "group", "messaging"} {
		for _, d := range damages {
			t.Run(store+"/"+d.name, func(t *testing.T) {
				dir := copyDir(t, pristine)
				path := filepath.Join(dir, store+".db")
				d.damage(t, path)
				out, code := umbraRun(t, bin, nil, devArgs(dir)...)
				wantOneLine(t, out, code, path+" is damaged", "umbra admin verify --store "+store+" --data "+dir, "umbra admin restore --store "+store)
				out, code = umbraRun(t, bin, nil, "admin", "verify", "--store", store, "--data", dir)
				if code != 1 || !strings.Contains(out, path+" is damaged:") {
					t.Errorf("admin verify: exit %d\n%s", code, out)
				}
			})
		}
	}

	t.Run("verify and restore", func(t *testing.T) {
		dir := copyDir(t, pristine)
		target := filepath.Join(dir, "messaging.db")
		out, code := umbraRun(t, bin, nil, "admin", "verify", "--store", "messaging", "--data", dir)
		if code != 0 || !strings.Contains(out, "sound") || !strings.Contains(out, fmt.Sprintf("log %d", sent)) {
			t.Errorf("admin verify of a sound store: exit %d\n%s", code, out)
		}
		if out, code := umbraRun(t, bin, nil, "admin", "verify", "--store", "card", "--file", target); code != 1 || !strings.Contains(out, "not one of this store's") {
			t.Errorf("admin verify of messaging.db as a card store: exit %d\n%s", code, out)
		}
		// The store in the folder is damaged; a backup of it is damaged too.
		damaged := filepath.Join(t.TempDir(), "messaging.db.backup")
		b, _ := os.ReadFile(target)
		os.WriteFile(damaged, b, 0o600)
		ps, _, _, data := boltLayout(t, damaged)
		xorFile(t, damaged, data*ps+16, 64)
		if err := os.Truncate(target, 0); err != nil {
			t.Fatal(err)
		}
		out, code = umbraRun(t, bin, nil, "admin", "restore", "--store", "messaging", "--from", damaged, "--data", dir)
		if code == 0 || !strings.Contains(out, "not a usable backup") || !strings.Contains(out, "nothing was changed") {
			t.Errorf("restore of a damaged backup: exit %d\n%s", code, out)
		}
		if fi, err := os.Stat(target); err != nil || fi.Size() != 0 {
			t.Errorf("the refused restore changed %s: %v %v", target, fi, err)
		}
		if kept, _ := filepath.Glob(target + ".replaced-*"); len(kept) != 0 {
			t.Errorf("the refused restore moved the old file away: %v", kept)
		}
		out, code = umbraRun(t, bin, nil, "admin", "restore", "--store", "messaging", "--from", filepath.Join(pristine, "messaging.db"), "--data", dir)
		if code != 0 {
			t.Fatalf("restore of a sound backup: exit %d\n%s", code, out)
		}
		p := e2eStartDev(t, bin, dir, grpcPort, httpPort)
		out, code = umbraRun(t, bin, nil, "admin", "verify", "--store", "messaging", "--data", dir)
		if code != 1 || !strings.Contains(out, "in use by a running process") {
			t.Errorf("admin verify of a running store: exit %d\n%s", code, out)
		}
		bobCtx := metadata.AppendToOutgoingContext(context.Background(), "authorization", "Bearer "+e2eIssue(t, p, ids["bob"]))
		page, err := client.History(bobCtx, &messagingv1.HistoryRequest{ConversationId: ids["alice"], PageSize: 1})
		if err != nil || page.GetLatestSequence() != sent {
			t.Errorf("restored conversation: %v, %v; want %d messages", page, err, sent)
		}
		p.stop(t)
	})

	t.Run("emptied store", func(t *testing.T) {
		dir := copyDir(t, pristine)
		path := filepath.Join(dir, "messaging.db")
		if err := os.Truncate(path, 0); err != nil {
			t.Fatal(err)
		}
		out, code := umbraRun(t, bin, nil, devArgs(dir)...)
		wantOneLine(t, out, code, path+" is empty (0 bytes)", "held the messaging store", "--allow-empty-store messaging", "umbra admin restore --store messaging")
		out, code = umbraRun(t, bin, []string{"UMBRA_ALLOW_EMPTY_STORE=messages"}, devArgs(dir)...)
		if code == 0 || !strings.Contains(out, `"messages" is not a store`) {
			t.Errorf("UMBRA_ALLOW_EMPTY_STORE=messages: exit %d\n%s", code, out)
		}
		p := e2eStartDev(t, bin, dir, grpcPort, httpPort, "--allow-empty-store", "messaging")
		p.stop(t)
		if log, _ := os.ReadFile(p.stderrPath); !bytes.Contains(log, []byte("starting an EMPTY store")) {
			t.Errorf("no warning that messaging started empty:\n%s", log)
		}
	})
}
