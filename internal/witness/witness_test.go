package witness

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/umbra-e2ee/umbra/internal/ktlog"
	"github.com/umbra-e2ee/umbra/internal/ktlog/ktlogtest"
	"github.com/umbra-e2ee/umbra/pkg/kt"
)

// switchLog is the log as the witness reaches it, which a test points at one view or
// another: a malicious server choosing what the witness sees.
type switchLog struct {
	mu  sync.Mutex
	cur ktlog.Log
}

func (s *switchLog) to(t *testing.T, v *ktlogtest.View) {
	t.Helper()
	l, err := ktlog.Dial(ktlog.Config{Addr: v.Listen(t)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	s.mu.Lock()
	s.cur = l
	s.mu.Unlock()
}

func (s *switchLog) get() ktlog.Log {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.cur
}

func (s *switchLog) LogKey(ctx context.Context) (string, string, error) { return s.get().LogKey(ctx) }
func (s *switchLog) Checkpoint(ctx context.Context) ([]byte, error)     { return s.get().Checkpoint(ctx) }
func (s *switchLog) Consistency(ctx context.Context, from, to uint64) ([][]byte, error) {
	return s.get().Consistency(ctx, from, to)
}
func (s *switchLog) Entries(ctx context.Context, start uint64, count int) ([][]byte, error) {
	return s.get().Entries(ctx, start, count)
}
func (s *switchLog) Close() error { return nil }

type env struct {
	t      *testing.T
	log    *ktlogtest.Log
	view   *ktlogtest.View
	sw     *switchLog
	signer *kt.WitnessSigner
	dir    string
	w      *Witness
	logs   *observer.ObservedLogs
	url    string
	// served is the witness the HTTP server answers for: e.w, across restarts.
	served atomic.Pointer[Witness]
}

func testSigner(t *testing.T, b byte) *kt.WitnessSigner {
	t.Helper()
	s, err := kt.NewWitnessSigner("witness.test/w1", bytes.Repeat([]byte{b}, 32))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// newEnv starts a witness of an honest log of n entries (no checkpoint yet when n is
// 0), whose key it is configured with, and its HTTP API.
func newEnv(t *testing.T, n int) *env {
	t.Helper()
	e := &env{t: t, log: ktlogtest.New(t), sw: &switchLog{}, signer: testSigner(t, 1), dir: t.TempDir()}
	e.view = e.log.NewView()
	if n > 0 {
		e.view.Append(t, ktlogtest.Publications(t, 0, n)...)
	}
	e.sw.to(t, e.view)
	e.open(e.log.VerifierKey())
	srv := &http.Server{Handler: http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) { e.served.Load().Handler().ServeHTTP(rw, r) })}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(lis)
	t.Cleanup(func() { srv.Close() })
	e.url = "http://" + lis.Addr().String()
	return e
}

// open (re)opens the witness over its data folder, with these log keys (none: those
// of the state file).
func (e *env) open(logKeys ...string) {
	e.t.Helper()
	core, logs := observer.New(zapcore.InfoLevel)
	w, err := New(context.Background(), e.sw, Config{LogKeys: logKeys, Signer: e.signer, Dir: e.dir}, zap.New(core))
	if err != nil {
		e.t.Fatal(err)
	}
	e.w, e.logs = w, logs
	e.served.Store(w)
}

func (e *env) poll() error {
	e.t.Helper()
	return e.w.Poll(context.Background())
}

func (e *env) mustPoll() {
	e.t.Helper()
	if err := e.poll(); err != nil {
		e.t.Fatal(err)
	}
}

// latestSize is the size of the witness's latest cosigned checkpoint, checked to
// carry the log's signature and the witness's cosignature.
func (e *env) latestSize() uint64 {
	e.t.Helper()
	b := e.w.Latest()
	if b == nil {
		e.t.Fatal("the witness cosigned nothing")
	}
	cp, err := kt.OpenCheckpoint(b, e.log.VerifierKey())
	if err != nil {
		e.t.Fatal(err)
	}
	if _, err := kt.VerifyCosignature(b, e.signer.Key()); err != nil {
		e.t.Fatal(err)
	}
	return cp.Size
}

func (e *env) post(signed []byte) (int, []byte, http.Header) {
	e.t.Helper()
	resp, err := http.Post(e.url+"/checkpoint", "text/plain", bytes.NewReader(signed))
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, b, resp.Header
}

func (e *env) get(path string) (int, []byte) {
	e.t.Helper()
	resp, err := http.Get(e.url + path)
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, b
}

// wantFork checks that the witness reported exactly want forks, the last between
// held and conflicting (sizes), in every place it reports them: the error, its
// evidence file, GET /forks, and its log.
func (e *env) wantFork(err error, want int, heldSize, conflictingSize uint64, conflicting []byte) {
	e.t.Helper()
	var fe *kt.ForkError
	if !errors.As(err, &fe) || !errors.Is(err, kt.ErrInconsistent) {
		e.t.Fatalf("got %v; want a fork", err)
	}
	if fe.HeldSize != heldSize || fe.ConflictingSize != conflictingSize || !bytes.Equal(fe.Conflicting, conflicting) {
		e.t.Errorf("fork between %d and %d; want %d and %d, with the conflicting checkpoint", fe.HeldSize, fe.ConflictingSize, heldSize, conflictingSize)
	}
	// The evidence file: both checkpoints, each signed by the log.
	b, ferr := os.ReadFile(filepath.Join(e.dir, "forks.jsonl"))
	if ferr != nil {
		e.t.Fatalf("no evidence file: %v", ferr)
	}
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	if len(lines) != want {
		e.t.Fatalf("the evidence file holds %d forks, want %d", len(lines), want)
	}
	var f Fork
	if err := json.Unmarshal([]byte(lines[len(lines)-1]), &f); err != nil {
		e.t.Fatal(err)
	}
	held, herr := kt.OpenCheckpoint([]byte(f.Cosigned), e.log.VerifierKey())
	other, oerr := kt.OpenCheckpoint([]byte(f.Conflicting), e.log.VerifierKey())
	if herr != nil || oerr != nil || held.Size != heldSize || other.Size != conflictingSize || f.Conflicting != string(conflicting) {
		e.t.Errorf("evidence: %v, %v; sizes %v and %v", herr, oerr, f.CosignedSize, f.ConflictingSize)
	}
	if _, err := kt.VerifyCosignature([]byte(f.Cosigned), e.signer.Key()); err != nil {
		e.t.Errorf("the evidence's held checkpoint is not the one the witness cosigned: %v", err)
	}
	// GET /forks lists the same.
	status, body := e.get("/forks")
	var listed struct{ Forks []Fork }
	if err := json.Unmarshal(body, &listed); status != http.StatusOK || err != nil || len(listed.Forks) != want || listed.Forks[want-1].Conflicting != string(conflicting) {
		e.t.Errorf("GET /forks: %d %s", status, body)
	}
	// And the log says so.
	if n := e.logs.FilterMessageSnippet("FORK").Len(); n == 0 {
		e.t.Error("no FORK line in the witness's log")
	}
}

func TestWitnessCosignsAConsistentLog(t *testing.T) {
	e := newEnv(t, 3)
	e.mustPoll()
	if got := e.latestSize(); got != 3 {
		t.Fatalf("cosigned %d entries, want 3", got)
	}
	for _, n := range []int{1, 4, 9} {
		e.view.Append(t, ktlogtest.Publications(t, int(e.view.Checkpoint(t).Size), n)...)
		e.mustPoll()
	}
	if got := e.latestSize(); got != 17 {
		t.Fatalf("cosigned %d entries, want 17", got)
	}
	// GET /checkpoint: the latest, with the log's signature and the cosignature.
	status, body := e.get("/checkpoint")
	if status != http.StatusOK || !bytes.Equal(body, e.w.Latest()) {
		t.Fatalf("GET /checkpoint: %d\n%s", status, body)
	}
	if n := bytes.Count(body, []byte("\n— ")); n != 2 {
		t.Errorf("the cosigned checkpoint has %d signature lines, want 2 (the log's, the witness's):\n%s", n, body)
	}
	// An older size it cosigned, and one it skipped.
	if status, body := e.get("/checkpoint?size=4"); status != http.StatusOK || !bytes.Contains(body, []byte("\n4\n")) {
		t.Errorf("GET /checkpoint?size=4: %d\n%s", status, body)
	}
	if status, _ := e.get("/checkpoint?size=5"); status != http.StatusNotFound {
		t.Errorf("GET /checkpoint?size=5 (never the latest): %d, want 404", status)
	}
	if status, _ := e.get("/checkpoint?origin=other.example/log"); status != http.StatusNotFound {
		t.Errorf("GET /checkpoint of another origin: %d, want 404", status)
	}
	// A size the witness has not reached makes it look at the log at once.
	time.Sleep(pollSpacing)
	e.view.Append(t, ktlogtest.Publications(t, 17, 2)...)
	if status, body := e.get("/checkpoint?size=19"); status != http.StatusOK || !bytes.Contains(body, []byte("\n19\n")) {
		t.Errorf("GET /checkpoint?size=19 after the log grew: %d\n%s", status, body)
	}
	// A client submits the checkpoint it was given: the same answer.
	signed := e.view.Append(t, ktlogtest.Publications(t, 19, 1)...)
	status, body, _ = e.post(signed)
	if status != http.StatusOK || !bytes.HasPrefix(body, signed) {
		t.Fatalf("POST /checkpoint: %d\n%s", status, body)
	}
	if _, err := kt.VerifyCosignature(body, e.signer.Key()); err != nil {
		t.Fatal(err)
	}
	if status, again, _ := e.post(signed); status != http.StatusOK || !bytes.Equal(again, body) {
		t.Errorf("submitting the same checkpoint again: %d, another answer", status)
	}
	// The status page.
	status, body = e.get("/status")
	var st Status
	if err := json.Unmarshal(body, &st); status != http.StatusOK || err != nil || st.Size == nil || *st.Size != 20 || st.Witness != e.signer.Key().String() || st.LogKey != e.log.VerifierKey() {
		t.Errorf("GET /status: %d %s", status, body)
	}
	if len(e.w.Forks()) != 0 {
		t.Errorf("forks reported on an honest log: %v", e.w.Forks())
	}
}

// TestWitnessReportsASplitView: the server shows the witness and one client a log,
// and another client a log of the same size with other entries. The second
// checkpoint is never cosigned, and the witness reports the fork with both signed
// checkpoints, whether a client submits it or the server shows it to the witness.
func TestWitnessReportsASplitView(t *testing.T) {
	e := newEnv(t, 5)
	honest := e.view
	split := honest.Fork(t)
	a := honest.Append(t, ktlogtest.Publications(t, 5, 2)...)
	b := split.Append(t, ktlogtest.Publications(t, 100, 2)...) // same size, other cards
	e.mustPoll()
	if e.latestSize() != 7 {
		t.Fatal("the witness did not cosign the honest checkpoint")
	}
	// Client 1 submits the honest checkpoint: cosigned.
	if status, body, _ := e.post(a); status != http.StatusOK || !bytes.HasPrefix(body, a) {
		t.Fatalf("the honest checkpoint: %d\n%s", status, body)
	}
	// Client 2 submits the split one: refused, with the witness's own as evidence.
	status, body, hdr := e.post(b)
	if status != http.StatusConflict || !bytes.HasPrefix(body, a) || !strings.Contains(hdr.Get(ForkReasonHeader), "same size") {
		t.Fatalf("the split checkpoint: %d %q\n%s", status, hdr.Get(ForkReasonHeader), body)
	}
	_, err := e.w.Observe(context.Background(), b, "submitted")
	e.wantFork(err, 1, 7, 7, b)
	if bytes.Contains(e.w.Latest(), []byte(strings.Split(string(b), "\n")[2])) {
		t.Fatal("the witness cosigned the split checkpoint")
	}

	// The server now shows the witness itself the other view: refused by the poll.
	e.sw.to(t, split)
	e.wantFork(e.poll(), 1, 7, 7, b) // the same fork, recorded once
	// The split view grows: its checkpoint is not an extension of what was cosigned.
	c := split.Append(t, ktlogtest.Publications(t, 200, 3)...)
	e.wantFork(e.poll(), 2, 7, 10, c)
	if e.latestSize() != 7 {
		t.Fatal("the witness moved to the split view")
	}

	// Only the map differs: the same entries, a map root of the server's choosing.
	e.sw.to(t, honest)
	body7 := honest.Checkpoint(t)
	body7.MapRoot[0] ^= 1
	m := e.log.Sign(t, body7)
	_, err = e.w.Observe(context.Background(), m, "submitted")
	e.wantFork(err, 3, 7, 7, m)
}

// TestWitnessRefusesARewrittenLog: a checkpoint that does not extend the one the
// witness cosigned is refused as a fork; an honest older one is not cosigned but is
// no fork; checkpoints not signed by the log are refused without a trace.
func TestWitnessRefusesARewrittenLog(t *testing.T) {
	e := newEnv(t, 4)
	e.mustPoll()

	rewritten := e.log.NewView()
	rewritten.Append(t, ktlogtest.Publications(t, 50, 3)...)
	old := rewritten.Append(t, ktlogtest.Publications(t, 53, 3)...) // 6 entries, none of the first 4
	e.sw.to(t, rewritten)
	e.wantFork(e.poll(), 1, 4, 6, old)

	// An honest log whose proofs are wrong: not cosigned either.
	e.sw.to(t, e.view)
	grown := e.view.Append(t, ktlogtest.Publications(t, 4, 2)...)
	e.view.BreakProofs()
	e.wantFork(e.poll(), 2, 4, 6, grown)
	if e.latestSize() != 4 {
		t.Fatal("cosigned a checkpoint whose consistency proof failed")
	}

	// A smaller checkpoint of the same history: no fork, not cosigned. Of another: a fork.
	e2 := newEnv(t, 3)
	three := e2.view.Append(t, nil...) // the checkpoint of 3 entries
	e2.view.Append(t, ktlogtest.Publications(t, 3, 3)...)
	e2.mustPoll()
	if _, err := e2.w.Observe(context.Background(), three, "submitted"); !errors.Is(err, ErrNotCosigned) {
		t.Fatalf("an older checkpoint of the same log: %v, want ErrNotCosigned", err)
	}
	if status, _, _ := e2.post(three); status != http.StatusNotFound {
		t.Errorf("POST of an older checkpoint: %d, want 404", status)
	}
	other := e2.log.NewView()
	otherThree := other.Append(t, ktlogtest.Publications(t, 70, 3)...)
	e2.sw.to(t, other)
	other.Append(t, ktlogtest.Publications(t, 73, 3)...) // so that it can give a proof from 3 to 6
	_, err := e2.w.Observe(context.Background(), otherThree, "submitted")
	e2.wantFork(err, 1, 6, 3, otherThree)

	// Not the log's: refused, nothing recorded.
	stranger, err := kt.NewLogSigner(ktlogtest.Origin, bytes.Repeat([]byte{9}, 32))
	if err != nil {
		t.Fatal(err)
	}
	forged, err := kt.SignCheckpoint(e2.view.Checkpoint(t), stranger)
	if err != nil {
		t.Fatal(err)
	}
	tampered := bytes.Replace(three, []byte("\n3\n"), []byte("\n2\n"), 1)
	for _, tc := range []struct {
		name   string
		signed []byte
		status int
		kind   error
	}{
		{"another key", forged, http.StatusForbidden, kt.ErrUnknownLogKey},
		{"a changed body", tampered, http.StatusForbidden, kt.ErrBadSignature},
		{"not a note", []byte("hello"), http.StatusBadRequest, kt.ErrMalformed},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := e2.w.Observe(context.Background(), tc.signed, "submitted"); !errors.Is(err, tc.kind) {
				t.Errorf("Observe: %v, want %v", err, tc.kind)
			}
			if status, _, _ := e2.post(tc.signed); status != tc.status {
				t.Errorf("POST: %d, want %d", status, tc.status)
			}
		})
	}
	if n := len(e2.w.Forks()); n != 1 {
		t.Errorf("%d forks after refusing checkpoints the log never signed, want 1", n)
	}
}

