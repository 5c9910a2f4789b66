package sdk

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/umbra-e2ee/umbra/internal/ktlog"
	"github.com/umbra-e2ee/umbra/internal/ktlog/ktlogtest"
	"github.com/umbra-e2ee/umbra/internal/witness"
	"github.com/umbra-e2ee/umbra/pkg/kt"
)

// serveHTTP serves h on a loopback address until the test ends, and returns its URL
// and a function that stops it early.
func serveHTTP(t *testing.T, h http.Handler) (string, func()) {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: h}
	go srv.Serve(lis)
	t.Cleanup(func() { srv.Close() })
	return "http://" + lis.Addr().String(), func() { srv.Close() }
}

// startWitness runs a real witness (internal/witness) of the log at view, with a key
// made of b, and returns it as the client configures it, and the witness.
func startWitness(t *testing.T, log *ktlogtest.Log, view *ktlogtest.View, b byte) (Witness, *witness.Witness, func()) {
	t.Helper()
	l, err := ktlog.Dial(ktlog.Config{Addr: view.Listen(t)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	signer, err := kt.NewWitnessSigner("witness.test/w"+string(rune('0'+b)), bytes.Repeat([]byte{b}, 32))
	if err != nil {
		t.Fatal(err)
	}
	w, err := witness.New(context.Background(), l, witness.Config{LogKeys: []string{log.VerifierKey()}, Signer: signer, Dir: t.TempDir()}, zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	url, stop := serveHTTP(t, w.Handler())
	return Witness{Key: signer.Key().String(), URL: url}, w, stop
}

// TestCheckWitnessesRequiresTheQuorum: a checkpoint passes only with valid
// cosignatures of the quorum of the witnesses the client names; a witness that is
// down, one whose cosignature does not verify, and one the client does not name do
// not count.
func TestCheckWitnessesRequiresTheQuorum(t *testing.T) {
	log := ktlogtest.New(t)
	view := log.NewView()
	view.Append(t, ktlogtest.Publications(t, 0, 4)...)
	w1, _, _ := startWitness(t, log, view, 1)
	w2, _, stop2 := startWitness(t, log, view, 2)
	w3, _, _ := startWitness(t, log, view, 3)
	stranger, _, _ := startWitness(t, log, view, 4)
	signed := view.Append(t, ktlogtest.Publications(t, 4, 3)...)
	now := time.Now()
	ctx := context.Background()

	// A witness that answers with a cosignature that does not verify.
	liarSigner, _ := kt.NewWitnessSigner("witness.test/liar", bytes.Repeat([]byte{5}, 32))
	liarURL, _ := serveHTTP(t, http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		out, _ := liarSigner.Cosign(signed, now)
		i := bytes.LastIndex(out, []byte(" ")) + 1
		raw, _ := base64.StdEncoding.DecodeString(strings.TrimSpace(string(out[i:])))
		raw[len(raw)-1] ^= 1
		rw.Write(append(out[:i:i], base64.StdEncoding.EncodeToString(raw)+"\n"...))
	}))
	liar := Witness{Key: liarSigner.Key().String(), URL: liarURL}
	// One the client names, at the address of another witness.
	impostor := Witness{Key: w3.Key, URL: stranger.URL}

	got, err := CheckWitnesses(ctx, nil, []Witness{w1, w2, w3}, 2, []string{log.VerifierKey()}, signed, now)
	if err != nil {
		t.Fatalf("2 of 3 witnesses up: %v", err)
	}
	if n := bytes.Count(got, []byte("\n— ")); n != 4 || !bytes.HasPrefix(got, signed) {
		t.Errorf("the cosigned checkpoint has %d signature lines, want 4 (the log and 3 witnesses):\n%s", n, got)
	}
	if _, err := CheckWitnesses(ctx, nil, []Witness{w1, w3}, 0, []string{log.VerifierKey()}, signed, now); err != nil {
		t.Errorf("quorum 0 (all) with both up: %v", err)
	}
	stop2()
	for _, tc := range []struct {
		name      string
		witnesses []Witness
		quorum    int
		problem   string
		valid     int
	}{
		{"one down", []Witness{w1, w2}, 2, "witness.test/w2", 1},
		{"all of them, one down", []Witness{w1, w2, w3}, 0, "witness.test/w2", 2},
		{"a bad cosignature", []Witness{w1, liar}, 2, "witness.test/liar", 1},
		{"another witness at the address", []Witness{w1, impostor}, 2, "witness.test/w3", 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := CheckWitnesses(ctx, nil, tc.witnesses, tc.quorum, []string{log.VerifierKey()}, signed, now)
			var nw *kt.NotWitnessedError
			if !errors.As(err, &nw) || !errors.Is(err, kt.ErrNotWitnessed) || len(nw.Valid) != tc.valid {
				t.Fatalf("CheckWitnesses = %v; want a NotWitnessedError with %d valid cosignatures", err, tc.valid)
			}
			if !strings.Contains(err.Error(), tc.problem) {
				t.Errorf("the error does not name %s: %v", tc.problem, err)
			}
		})
	}
	// Not the log's checkpoint: refused before any witness is asked.
	stranger2, _ := kt.NewLogSigner(ktlogtest.Origin, bytes.Repeat([]byte{8}, 32))
	forged, _ := kt.SignCheckpoint(view.Checkpoint(t), stranger2)
	if _, err := CheckWitnesses(ctx, nil, []Witness{w1}, 1, []string{log.VerifierKey()}, forged, now); !errors.Is(err, kt.ErrUnknownLogKey) {
		t.Errorf("a checkpoint of another key: %v", err)
	}
}

