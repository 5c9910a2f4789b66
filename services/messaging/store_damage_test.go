package messaging

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"

	"github.com/umbra-e2ee/umbra/internal/boltdb"
	"github.com/umbra-e2ee/umbra/pkg/errs"
	messagingv1 "github.com/umbra-e2ee/umbra/proto/umbra/messaging/v1"
	messagingstoragev1 "github.com/umbra-e2ee/umbra/proto/umbra/storage/messaging/v1"
)

// rotFile flips the lowest bit of the 8 bytes at the middle of the only copy of marker
// in the file: bit rot inside a stored message, which leaves bbolt's pages sound.
func rotFile(t *testing.T, path, marker string) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if n := bytes.Count(b, []byte(marker)); n != 1 {
		t.Fatalf("%q is %d times in %s, want once", marker, n, path)
	}
	off := bytes.Index(b, []byte(marker)) + len(marker)/2
	for i := range 8 {
		b[off+i] ^= 0x01
	}
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

const testApp = "app_aaaaaaaaaaaaaaaaaaaaaaaaaa"

// directOp is a message from sender to peer.
func directOp(sender, peer, cmid, body string) *Op {
	return &Op{Send: &SendOp{
		AppID: testApp, Sender: sender, ConversationID: directID(testApp, sender, peer), Kind: kindDirect,
		ClientMessageID: cmid, MessageKind: messagingstoragev1.StoredMessageKind_STORED_MESSAGE_KIND_PLAINTEXT,
		Envelope: []byte(body), Recipients: sortedPair(sender, peer),
	}}
}

// rottingBody is a plaintext message whose bytes rot in the tests below.
var rottingBody = "a plaintext message that will rot on disk: " + strings.Repeat("m", 40)

// TestBitRotInAStoredMessageIsRefused: eight flipped bytes inside a stored plaintext
// message are refused (DATA_LOSS, a message that says nothing of the store's insides)
// by History and Subscribe, instead of being served altered; the messages around it
// are served; a retry of the damaged message is refused alone, without failing the
// other messages of its batch; Verify finds it.
func TestBitRotInAStoredMessageIsRefused(t *testing.T) {
	dir := t.TempDir()
	e := newEnv(t, envOptions{dir: dir})
	alice, bob := e.aliceAndBob(t)
	for i := range 3 {
		e.send(t, alice, bob.identity, "before-"+body(i), body(i))
	}
	e.send(t, alice, bob.identity, "rotting", rottingBody)
	e.send(t, alice, bob.identity, "after", "the message after")
	e.stop()
	path := filepath.Join(dir, "messaging.db")
	rotFile(t, path, rottingBody)

	r, err := Verify(path)
	if err != nil {
		t.Fatal(err)
	}
	if len(r.Problems) != 1 || !strings.Contains(r.Problems[0], `bucket "log"`) || !strings.Contains(r.Problems[0], "fails its checksum") {
		t.Errorf("Verify: %q, want the one damaged log entry", r.Problems)
	}

	e = newEnv(t, envOptions{dir: dir, clock: e.clock, damaged: true})
	_, err = e.client.History(bob.ctx(), &messagingv1.HistoryRequest{ConversationId: alice.identity, AfterSequence: ptr(uint64(0))})
	wantCode(t, err, codes.DataLoss, errs.DamagedMessage)
	// (A page reads one message beyond its size, to say whether there are more.)
	page, err := e.client.History(bob.ctx(), &messagingv1.HistoryRequest{ConversationId: alice.identity, AfterSequence: ptr(uint64(0)), PageSize: 2})
	if err != nil || len(page.GetMessages()) != 2 {
		t.Errorf("the messages before the damaged one: %v, %v", page, err)
	}
	page, err = e.client.History(bob.ctx(), &messagingv1.HistoryRequest{ConversationId: alice.identity, AfterSequence: ptr(uint64(4))})
	if err != nil || len(page.GetMessages()) != 1 || string(page.GetMessages()[0].GetEnvelope()) != "the message after" {
		t.Errorf("the message after the damaged one: %v, %v", page, err)
	}
	s := e.subscribe(t, bob, ptr(uint64(0)), 0)
	for ended := false; !ended; {
		select {
		case it := <-s.items:
			if env := it.GetMessage().GetEnvelope(); bytes.Contains(env, []byte("rot")) {
				t.Fatalf("Subscribe served the damaged message: %q", env)
			}
		case err := <-s.done:
			wantCode(t, err, codes.DataLoss, errs.DamagedMessage)
			ended = true
		case <-time.After(10 * time.Second):
			t.Fatal("Subscribe neither failed nor served the damaged message")
		}
	}

	// The store's error names the file, the bucket and the key, for the log.
	_, _, err = e.store.Messages(alice.app.id, directID(alice.app.id, alice.identity, bob.identity), MessageQuery{Forward: true, Limit: 10, MaxBytes: 1 << 20})
	if !errors.Is(err, errs.ErrDamaged) || !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), `bucket "log"`) {
		t.Errorf("Messages: %v, want ErrDamaged naming %s and the log bucket", err, path)
	}

	// A retry of the damaged message, in one batch with a new message.
	retry := &Op{Send: &SendOp{AppID: alice.app.id, Sender: alice.identity, ConversationID: directID(alice.app.id, alice.identity, bob.identity),
		Kind: kindDirect, ClientMessageID: "rotting", Envelope: []byte(rottingBody), Recipients: sortedPair(alice.identity, bob.identity)}}
	fresh := &Op{Send: &SendOp{AppID: alice.app.id, Sender: alice.identity, ConversationID: directID(alice.app.id, alice.identity, bob.identity),
		Kind: kindDirect, ClientMessageID: "fresh", Envelope: []byte("fresh"), Recipients: sortedPair(alice.identity, bob.identity)}}
	var applyErr error
	if err := e.srv.commit.do(t.Context(), func() {
		applyErr = e.store.Apply(&Batch{Now: e.clock.Now(), Retention: time.Hour, Ops: []*Op{retry, fresh}})
	}); err != nil || applyErr != nil {
		t.Fatal(err, applyErr)
	}
	if !errors.Is(retry.Err, errs.ErrDamaged) || fresh.Err != nil || fresh.Send.Sequence != 6 {
		t.Errorf("retry: %v; fresh: %v, sequence %d; want the retry refused alone", retry.Err, fresh.Err, fresh.Send.Sequence)
	}
}

// TestOpenRefusesADamagedLogEntryToReplay: a log entry that the start-up rebuild reads
// (stored, not yet indexed, when the process was killed) and that has rotted stops the
// store from opening with a DamagedError naming the file; nothing panics.
func TestOpenRefusesADamagedLogEntryToReplay(t *testing.T) {
	path := filepath.Join(t.TempDir(), "messaging.db")
	s, err := OpenBoltStore(path, StoreOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Apply(&Batch{Now: time.Now(), Retention: time.Hour, Ops: []*Op{directOp(testIdentity(1), testIdentity(2), "m", rottingBody)}}); err != nil {
		t.Fatal(err)
	}
	s.DB().Close() // killed: the index entries in memory are lost
	rotFile(t, path, rottingBody)
	_, err = OpenBoltStore(path, StoreOptions{})
	var d *boltdb.DamagedError
	if !errors.As(err, &d) || d.Path != path {
		t.Fatalf("OpenBoltStore: %v, want a DamagedError for %s", err, path)
	}
}
