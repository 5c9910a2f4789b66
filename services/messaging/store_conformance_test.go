package messaging

import (
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/umbra-e2ee/umbra/internal/storetest"
	"github.com/umbra-e2ee/umbra/pkg/errs"
	messagingstoragev1 "github.com/umbra-e2ee/umbra/proto/umbra/storage/messaging/v1"
)

// The conformance suite: every behaviour of Store that the service relies on, run with
// the same code over each engine (TestBoltStore here, TestPostgresStore in
// store_postgres_test.go), as SpiceDB runs one datastore suite over each of its
// datastores. Tests of one engine alone (damage, verify, replay, partitions) stay
// beside their engine.

// storeEngine opens stores of one engine for the suite.
type storeEngine struct {
	storetest.Engine[Store]
	// poison returns a new, empty store and an op that makes the storage fail any
	// batch that holds it (a storage error, not a refusal of the op).
	poison func(t *testing.T) (Store, *Op)
}

func testStore(t *testing.T, e storeEngine) {
	storetest.Run(t, e, []storetest.Case[storeEngine]{
		{"ApplyRefusesOpsAlone", testApplyRefusesOpsAlone},
		{"StorageErrorFailsTheBatch", testStorageErrorFailsTheBatch},
		{"SequencesRetriesAndReopen", testSequencesRetriesAndReopen},
		{"IdempotencyKeys", testIdempotencyKeys},
		{"ServerTimeNeverGoesBack", testServerTimeNeverGoesBack},
		{"Events", testEvents},
		{"Inbox", testInbox},
		{"MessagesPaging", testMessagesPaging},
		{"Cursors", testCursors},
		{"GroupParticipations", testGroupParticipations},
		{"Retention", testRetention},
		{"AppSettings", testAppSettings},
		{"ConcurrentSendsAcrossReplicas", testConcurrentSends},
		{"ConcurrentInboxesAcrossReplicas", testConcurrentInboxes},
		{"ConcurrentKeyReuseAcrossReplicas", testConcurrentKeyReuse},
		{"ConcurrentEventsAcrossReplicas", testConcurrentEvents},
		{"ConcurrentSweepsAcrossReplicas", testConcurrentSweeps},
	})
}

// boltEngine is the bbolt engine for the suite: a file of the test's own; its
// replicas are one store whose writes take turns, as its one committer makes them.
var boltEngine = storeEngine{
	Engine: storetest.Engine[Store]{
		Open: storetest.File[Store]("messaging.db", openBolt).Open,
		Replicas: func(t *testing.T, n int) []Store {
			s := openBolt(t, filepath.Join(t.TempDir(), "messaging.db"))
			shared := &serialStore{Store: s}
			out := make([]Store, n)
			for i := range out {
				out[i] = shared
			}
			return out
		},
	},
	poison: func(t *testing.T) (Store, *Op) {
		// Index entries written with each batch, and bbolt refuses keys over 32 KiB:
		// the event's index entry fails the transaction.
		s := storetest.Open(t, func() (*BoltStore, error) {
			return OpenBoltStore(filepath.Join(t.TempDir(), "messaging.db"), StoreOptions{FlushEntries: 1})
		})
		return s, &Op{Event: &EventOp{AppID: cfApp, EventID: strings.Repeat("e", 40<<10), Type: "t.T", Recipients: []string{cfID(2)}}}
	},
}

func openBolt(t testing.TB, path string) *BoltStore {
	t.Helper()
	return storetest.Open(t, func() (*BoltStore, error) { return OpenBoltStore(path, StoreOptions{}) })
}

// serialStore makes the writes of its users take turns.
type serialStore struct {
	Store
	mu sync.Mutex
}

func (s *serialStore) Apply(b *Batch) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.Store.Apply(b)
}

func (s *serialStore) Sweep(now time.Time, limit int) (int, bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.Store.Sweep(now, limit)
}

func TestBoltStore(t *testing.T) { testStore(t, boltEngine) }

const cfApp = "app_conformance"

// cfT0 has nanoseconds, which both engines keep.
var cfT0 = time.Date(2026, 11, 1, 12, 0, 0, 123456789, time.UTC)

func cfID(i int) string { return fmt.Sprintf("u_%04d", i) }

// cfDirect stands for the service's id of a and b's direct conversation: the store
// takes conversation ids as given.
func cfDirect(a, b string) string {
	if b < a {
		a, b = b, a
	}
	return "d_" + a + "_" + b
}

func cfPair(a, b string) []string {
	if b < a {
		a, b = b, a
	}
	return []string{a, b}
}

// cfSend is a plaintext message from sender to peer.
func cfSend(sender, peer, cmid, body string) *Op {
	return &Op{Send: &SendOp{
		AppID: cfApp, Sender: sender, ConversationID: cfDirect(sender, peer), Kind: kindDirect,
		ClientMessageID: cmid, MessageKind: messagingstoragev1.StoredMessageKind_STORED_MESSAGE_KIND_PLAINTEXT,
		Envelope: []byte(body), Recipients: cfPair(sender, peer),
	}}
}

// cfGroupSend is an encrypted message to a group's members at a membership version.
func cfGroupSend(group, sender string, members []string, version uint64, cmid, body string) *Op {
	return &Op{Send: &SendOp{
		AppID: cfApp, Sender: sender, ConversationID: group, Kind: kindGroup,
		ClientMessageID: cmid, MessageKind: messagingstoragev1.StoredMessageKind_STORED_MESSAGE_KIND_ENCRYPTED,
		Epoch: 3, SenderCardID: []byte("card-" + sender), Envelope: []byte(body),
		Recipients: members, MembershipVersion: version,
	}}
}