// TestWitnessRemembersAcrossRestarts: what the witness cosigned is on disk before it
// is served, so a restarted witness still refuses a fork of it; its data folder
// follows one log, with one witness key.
func TestWitnessRemembersAcrossRestarts(t *testing.T) {
	e := newEnv(t, 4)
	split := e.view.Fork(t)
	e.mustPoll()
	e.view.Append(t, ktlogtest.Publications(t, 4, 2)...)
	e.mustPoll()
	other := split.Append(t, ktlogtest.Publications(t, 100, 2)...) // 6 entries, other cards

	e.open() // a restart, taking the log key from the state file
	if e.latestSize() != 6 {
		t.Fatalf("after a restart the witness's latest is %d entries, want 6", e.latestSize())
	}
	e.sw.to(t, split)
	e.wantFork(e.poll(), 1, 6, 6, other)

	// Another log, or another witness key, over the same folder: refused.
	otherLog, err := kt.NewLogSigner("kt.test/other", bytes.Repeat([]byte{3}, 32))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := New(context.Background(), e.sw, Config{LogKeys: []string{otherLog.VerifierKey()}, Signer: e.signer, Dir: e.dir}, zap.NewNop()); err == nil || !strings.Contains(err.Error(), "a witness follows one log") {
		t.Errorf("a data folder of another log: %v", err)
	}
	if _, err := New(context.Background(), e.sw, Config{Signer: testSigner(t, 2), Dir: e.dir}, zap.NewNop()); err == nil || !strings.Contains(err.Error(), "witness key") {
		t.Errorf("a data folder of another witness key: %v", err)
	}
	// The state file is the witness's alone.
	if fi, err := os.Stat(filepath.Join(e.dir, "state.json")); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("state.json: %v, mode %v", err, fi.Mode())
	}
}