// TestCheckWitnessesCatchesASplitView: the server shows this client a checkpoint of
// the same size as the one it showed the witness, with other entries. The client gets
// a ForkError with both signed checkpoints, and the witness recorded the fork.
func TestCheckWitnessesCatchesASplitView(t *testing.T) {
	log := ktlogtest.New(t)
	honest := log.NewView()
	honest.Append(t, ktlogtest.Publications(t, 0, 4)...)
	split := honest.Fork(t)
	honest.Append(t, ktlogtest.Publications(t, 4, 2)...)
	shown := split.Append(t, ktlogtest.Publications(t, 40, 2)...)
	wit, w, _ := startWitness(t, log, honest, 1)
	if err := w.Poll(context.Background()); err != nil {
		t.Fatal(err)
	}
	_, err := CheckWitnesses(context.Background(), nil, []Witness{wit}, 1, []string{log.VerifierKey()}, shown, time.Now())
	var fork *kt.ForkError
	if !errors.As(err, &fork) || !errors.Is(err, kt.ErrInconsistent) {
		t.Fatalf("CheckWitnesses = %v; want a ForkError", err)
	}
	if !bytes.Equal(fork.Conflicting, shown) || !bytes.Equal(fork.Held, w.Latest()) || fork.HeldSize != 6 || fork.ConflictingSize != 6 {
		t.Errorf("fork evidence: held %d, conflicting %d", fork.HeldSize, fork.ConflictingSize)
	}
	if len(w.Forks()) != 1 {
		t.Errorf("the witness recorded %d forks, want 1", len(w.Forks()))
	}
}

// TestClientWitnessHook: the client's hook passes checkpoints through without
// witnesses configured, and applies Config.Witnesses and WitnessQuorum otherwise.
func TestClientWitnessHook(t *testing.T) {
	log := ktlogtest.New(t)
	view := log.NewView()
	signed := view.Append(t, ktlogtest.Publications(t, 0, 2)...)
	wit, _, stop := startWitness(t, log, view, 1)
	newClient := func(ws []Witness, quorum int) *Client {
		return witnessClient(t, ws, quorum, 300*time.Millisecond)
	}
	keys := []string{log.VerifierKey()}
	if got, err := newClient(nil, 0).checkWitnesses(context.Background(), keys, signed); err != nil || !bytes.Equal(got, signed) {
		t.Fatalf("without witnesses: %v", err)
	}
	c := newClient([]Witness{wit}, 1)
	got, err := c.checkWitnesses(context.Background(), keys, signed)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kt.VerifyCosignature(got, mustWitnessKey(t, wit.Key)); err != nil {
		t.Fatalf("the returned checkpoint: %v", err)
	}
	stop()
	if _, err := c.checkWitnesses(context.Background(), keys, signed); !errors.Is(err, kt.ErrNotWitnessed) {
		t.Fatalf("with the witness down: %v, want ErrNotWitnessed", err)
	}
}