func cfEvent(id string, payload string, recipients ...string) *Op {
	return &Op{Event: &EventOp{AppID: cfApp, EventID: id, Type: "umbra.test.Event", GroupID: "g_1", Payload: []byte(payload), Recipients: recipients}}
}

func cfCursor(identity, peer string, delivered, read uint64) *Op {
	return &Op{Cursors: &CursorOp{AppID: cfApp, Identity: identity, ConversationID: cfDirect(identity, peer), Kind: kindDirect, Peer: peer, Delivered: delivered, Read: read}}
}

// cfApply applies ops in one batch at now, with an hour's retention, and fails t on a
// storage error.
func cfApply(t *testing.T, s Store, now time.Time, ops ...*Op) *Batch {
	t.Helper()
	b := &Batch{Now: now, Retention: time.Hour, Ops: ops}
	if err := s.Apply(b); err != nil {
		t.Fatal(err)
	}
	return b
}

func wantOK(t *testing.T, ops ...*Op) {
	t.Helper()
	for i, op := range ops {
		if op.Err != nil {
			t.Fatalf("op %d: %v", i, op.Err)
		}
	}
}

func inboxSeqs(t *testing.T, s Store, identity string) []uint64 {
	t.Helper()
	items, _, err := s.Inbox(cfApp, identity, 0, 1000, 1<<30)
	if err != nil {
		t.Fatal(err)
	}
	var out []uint64
	for _, it := range items {
		out = append(out, it.Sequence)
	}
	return out
}

func messageSeqs(t *testing.T, s Store, conv string) []uint64 {
	t.Helper()
	recs, _, err := s.Messages(cfApp, conv, MessageQuery{Forward: true, Limit: 100000, MaxBytes: 1 << 30})
	if err != nil {
		t.Fatal(err)
	}
	var out []uint64
	for _, r := range recs {
		out = append(out, r.GetMessage().GetSequence())
	}
	return out
}

func seqRange(from, to uint64) []uint64 {
	var out []uint64
	for i := from; i <= to; i++ {
		out = append(out, i)
	}
	return out
}

// testApplyRefusesOpsAlone: in one batch, an op the state refuses writes nothing and
// fails no other; later ops see earlier ones, a retry included.
func testApplyRefusesOpsAlone(t *testing.T, e storeEngine) {
	s, _ := e.Open(t)
	alice, bob, carol := cfID(1), cfID(2), cfID(3)
	ops := []*Op{
		cfSend(alice, bob, "m1", "hello"),
		cfSend(alice, bob, "m1", "hello"),       // a retry in the same batch
		cfSend(alice, bob, "m1", "other bytes"), // the id reused
		cfSend(alice, carol, "m1", "hello"),     // the id reused in another conversation
		cfCursor(bob, alice, 0, 2),
		cfSend(bob, alice, "m1", "bob's own m1"), // ids are per sender
		cfCursor(bob, alice, 0, 2),
		{Send: &SendOp{AppID: cfApp, Sender: alice, ConversationID: cfDirect(alice, carol), Kind: kindDirect, ClientMessageID: "m9", Envelope: []byte("x"), Recipients: []string{carol, alice}}}, // unsorted
		{},
	}
	b := cfApply(t, s, cfT0, ops...)
	want := []struct {
		seq       uint64
		duplicate bool
		err       error
	}{{1, false, nil}, {1, true, nil}, {0, false, errs.ErrExists}, {0, false, errs.ErrExists}, {0, false, errs.ErrInvalid}, {2, false, nil}, {0, false, nil}, {0, false, nil}, {0, false, nil}}
	for i, w := range want {
		op := ops[i]
		if i >= 7 {
			if op.Err == nil {
				t.Errorf("op %d: stored, want refused", i)
			}
			continue
		}
		if !errors.Is(op.Err, w.err) || w.err == nil && op.Err != nil {
			t.Errorf("op %d: error %v, want %v", i, op.Err, w.err)
		}
		if op.Send != nil && w.err == nil && (op.Send.Sequence != w.seq || op.Send.Duplicate != w.duplicate) {
			t.Errorf("op %d: sequence %d duplicate %v, want %d %v", i, op.Send.Sequence, op.Send.Duplicate, w.seq, w.duplicate)
		}
	}
	if c := ops[6].Cursors.Cursor; c.GetReadSequence() != 2 || c.GetDeliveredSequence() != 2 {
		t.Errorf("cursor after the conversation's second message: %v", c)
	}
	if head, err := s.InboxHead(cfApp, bob); err != nil || head != 2 {
		t.Errorf("bob's inbox ends at %d (%v), want 2", head, err)
	}
	if head, err := s.InboxHead(cfApp, carol); err != nil || head != 0 {
		t.Errorf("carol's inbox ends at %d (%v), want 0: a refused op wrote", head, err)
	}
	if _, err := s.Conversation(cfApp, cfDirect(alice, carol)); !errors.Is(err, errs.ErrNotFound) {
		t.Errorf("the conversation of refused ops only: %v, want ErrNotFound", err)
	}
	if _, err := s.Participation(cfApp, carol, cfDirect(alice, carol)); !errors.Is(err, errs.ErrNotFound) {
		t.Errorf("carol's participation in a conversation of refused ops: %v, want ErrNotFound", err)
	}
	if len(b.Grown) != 2 {
		t.Errorf("grown inboxes %v, want alice's and bob's", b.Grown)
	}
	for _, g := range b.Grown {
		if g.Head != 2 || len(g.Items) != 2 || g.Items[0].Sequence != 1 || g.Items[1].Sequence != 2 ||
			string(g.Items[1].Record.GetMessage().GetEnvelope()) != "bob's own m1" {
			t.Errorf("grown inbox %s: head %d, items %v", g.Identity, g.Head, g.Items)
		}
	}
}