// TestWitnessFollowsAndServes: Serve polls the log by itself and answers over HTTP
// until it is stopped.
func TestWitnessFollowsAndServes(t *testing.T) {
	log := ktlogtest.New(t)
	view := log.NewView()
	view.Append(t, ktlogtest.Publications(t, 0, 2)...)
	l, err := ktlog.Dial(ktlog.Config{Addr: view.Listen(t)})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	// No log key given: the log's own, on first use.
	w, err := New(context.Background(), l, Config{Signer: testSigner(t, 1), Dir: t.TempDir(), Interval: 20 * time.Millisecond}, zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(w.LogKeys(), []string{log.VerifierKey()}) || w.Origin() != ktlogtest.Origin {
		t.Fatalf("log keys %q origin %q", w.LogKeys(), w.Origin())
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Serve(ctx, lis) }()
	view.Append(t, ktlogtest.Publications(t, 2, 3)...)
	deadline := time.Now().Add(10 * time.Second)
	for {
		resp, err := http.Get("http://" + lis.Addr().String() + "/checkpoint")
		if err == nil {
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if cp, err := kt.OpenCheckpoint(body, log.VerifierKey()); err == nil && cp.Size == 5 {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatal("the witness did not cosign the grown log within 10 s")
		}
		time.Sleep(20 * time.Millisecond)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Serve: %v", err)
	}
}

// TestWitnessFollowsALogKeyRotation: a witness configured with the old log key keeps
// cosigning while both keys sign; given both keys (a restart with --log-key old,new)
// it keeps the log signatures of both under its cosignature; once the old key is
// retired, a witness given the new key follows (its state, cosigned under the old key,
// still opens), one that knows only the old key refuses the new checkpoints
// (ErrUnknownLogKey); and the rotation resets nothing: a rewritten log signed by the
// new key is a fork.
func TestWitnessFollowsALogKeyRotation(t *testing.T) {
	e := newEnv(t, 4)
	e.mustPoll()
	oldKey := e.log.VerifierKey()
	newKey := e.log.Rotate(t).VerifierKey()

	// Both keys sign; the witness knows the old one.
	e.view.Append(t, ktlogtest.Publications(t, 4, 2)...)
	e.mustPoll()
	if got := e.latestSize(); got != 6 {
		t.Fatalf("cosigned %d entries during the rotation; want 6", got)
	}
	// Restarted with both keys: the cosigned note carries both log signatures.
	e.open(oldKey, newKey)
	e.view.Append(t, ktlogtest.Publications(t, 6, 2)...)
	e.mustPoll()
	for _, k := range []string{oldKey, newKey} {
		if _, err := kt.OpenCheckpoint(e.w.Latest(), k); err != nil {
			t.Errorf("the checkpoint cosigned during the rotation, with %s alone: %v", k, err)
		}
	}

	// The old key retires: the new one alone signs.
	e.log.Retire()
	retired := e.view.Append(t, ktlogtest.Publications(t, 8, 2)...)
	e.mustPoll()
	if cp, err := kt.OpenCheckpoint(e.w.Latest(), newKey); err != nil || cp.Size != 10 {
		t.Fatalf("the checkpoint cosigned after the retirement: %+v, %v; want 10 entries, signed by the new key", cp, err)
	}
	// A restart with the new key only: its state (cosigned under the old key too) opens.
	e.open(newKey)
	e.view.Append(t, ktlogtest.Publications(t, 10, 1)...)
	e.mustPoll()
	if st := e.w.LogKeys(); len(st) != 1 || st[0] != newKey {
		t.Errorf("the witness follows %v; want the new key only", st)
	}
	if cp, err := kt.OpenCheckpoint(e.w.Latest(), newKey); err != nil || cp.Size != 11 {
		t.Fatalf("after a restart with the new key: %+v, %v", cp, err)
	}

	// A witness that knows only the retired key cannot vouch for what it cannot check.
	stale, err := New(context.Background(), e.sw, Config{LogKeys: []string{oldKey}, Signer: testSigner(t, 9), Dir: t.TempDir()}, zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := stale.Observe(context.Background(), retired, "submitted"); !errors.Is(err, kt.ErrUnknownLogKey) {
		t.Errorf("a witness with the retired key only, shown a checkpoint of the new key: %v; want ErrUnknownLogKey", err)
	}

	// The new key does not make a rewritten log acceptable: same size, other entries.
	rewritten := e.log.NewView()
	other := rewritten.Append(t, ktlogtest.Publications(t, 100, 11)...)
	_, err = e.w.Observe(context.Background(), other, "submitted")
	var fe *kt.ForkError
	if !errors.As(err, &fe) || !errors.Is(err, kt.ErrInconsistent) {
		t.Fatalf("a rewritten log signed by the new key: %v; want a fork", err)
	}
}