// witnessClient is a client (never dialled) that requires witnesses, with this
// KeyTransparencyWait.
func witnessClient(t *testing.T, ws []Witness, quorum int, wait time.Duration) *Client {
	t.Helper()
	c, err := New(context.Background(), Config{
		Addr: "127.0.0.1:1", Token: func(context.Context) (string, error) { return "", nil },
		KeystorePath: filepath.Join(t.TempDir(), "ks"), NoPassphrase: true, Witnesses: ws, WitnessQuorum: quorum,
		KeyTransparencyWait: wait,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// TestClientWaitsForASlowWitness: a witness that cannot cosign yet (it answers 503 to
// the first submissions, as one restarting or one poll behind does) is asked again
// within Config.KeyTransparencyWait, and the checkpoint passes once it cosigns; a
// witness that stays down still fails the check with ErrNotWitnessed, after about
// the wait and not much longer; a fork is returned at once, not retried.
func TestClientWaitsForASlowWitness(t *testing.T) {
	log := ktlogtest.New(t)
	view := log.NewView()
	signed := view.Append(t, ktlogtest.Publications(t, 0, 3)...)
	wit, w, _ := startWitness(t, log, view, 1)
	keys := []string{log.VerifierKey()}
	var asked atomic.Int32
	slowURL, _ := serveHTTP(t, http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		if asked.Add(1) <= 3 {
			http.Error(rw, "not yet", http.StatusServiceUnavailable)
			return
		}
		w.Handler().ServeHTTP(rw, r)
	}))
	slow := Witness{Key: wit.Key, URL: slowURL}

	got, err := witnessClient(t, []Witness{slow}, 1, 5*time.Second).checkWitnesses(context.Background(), keys, signed)
	if err != nil {
		t.Fatalf("a witness that cosigns on the fourth try: %v", err)
	}
	if _, err := kt.VerifyCosignature(got, mustWitnessKey(t, wit.Key)); err != nil {
		t.Fatalf("the checkpoint returned: %v", err)
	}
	if n := asked.Load(); n != 4 {
		t.Errorf("the witness was asked %d times; want 4", n)
	}

	// Always down: refused after the wait.
	downURL, _ := serveHTTP(t, http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		http.Error(rw, "down", http.StatusServiceUnavailable)
	}))
	start := time.Now()
	_, err = witnessClient(t, []Witness{{Key: wit.Key, URL: downURL}}, 1, 600*time.Millisecond).checkWitnesses(context.Background(), keys, signed)
	if took := time.Since(start); !errors.Is(err, kt.ErrNotWitnessed) || took < 600*time.Millisecond || took > 3*time.Second {
		t.Errorf("a witness that stays down: %v after %s; want ErrNotWitnessed after about 600ms", err, took)
	}

	// A fork: the witness cosigned another checkpoint of this size; no retry.
	forked := log.NewView()
	shown := forked.Append(t, ktlogtest.Publications(t, 100, 3)...)
	start = time.Now()
	_, err = witnessClient(t, []Witness{wit}, 1, 5*time.Second).checkWitnesses(context.Background(), keys, shown)
	var fork *kt.ForkError
	if !errors.As(err, &fork) || time.Since(start) > 2*time.Second {
		t.Errorf("a split view: %v after %s; want a ForkError at once", err, time.Since(start))
	}
}

func mustWitnessKey(t *testing.T, vkey string) *kt.WitnessKey {
	t.Helper()
	k, err := kt.ParseWitnessKey(vkey)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func TestParseWitness(t *testing.T) {
	s, _ := kt.NewWitnessSigner("witness.example/w1", bytes.Repeat([]byte{1}, 32))
	vkey := s.Key().String()
	w, err := ParseWitness(vkey + "@http://127.0.0.1:8091")
	if err != nil || w.Key != vkey || w.URL != "http://127.0.0.1:8091" {
		t.Fatalf("ParseWitness = %+v, %v", w, err)
	}
	for _, bad := range []string{vkey, "@http://x", vkey + "@ftp://x", "nope+1+2@http://x"} {
		if _, err := ParseWitness(bad); err == nil {
			t.Errorf("ParseWitness(%q) accepted it", bad)
		}
	}
}