// testStorageErrorFailsTheBatch: a storage failure fails every op of the batch and
// commits nothing: the next batch numbers from where the last committed one stopped.
func testStorageErrorFailsTheBatch(t *testing.T, e storeEngine) {
	s, poison := e.poison(t)
	alice, bob := cfID(1), cfID(2)
	cfApply(t, s, cfT0, cfSend(alice, bob, "m0", "first"))
	ops := []*Op{cfSend(alice, bob, "m1", "one"), poison, cfSend(bob, alice, "m2", "two"), cfCursor(bob, alice, 1, 1)}
	if err := s.Apply(&Batch{Now: cfT0, Retention: time.Hour, Ops: ops}); err == nil {
		t.Fatal("Apply with a poisoned op: no error")
	}
	for i, op := range ops {
		if op.Err != nil {
			t.Errorf("op %d has its own error %v; the batch's error is every op's", i, op.Err)
		}
	}
	if head, err := s.InboxHead(cfApp, bob); err != nil || head != 1 {
		t.Errorf("bob's inbox ends at %d (%v) after the failed batch, want 1", head, err)
	}
	if _, err := s.Sent(cfApp, alice, "m1"); !errors.Is(err, errs.ErrNotFound) {
		t.Errorf("a message of the failed batch: %v, want ErrNotFound", err)
	}
	if p, err := s.Participation(cfApp, bob, cfDirect(alice, bob)); err != nil || p.GetReadSequence() != 0 {
		t.Errorf("bob's cursor after the failed batch: %v, %v", p, err)
	}
	retry := []*Op{cfSend(alice, bob, "m1", "one"), cfSend(bob, alice, "m2", "two")}
	cfApply(t, s, cfT0, retry...)
	wantOK(t, retry...)
	if retry[0].Send.Sequence != 2 || retry[1].Send.Sequence != 3 || retry[0].Send.Duplicate {
		t.Errorf("after the failed batch: sequences %d and %d, want 2 and 3", retry[0].Send.Sequence, retry[1].Send.Sequence)
	}
}

// testSequencesRetriesAndReopen: sequences follow on from batch to batch without gaps;
// a retry in a later batch gets the stored message's sequence, time and expiry; what
// is read back is what was stored, to the nanosecond; everything survives a reopen.
func testSequencesRetriesAndReopen(t *testing.T, e storeEngine) {
	s, reopen := e.Open(t)
	alice, bob := cfID(1), cfID(2)
	conv := cfDirect(alice, bob)
	first := []*Op{cfSend(alice, bob, "m1", "one"), cfSend(bob, alice, "m2", "two"), cfSend(alice, bob, "m\x00é", "three")}
	cfApply(t, s, cfT0, first...)
	wantOK(t, first...)
	second := []*Op{cfSend(alice, bob, "m\x00é", "three"), cfSend(alice, bob, "m4", "four")}
	cfApply(t, s, cfT0.Add(time.Minute), second...)
	wantOK(t, second...)
	if r := second[0].Send; !r.Duplicate || r.Sequence != 3 || !r.ServerTime.Equal(cfT0) || !r.ExpiresAt.Equal(cfT0.Add(time.Hour)) {
		t.Errorf("retry: %+v; want a duplicate of sequence 3 at %v", r, cfT0)
	}
	if r := second[1].Send; r.Duplicate || r.Sequence != 4 || !r.ServerTime.Equal(cfT0.Add(time.Minute)) {
		t.Errorf("next message: sequence %d at %v, want 4 at %v", r.Sequence, r.ServerTime, cfT0.Add(time.Minute))
	}
	check := func(s Store) {
		t.Helper()
		rec, err := s.Sent(cfApp, alice, "m\x00é")
		if err != nil {
			t.Fatal(err)
		}
		m := rec.GetMessage()
		if rec.GetAppId() != cfApp || m.GetConversationId() != conv || m.GetSequence() != 3 || m.GetSender() != alice ||
			string(m.GetEnvelope()) != "three" || !m.GetServerTime().AsTime().Equal(cfT0) || !rec.GetExpiresAt().AsTime().Equal(cfT0.Add(time.Hour)) ||
			m.GetKind() != messagingstoragev1.StoredMessageKind_STORED_MESSAGE_KIND_PLAINTEXT {
			t.Errorf("Sent: %v", rec)
		}
		if _, err := s.Sent(cfApp, alice, "m"); !errors.Is(err, errs.ErrNotFound) {
			t.Errorf("Sent of a key that is a prefix of a stored one: %v, want ErrNotFound", err)
		}
		if _, err := s.Sent(cfApp, bob, "m1"); !errors.Is(err, errs.ErrNotFound) {
			t.Errorf("Sent of another sender's key: %v, want ErrNotFound", err)
		}
		c, err := s.Conversation(cfApp, conv)
		if err != nil {
			t.Fatal(err)
		}
		if c.GetLatestSequence() != 4 || c.GetKind() != kindDirect || !slices.Equal(c.GetParticipants(), cfPair(alice, bob)) ||
			!c.GetCreatedAt().AsTime().Equal(cfT0) || !c.GetLatestMessageAt().AsTime().Equal(cfT0.Add(time.Minute)) {
			t.Errorf("Conversation: %v", c)
		}
		if _, err := s.Conversation(cfApp, cfDirect(alice, cfID(3))); !errors.Is(err, errs.ErrNotFound) {
			t.Errorf("Conversation never started: %v, want ErrNotFound", err)
		}
		if _, err := s.Conversation("app_other", conv); !errors.Is(err, errs.ErrNotFound) {
			t.Errorf("Conversation of another app: %v, want ErrNotFound", err)
		}
		if got := messageSeqs(t, s, conv); !slices.Equal(got, seqRange(1, 4)) {
			t.Errorf("messages %v, want 1 to 4", got)
		}
		for seq, want := range map[uint64]bool{0: false, 1: true, 4: true, 5: false} {
			if has, err := s.HasMessage(cfApp, conv, seq); err != nil || has != want {
				t.Errorf("HasMessage(%d) = %v, %v; want %v", seq, has, err, want)
			}
		}
		for _, id := range []string{alice, bob} {
			if got := inboxSeqs(t, s, id); !slices.Equal(got, seqRange(1, 4)) {
				t.Errorf("%s's inbox %v, want 1 to 4", id, got)
			}
			p, err := s.Participation(cfApp, id, conv)
			if err != nil || p.GetConversationId() != conv || p.GetKind() != kindDirect || p.GetPeer() == id || p.GetPeer() == "" {
				t.Errorf("%s's participation: %v, %v", id, p, err)
			}
		}
	}
	check(s)
	s = reopen(t)
	check(s)
	next := cfSend(bob, alice, "m5", "five")
	cfApply(t, s, cfT0.Add(2*time.Minute), next)
	wantOK(t, next)
	if next.Send.Sequence != 5 {
		t.Errorf("first message after a reopen: sequence %d, want 5", next.Send.Sequence)
	}
}

// testIdempotencyKeys: a key names one message per sender, for good until it expires.
func testIdempotencyKeys(t *testing.T, e storeEngine) {
	s, _ := e.Open(t)
	alice, bob, carol := cfID(1), cfID(2), cfID(3)
	m := cfSend(alice, bob, "k", "body")
	cfApply(t, s, cfT0, m)
	wantOK(t, m)
	epoch := cfSend(alice, bob, "k", "body")
	epoch.Send.Epoch = 1
	card := cfSend(alice, bob, "k", "body")
	card.Send.SenderCardID = []byte("other card")
	kind := cfSend(alice, bob, "k", "body")
	kind.Send.MessageKind = messagingstoragev1.StoredMessageKind_STORED_MESSAGE_KIND_ENCRYPTED
	for name, op := range map[string]*Op{
		"another conversation": cfSend(alice, carol, "k", "body"),
		"another envelope":     cfSend(alice, bob, "k", "bodY"),
		"another epoch":        epoch,
		"another card":         card,
		"another kind":         kind,
	} {
		cfApply(t, s, cfT0.Add(time.Second), op)
		if !errors.Is(op.Err, errs.ErrExists) {
			t.Errorf("%s with a used key: %v, want ErrExists", name, op.Err)
		}
	}
	retry, bobs := cfSend(alice, bob, "k", "body"), cfSend(bob, alice, "k", "bob's")
	cfApply(t, s, cfT0.Add(time.Second), retry, bobs)
	wantOK(t, retry, bobs)
	if !retry.Send.Duplicate || retry.Send.Sequence != 1 || bobs.Send.Duplicate || bobs.Send.Sequence != 2 {
		t.Errorf("retry %+v, bob's own key %+v", retry.Send, bobs.Send)
	}
	if _, err := s.Conversation(cfApp, cfDirect(alice, carol)); !errors.Is(err, errs.ErrNotFound) {
		t.Errorf("the conversation of a refused reuse: %v", err)
	}
}

// testServerTimeNeverGoesBack: a clock step backwards does not reorder a conversation.
func testServerTimeNeverGoesBack(t *testing.T, e storeEngine) {
	s, _ := e.Open(t)
	alice, bob := cfID(1), cfID(2)
	a := cfSend(alice, bob, "a", "x")
	cfApply(t, s, cfT0, a)
	b := cfSend(bob, alice, "b", "y")
	cfApply(t, s, cfT0.Add(-time.Hour), b)
	wantOK(t, a, b)
	if !b.Send.ServerTime.Equal(cfT0) || !b.Send.ExpiresAt.Equal(cfT0.Add(time.Hour)) {
		t.Errorf("after a clock step back: server time %v, expiry %v; want %v and an hour later", b.Send.ServerTime, b.Send.ExpiresAt, cfT0)
	}
	other := cfSend(alice, cfID(3), "c", "z") // another conversation takes the clock's time
	cfApply(t, s, cfT0.Add(-time.Hour), other)
	if !other.Send.ServerTime.Equal(cfT0.Add(-time.Hour)) {
		t.Errorf("a new conversation's first message: %v, want %v", other.Send.ServerTime, cfT0.Add(-time.Hour))
	}
}

// testEvents: an event reaches each recipient's inbox once, and its id names it for
// good until it expires.
func testEvents(t *testing.T, e storeEngine) {
	s, _ := e.Open(t)
	alice, bob, carol := cfID(1), cfID(2), cfID(3)
	ev := cfEvent("e\x001", "payload", alice, bob, carol)
	b := cfApply(t, s, cfT0, ev, cfSend(alice, bob, "m1", "x"))
	wantOK(t, ev)
	if ev.Event.Duplicate || ev.Event.RecipientCount != 3 {
		t.Errorf("event: %+v", ev.Event)
	}
	if len(b.Grown) != 3 {
		t.Errorf("grown: %v, want three inboxes", b.Grown)
	}
	retry := cfEvent("e\x001", "payload", alice, bob, carol)
	fewer := cfEvent("e\x001", "payload", alice, bob)
	payload := cfEvent("e\x001", "payload2", alice, bob, carol)
	typ := cfEvent("e\x001", "payload", alice, bob, carol)
	typ.Event.Type = "umbra.test.Other"
	plain := cfEvent("e", "payload", alice) // the key's prefix is another id
	cfApply(t, s, cfT0.Add(time.Second), retry, fewer, payload, typ, plain)
	if retry.Err != nil || !retry.Event.Duplicate || retry.Event.RecipientCount != 3 {
		t.Errorf("retry: %v %+v", retry.Err, retry.Event)
	}
	for name, op := range map[string]*Op{"recipients": fewer, "payload": payload, "type": typ} {
		if !errors.Is(op.Err, errs.ErrExists) {
			t.Errorf("event id reused with another %s: %v, want ErrExists", name, op.Err)
		}
	}
	if plain.Err != nil || plain.Event.Duplicate {
		t.Errorf("event e: %v %+v", plain.Err, plain.Event)
	}
	items, head, err := s.Inbox(cfApp, carol, 0, 10, 1<<20)
	if err != nil || head != 1 || len(items) != 1 {
		t.Fatalf("carol's inbox: %v, head %d, %v", items, head, err)
	}
	got := items[0].Record
	if got.GetAppId() != cfApp || got.GetEvent().GetEventId() != "e\x001" || got.GetEvent().GetType() != "umbra.test.Event" ||
		got.GetEvent().GetGroupId() != "g_1" || string(got.GetEvent().GetPayload()) != "payload" ||
		!got.GetEvent().GetCreatedAt().AsTime().Equal(cfT0) || !got.GetExpiresAt().AsTime().Equal(cfT0.Add(time.Hour)) || got.GetMessage() != nil {
		t.Errorf("carol's event: %v", got)
	}
	if got := inboxSeqs(t, s, alice); !slices.Equal(got, seqRange(1, 3)) {
		t.Errorf("alice's inbox %v, want 1 to 3 (the event, the message, event e)", got)
	}
}

// testInbox: an inbox's items come in order from any point, in pages bounded in count
// and bytes (at least one item), with the inbox's head.
func testInbox(t *testing.T, e storeEngine) {
	s, _ := e.Open(t)
	alice, bob := cfID(1), cfID(2)
	if items, head, err := s.Inbox(cfApp, alice, 0, 10, 100); err != nil || len(items) != 0 || head != 0 {
		t.Errorf("empty inbox: %v, head %d, %v", items, head, err)
	}
	if head, err := s.InboxHead(cfApp, alice); err != nil || head != 0 {
		t.Errorf("InboxHead of an empty inbox: %d, %v", head, err)
	}
	var ops []*Op
	for i := range 10 {
		if i%3 == 2 {
			ops = append(ops, cfEvent(fmt.Sprint("e", i), strings.Repeat("p", 100), alice))
		} else {
			ops = append(ops, cfSend(bob, alice, fmt.Sprint("m", i), strings.Repeat("m", 100)))
		}
	}
	cfApply(t, s, cfT0, ops[:4]...)
	cfApply(t, s, cfT0.Add(time.Second), ops[4:]...)
	wantOK(t, ops...)
	for _, tc := range []struct {
		after           uint64
		limit, maxBytes int
		want            []uint64
	}{
		{0, 100, 1 << 20, seqRange(1, 10)},
		{0, 3, 1 << 20, seqRange(1, 3)},
		{7, 100, 1 << 20, seqRange(8, 10)},
		{10, 100, 1 << 20, nil},
		{2, 100, 250, seqRange(3, 4)},
		{2, 100, 200, seqRange(3, 4)},
		{2, 100, 199, seqRange(3, 3)},
		{2, 100, 1, seqRange(3, 3)}, // at least one
	} {
		items, head, err := s.Inbox(cfApp, alice, tc.after, tc.limit, tc.maxBytes)
		if err != nil {
			t.Fatal(err)
		}
		var got []uint64
		for _, it := range items {
			got = append(got, it.Sequence)
			if isEvent := it.Sequence%3 == 0; isEvent != (it.Record.GetEvent() != nil) {
				t.Errorf("item %d: %v", it.Sequence, it.Record)
			}
		}
		if !slices.Equal(got, tc.want) || head != 10 {
			t.Errorf("Inbox(after %d, %d items, %d bytes): %v head %d; want %v head 10", tc.after, tc.limit, tc.maxBytes, got, head, tc.want)
		}
	}
	if head, err := s.InboxHead(cfApp, alice); err != nil || head != 10 {
		t.Errorf("InboxHead: %d, %v", head, err)
	}
	if items, head, err := s.Inbox("app_other", alice, 0, 10, 1<<20); err != nil || len(items) != 0 || head != 0 {
		t.Errorf("alice's inbox in another app: %v, head %d, %v", items, head, err)
	}
}

// testMessagesPaging: a conversation pages up and down, bounded in count and bytes
// (at least one message), says whether there is more, and hides what a group member
// may not see (NotBefore).
func testMessagesPaging(t *testing.T, e storeEngine) {
	s, _ := e.Open(t)
	alice, bob := cfID(1), cfID(2)
	conv := cfDirect(alice, bob)
	for i := range 10 {
		op := cfSend(alice, bob, fmt.Sprint("m", i), strings.Repeat("x", 100))
		cfApply(t, s, cfT0.Add(time.Duration(i)*time.Second), op)
		wantOK(t, op)
	}
	for _, tc := range []struct {
		name string
		q    MessageQuery
		want []uint64
		more bool
	}{
		{"forward from the start", MessageQuery{Forward: true, Limit: 3}, []uint64{1, 2, 3}, true},
		{"forward to the end", MessageQuery{Forward: true, After: 7, Limit: 3}, []uint64{8, 9, 10}, false},
		{"forward past the end", MessageQuery{Forward: true, After: 10, Limit: 3}, nil, false},
		{"forward across the end", MessageQuery{Forward: true, After: 8, Limit: 3}, []uint64{9, 10}, false},
		{"backward from the end", MessageQuery{Before: 11, Limit: 3}, []uint64{10, 9, 8}, true},
		{"backward to the start", MessageQuery{Before: 3, Limit: 3}, []uint64{2, 1}, false},
		{"backward from 1", MessageQuery{Before: 1, Limit: 3}, nil, false},
		{"bytes", MessageQuery{Forward: true, Limit: 10, MaxBytes: 250}, []uint64{1, 2}, true},
		{"at least one", MessageQuery{Before: 11, Limit: 10, MaxBytes: 1}, []uint64{10}, true},
		{"not before, forward", MessageQuery{Forward: true, Limit: 10, NotBefore: cfT0.Add(7 * time.Second)}, []uint64{8, 9, 10}, false},
		{"not before, backward", MessageQuery{Before: 11, Limit: 10, NotBefore: cfT0.Add(7 * time.Second)}, []uint64{10, 9, 8}, false},
		{"not before, backward, paged", MessageQuery{Before: 11, Limit: 2, NotBefore: cfT0.Add(7 * time.Second)}, []uint64{10, 9}, true},
		{"not before, to the nanosecond", MessageQuery{Forward: true, Limit: 10, NotBefore: cfT0.Add(7*time.Second + 1)}, []uint64{9, 10}, false},
	} {
		if tc.q.MaxBytes == 0 {
			tc.q.MaxBytes = 1 << 20
		}
		recs, more, err := s.Messages(cfApp, conv, tc.q)
		if err != nil {
			t.Fatal(err)
		}
		var got []uint64
		for _, r := range recs {
			got = append(got, r.GetMessage().GetSequence())
		}
		if !slices.Equal(got, tc.want) || more != tc.more {
			t.Errorf("%s: %v more %v; want %v more %v", tc.name, got, more, tc.want, tc.more)
		}
	}
	if recs, more, err := s.Messages(cfApp, cfDirect(alice, cfID(3)), MessageQuery{Forward: true, Limit: 10, MaxBytes: 100}); err != nil || len(recs) != 0 || more {
		t.Errorf("a conversation never started: %v %v %v", recs, more, err)
	}
}

// testCursors: cursors only move forwards, read implies delivered, and neither passes
// the conversation's latest sequence; participations list in conversation id order.
func testCursors(t *testing.T, e storeEngine) {
	s, _ := e.Open(t)
	alice, bob := cfID(1), cfID(2)
	conv := cfDirect(alice, bob)
	// A conversation without messages: cursors at 0 change nothing, above are refused.
	zero, above := cfCursor(bob, alice, 0, 0), cfCursor(bob, alice, 1, 0)
	cfApply(t, s, cfT0, zero, above)
	if zero.Err != nil || zero.Cursors.Cursor.GetConversationId() != conv || zero.Cursors.Cursor.GetPeer() != alice {
		t.Errorf("cursor at 0 before any message: %v %v", zero.Err, zero.Cursors.Cursor)
	}
	if !errors.Is(above.Err, errs.ErrInvalid) {
		t.Errorf("cursor above a conversation without messages: %v", above.Err)
	}
	if _, err := s.Participation(cfApp, bob, conv); !errors.Is(err, errs.ErrNotFound) {
		t.Errorf("participation without a message: %v", err)
	}
	var ops []*Op
	for i := range 5 {
		ops = append(ops, cfSend(alice, bob, fmt.Sprint("m", i), "x"))
	}
	cfApply(t, s, cfT0, ops...)
	at := cfT0.Add(time.Minute)
	for _, tc := range []struct {
		delivered, read uint64
		err             error
		wantD, wantR    uint64
	}{
		{2, 0, nil, 2, 0},
		{1, 0, nil, 2, 0}, // backwards: no change
		{0, 3, nil, 3, 3}, // read implies delivered
		{6, 0, errs.ErrInvalid, 3, 3},
		{0, 6, errs.ErrInvalid, 3, 3},
		{5, 4, nil, 5, 4},
	} {
		op := cfCursor(bob, alice, tc.delivered, tc.read)
		cfApply(t, s, at, op)
		if !errors.Is(op.Err, tc.err) || tc.err == nil && op.Err != nil {
			t.Errorf("cursor %d/%d: %v, want %v", tc.delivered, tc.read, op.Err, tc.err)
			continue
		}
		p, err := s.Participation(cfApp, bob, conv)
		if err != nil || p.GetDeliveredSequence() != tc.wantD || p.GetReadSequence() != tc.wantR {
			t.Errorf("after cursor %d/%d: %v, %v; want %d/%d", tc.delivered, tc.read, p, err, tc.wantD, tc.wantR)
		}
		if tc.err == nil && (op.Cursors.Cursor.GetDeliveredSequence() != tc.wantD || op.Cursors.Cursor.GetReadSequence() != tc.wantR) {
			t.Errorf("cursor %d/%d answered %v", tc.delivered, tc.read, op.Cursors.Cursor)
		}
	}
	if p, _ := s.Participation(cfApp, bob, conv); !p.GetCursorUpdatedAt().AsTime().Equal(at) || p.GetPeer() != alice || p.GetKind() != kindDirect {
		t.Errorf("participation: %v", p)
	}
	if p, err := s.Participation(cfApp, alice, conv); err != nil || p.GetCursorUpdatedAt() != nil || p.GetReadSequence() != 0 {
		t.Errorf("alice's participation: %v, %v", p, err)
	}
	// Participations list in conversation id order, from after.
	var more []*Op
	for i := 3; i < 8; i++ {
		more = append(more, cfSend(bob, cfID(i), fmt.Sprint("p", i), "x"))
	}
	cfApply(t, s, at, more...)
	wantOK(t, more...)
	var ids []string
	for after := ""; ; {
		page, err := s.Participations(cfApp, bob, after, 2)
		if err != nil {
			t.Fatal(err)
		}
		if len(page) == 0 {
			break
		}
		for _, p := range page {
			ids = append(ids, p.GetConversationId())
		}
		after = page[len(page)-1].GetConversationId()
	}
	want := []string{conv}
	for i := 3; i < 8; i++ {
		want = append(want, cfDirect(bob, cfID(i)))
	}
	slices.Sort(want)
	if !slices.Equal(ids, want) {
		t.Errorf("bob's participations %v, want %v", ids, want)
	}
	if page, err := s.Participations(cfApp, cfID(99), "", 10); err != nil || len(page) != 0 {
		t.Errorf("a stranger's participations: %v, %v", page, err)
	}
}

// testGroupParticipations: a group's members get a participation when a message is
// stored for a membership version they first appear in; those kept keep their cursors.
func testGroupParticipations(t *testing.T, e storeEngine) {
	s, _ := e.Open(t)
	a, b, c, d := cfID(1), cfID(2), cfID(3), cfID(4)
	const group = "g_group"
	first := cfGroupSend(group, a, []string{a, b, c}, 1, "g1", "one")
	cfApply(t, s, cfT0, first)
	wantOK(t, first)
	cur := &Op{Cursors: &CursorOp{AppID: cfApp, Identity: b, ConversationID: group, Kind: kindGroup, Read: 1}}
	cfApply(t, s, cfT0, cur)
	wantOK(t, cur)
	second := cfGroupSend(group, a, []string{a, b, c, d}, 2, "g2", "two")
	third := cfGroupSend(group, d, []string{a, b, c, d}, 2, "g3", "three")
	cfApply(t, s, cfT0.Add(time.Second), second, third)
	wantOK(t, second, third)
	if third.Send.Sequence != 3 {
		t.Errorf("third message: sequence %d", third.Send.Sequence)
	}
	conv, err := s.Conversation(cfApp, group)
	if err != nil || conv.GetKind() != kindGroup || conv.GetParticipantsVersion() != 2 || conv.GetLatestSequence() != 3 || len(conv.GetParticipants()) != 0 {
		t.Errorf("group conversation: %v, %v", conv, err)
	}
	for _, id := range []string{a, b, c, d} {
		p, err := s.Participation(cfApp, id, group)
		if err != nil || p.GetKind() != kindGroup || p.GetPeer() != "" {
			t.Errorf("%s's participation: %v, %v", id, p, err)
		}
	}
	if p, _ := s.Participation(cfApp, b, group); p.GetReadSequence() != 1 {
		t.Errorf("b's cursor after a new membership version: %v", p)
	}
	if got := inboxSeqs(t, s, d); !slices.Equal(got, []uint64{1, 2}) {
		t.Errorf("d's inbox %v", got)
	}
	if got := inboxSeqs(t, s, a); !slices.Equal(got, []uint64{1, 2, 3}) {
		t.Errorf("a's inbox %v", got)
	}
	rec, err := s.Sent(cfApp, d, "g3")
	if m := rec.GetMessage(); err != nil || m.GetEpoch() != 3 || string(m.GetSenderCardId()) != "card-"+d || m.GetKind() != messagingstoragev1.StoredMessageKind_STORED_MESSAGE_KIND_ENCRYPTED {
		t.Errorf("Sent of a group message: %v, %v", rec, err)
	}
}

// testRetention: a sweep at now deletes every message and event that expires at or
// before now, with its inbox items and keys; sequences are never handed out again,
// and a key whose message has gone names a new message.
func testRetention(t *testing.T, e storeEngine) {
	s, _ := e.Open(t)
	alice, bob := cfID(1), cfID(2)
	conv := cfDirect(alice, bob)
	m1, ev := cfSend(alice, bob, "m1", "one"), cfEvent("e1", "p", bob)
	cfApply(t, s, cfT0, m1, ev) // expire at t0 + 1h
	m2 := cfSend(bob, alice, "m2", "two")
	cfApply(t, s, cfT0.Add(30*time.Minute), m2)
	wantOK(t, m1, ev, m2)
	sweep := func(now time.Time, limit int) int {
		t.Helper()
		total := 0
		for range 100 {
			n, more, err := s.Sweep(now, limit)
			if err != nil {
				t.Fatal(err)
			}
			total += n
			if !more {
				return total
			}
		}
		t.Fatal("the sweep never ends")
		return 0
	}
	if n := sweep(cfT0.Add(time.Hour-1), 10000); n != 0 {
		t.Errorf("sweep before anything expired deleted %d", n)
	}
	if n := sweep(cfT0.Add(time.Hour), 1); n != 2 { // at its expiry time, exactly
		t.Errorf("sweep deleted %d, want the first message and the event", n)
	}
	if has, _ := s.HasMessage(cfApp, conv, 1); has {
		t.Error("the expired message is still there")
	}
	// A sweep with a clock behind (another replica's) brings nothing back.
	if _, _, err := s.Sweep(cfT0, 10000); err != nil {
		t.Fatal(err)
	}
	if has, _ := s.HasMessage(cfApp, conv, 1); has {
		t.Error("the expired message is back after a sweep with an earlier clock")
	}
	if got := messageSeqs(t, s, conv); !slices.Equal(got, []uint64{2}) {
		t.Errorf("messages after the sweep %v, want [2]", got)
	}
	items, head, err := s.Inbox(cfApp, bob, 0, 10, 1<<20)
	if err != nil || head != 3 || len(items) != 1 || items[0].Sequence != 3 {
		t.Errorf("bob's inbox after the sweep: %v head %d, %v; want item 3, head 3", items, head, err)
	}
	if _, err := s.Sent(cfApp, alice, "m1"); !errors.Is(err, errs.ErrNotFound) {
		t.Errorf("Sent of an expired message: %v", err)
	}
	if c, err := s.Conversation(cfApp, conv); err != nil || c.GetLatestSequence() != 2 {
		t.Errorf("the conversation after the sweep: %v, %v", c, err)
	}
	// Keys whose entries expired name new ones.
	again, evAgain := cfSend(alice, bob, "m1", "one"), cfEvent("e1", "p", bob)
	cfApply(t, s, cfT0.Add(time.Hour), again, evAgain)
	wantOK(t, again, evAgain)
	if again.Send.Duplicate || again.Send.Sequence != 3 || evAgain.Event.Duplicate {
		t.Errorf("a key used again after its message expired: %+v, event %+v; want new entries", again.Send, evAgain.Event)
	}
	if got := inboxSeqs(t, s, bob); !slices.Equal(got, []uint64{3, 4, 5}) {
		t.Errorf("bob's inbox %v, want 3 to 5", got)
	}
	if rec, err := s.Sent(cfApp, alice, "m1"); err != nil || rec.GetMessage().GetSequence() != 3 {
		t.Errorf("Sent of the new m1: %v, %v", rec, err)
	}
	if n := sweep(cfT0.Add(3*time.Hour), 10000); n != 3 {
		t.Errorf("the last sweep deleted %d, want 3", n)
	}
	if got := messageSeqs(t, s, conv); len(got) != 0 {
		t.Errorf("messages after everything expired: %v", got)
	}
	if items, head, err := s.Inbox(cfApp, bob, 0, 10, 1<<20); err != nil || len(items) != 0 || head != 5 {
		t.Errorf("bob's inbox after everything expired: %v head %d, %v", items, head, err)
	}
	next := cfSend(alice, bob, "m9", "nine")
	cfApply(t, s, cfT0.Add(3*time.Hour), next)
	if next.Send.Sequence != 4 {
		t.Errorf("a message after everything expired: sequence %d, want 4", next.Send.Sequence)
	}
}

func testAppSettings(t *testing.T, e storeEngine) {
	s, _ := e.Open(t)
	if _, err := s.AppSettings(cfApp); !errors.Is(err, errs.ErrNotFound) {
		t.Errorf("settings of an app with the defaults: %v", err)
	}
	for _, allow := range []bool{true, false} {
		rec := &messagingstoragev1.MessagingAppSettingsRecord{AppId: cfApp, AllowPlaintextDirect: allow}
		if err := s.PutAppSettings(rec); err != nil {
			t.Fatal(err)
		}
		got, err := s.AppSettings(cfApp)
		if err != nil || got.GetAllowPlaintextDirect() != allow || got.GetAppId() != cfApp {
			t.Errorf("settings: %v, %v", got, err)
		}
	}
}

// The concurrency cases: several replicas over one storage at once, each writing from
// one goroutine as its committer does.
