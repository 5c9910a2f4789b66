package messaging

import (
	"context"
	"fmt"
	"maps"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"

	"github.com/umbra-e2ee/umbra/internal/servicetest"
	messagingv1 "github.com/umbra-e2ee/umbra/proto/umbra/messaging/v1"
)

const groupEventType = "umbra.group.v1.GroupEvent"

// TestPublishEvent: an event reaches every recipient's stream once; a retry delivers
// nothing again; another event under the same id is refused.
func TestPublishEvent(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{})
	a := e.newApp(t)
	us := e.newUsers(t, a, "alice", "bob", "carol")
	alice, bob, carol := us[0], us[1], us[2]
	group := e.groupID(t, a, "team")
	e.send(t, bob, alice.identity, "m", "a message first")
	s := e.subscribe(t, alice, nil, 0)
	s.untilCaughtUp(t)
	req := &messagingv1.PublishEventRequest{
		AppId: a.id, EventId: "ev-1", Type: groupEventType, GroupId: group,
		Recipients: []string{alice.identity, bob.identity, alice.identity}, Payload: []byte{1, 2, 3},
	}
	resp, err := e.client.PublishEvent(asService(), req)
	if err != nil || resp.GetDuplicate() || resp.GetRecipientCount() != 2 {
		t.Fatalf("publish: %v, %v", resp, err)
	}
	it := s.nextItem(t)
	ev := it.GetEvent()
	if it.GetInboxSequence() != 2 || ev.GetEventId() != "ev-1" || ev.GetType() != groupEventType || ev.GetGroupId() != group ||
		string(ev.GetPayload()) != "\x01\x02\x03" || !ev.GetCreatedAt().AsTime().Equal(e.clock.Now()) {
		t.Fatalf("alice's stream: %v", it)
	}
	for _, u := range []user{bob, carol} {
		head, err := e.store.InboxHead(a.id, u.identity)
		want := uint64(2)
		if u.identity == carol.identity {
			want = 0
		}
		if err != nil || head != want {
			t.Errorf("inbox of %s ends at %d (%v), want %d", u.identity, head, err, want)
		}
	}
	before := e.snapshot(t)
	again, err := e.client.PublishEvent(asService(), req)
	if err != nil || !again.GetDuplicate() || again.GetRecipientCount() != 2 {
		t.Errorf("retry: %v, %v", again, err)
	}
	if !maps.Equal(before, e.snapshot(t)) {
		t.Error("the retry changed the store")
	}
	for _, tc := range []struct {
		name string
		f    func(r *messagingv1.PublishEventRequest)
	}{
		{"another payload", func(r *messagingv1.PublishEventRequest) { r.Payload = []byte{9} }},
		{"other recipients", func(r *messagingv1.PublishEventRequest) { r.Recipients = []string{carol.identity} }},
		{"another type", func(r *messagingv1.PublishEventRequest) { r.Type = "umbra.backup.v1.BackupEvent" }},
		{"no group", func(r *messagingv1.PublishEventRequest) { r.GroupId = "" }},
	} {
		r := &messagingv1.PublishEventRequest{AppId: req.AppId, EventId: req.EventId, Type: req.Type, GroupId: req.GroupId, Recipients: req.Recipients, Payload: req.Payload}
		tc.f(r)
		_, err := e.client.PublishEvent(asService(), r)
		wantCode(t, err, codes.AlreadyExists, "event_id \"ev-1\" was already used")
	}
	if !maps.Equal(before, e.snapshot(t)) {
		t.Error("refused events changed the store")
	}
	select {
	case it := <-s.items:
		if it.GetHeartbeat() == nil {
			t.Errorf("alice got %v after the retries", it)
		}
	case <-time.After(100 * time.Millisecond):
	}
}

// TestPublishEventRefusals: each bad request is refused with what was wrong, and
// writes nothing; only services may publish.
func TestPublishEventRefusals(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{})
	a := e.newApp(t)
	alice := e.newUsers(t, a, "alice")[0]
	valid := func() *messagingv1.PublishEventRequest {
		return &messagingv1.PublishEventRequest{AppId: a.id, EventId: "e", Type: groupEventType, Recipients: []string{alice.identity}}
	}
	tooMany := make([]string, MaxEventRecipients+1)
	for i := range tooMany {
		tooMany[i] = testIdentity(i)
	}
	// publish is a PublishEvent, as ctx, of a valid request changed by f.
	publish := func(ctx context.Context, f func(r *messagingv1.PublishEventRequest)) func() error {
		return func() error {
			r := valid()
			f(r)
			_, err := e.client.PublishEvent(ctx, r)
			return err
		}
	}
	servicetest.CheckRefusals(t, []servicetest.Refusal{
		{"access token", publish(alice.ctx(), func(*messagingv1.PublishEventRequest) {}), codes.PermissionDenied, "only Umbra services"},
		{"no app", publish(asService(), func(r *messagingv1.PublishEventRequest) { r.AppId = "" }), codes.InvalidArgument, "app_id is empty"},
		{"malformed app", publish(asService(), func(r *messagingv1.PublishEventRequest) { r.AppId = "app_x" }), codes.InvalidArgument, "app_id \"app_x\" is malformed"},
		{"no event id", publish(asService(), func(r *messagingv1.PublishEventRequest) { r.EventId = "" }), codes.InvalidArgument, "event_id is empty"},
		{"long event id", publish(asService(), func(r *messagingv1.PublishEventRequest) { r.EventId = strings.Repeat("e", 129) }), codes.InvalidArgument, "129 bytes"},
		{"no type", publish(asService(), func(r *messagingv1.PublishEventRequest) { r.Type = "" }), codes.InvalidArgument, "type is empty"},
		{"type not a message name", publish(asService(), func(r *messagingv1.PublishEventRequest) { r.Type = "umbra..Event" }), codes.InvalidArgument, "not a full protobuf message name"},
		{"long type", publish(asService(), func(r *messagingv1.PublishEventRequest) { r.Type = strings.Repeat("a", 257) }), codes.InvalidArgument, "257 bytes"},
		{"malformed group", publish(asService(), func(r *messagingv1.PublishEventRequest) { r.GroupId = alice.identity }), codes.InvalidArgument, "group_id does not start with \"g_\""},
		{"large payload", publish(asService(), func(r *messagingv1.PublishEventRequest) { r.Payload = make([]byte, MaxEventPayload+1) }), codes.InvalidArgument, "at most 65536"},
		{"no recipients", publish(asService(), func(r *messagingv1.PublishEventRequest) { r.Recipients = nil }), codes.InvalidArgument, "recipients is empty"},
		{"malformed recipient", publish(asService(), func(r *messagingv1.PublishEventRequest) { r.Recipients = []string{alice.identity, "u_x"} }), codes.InvalidArgument, "recipients[1]"},
		{"too many recipients", publish(asService(), func(r *messagingv1.PublishEventRequest) { r.Recipients = tooMany }), codes.InvalidArgument, "more than 10000"},
	}, e.snapshot)
}

// TestPublishEventFanOut delivers one event to 10,000 identities in one transaction.
func TestPublishEventFanOut(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{quiet: true})
	a := e.newApp(t)
	alice := e.newUsers(t, a, "alice")[0]
	recipients := make([]string, MaxEventRecipients)
	recipients[0] = alice.identity
	for i := 1; i < len(recipients); i++ {
		recipients[i] = testIdentity(i)
	}
	resp, err := e.client.PublishEvent(asService(), &messagingv1.PublishEventRequest{AppId: a.id, EventId: "big", Type: groupEventType, Recipients: recipients})
	if err != nil || resp.GetRecipientCount() != MaxEventRecipients {
		t.Fatalf("publish: %v, %v", resp, err)
	}
	e.flush(t)
	if n := e.bucketLen(t, "inbox"); n != MaxEventRecipients {
		t.Errorf("%d inbox items, want %d", n, MaxEventRecipients)
	}
	items, _ := e.subscribe(t, alice, ptr(uint64(0)), 0).untilCaughtUp(t)
	if len(items) != 1 || items[0].GetEvent().GetEventId() != "big" {
		t.Errorf("alice's inbox: %v", items)
	}
}

// TestRetention: the sweeper deletes messages, events, their inbox items and
// idempotency keys once they expire, in bounded transactions, and never a sequence:
// conversations and inboxes go on numbering where they were.
func TestRetention(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{cfg: Config{Retention: time.Hour}})
	a := e.newApp(t)
	us := e.newUsers(t, a, "alice", "bob")
	e.longLived(t, us...)
	alice, bob := us[0], us[1]
	var conv string
	for i := 1; i <= 3; i++ {
		conv = e.send(t, alice, bob.identity, fmt.Sprint(i), body(i)).GetConversationId()
	}
	if _, err := e.client.PublishEvent(asService(), &messagingv1.PublishEventRequest{AppId: a.id, EventId: "ev", Type: groupEventType, Recipients: []string{bob.identity}}); err != nil {
		t.Fatal(err)
	}
	e.clock.Add(30 * time.Minute)
	m4 := e.send(t, alice, bob.identity, "4", body(4))
	if want := e.clock.Now().Add(time.Hour); !e.history(t, bob, conv)[3].GetExpiresAt().AsTime().Equal(want) {
		t.Errorf("message 4 expires at %v, want %v", e.history(t, bob, conv)[3].GetExpiresAt().AsTime(), want)
	}
	if n, err := e.srv.Sweep(context.Background()); err != nil || n != 0 {
		t.Fatalf("sweep before anything expired: %d, %v", n, err)
	}

	e.clock.Add(45 * time.Minute) // 1..3 and the event expired, 4 not yet
	if n, err := e.srv.Sweep(context.Background()); err != nil || n != 4 {
		t.Fatalf("sweep: %d, %v; want 4 deleted", n, err)
	}
	if h := e.history(t, bob, conv); !equalSeqs(seqs(h), []uint64{4}) {
		t.Errorf("history after the sweep: %v", seqs(h))
	}
	items, hb := e.subscribe(t, bob, ptr(uint64(0)), 0).untilCaughtUp(t)
	if len(items) != 1 || items[0].GetInboxSequence() != 5 || hb.GetInboxSequence() != 5 {
		t.Errorf("bob's inbox after the sweep: %v, %v; want message 4 at inbox sequence 5", items, hb)
	}
	// The idempotency key went with the message: the same id now stores a new message,
	// numbered after the others.
	again := e.send(t, alice, bob.identity, "1", body(1))
	if again.GetDuplicate() || again.GetSequence() != 5 {
		t.Errorf("resend of an expired id: %v", again)
	}
	if r, err := e.client.PublishEvent(asService(), &messagingv1.PublishEventRequest{AppId: a.id, EventId: "ev", Type: groupEventType, Recipients: []string{bob.identity}}); err != nil || r.GetDuplicate() {
		t.Errorf("republish of an expired event id: %v, %v", r, err)
	}

	e.clock.Add(2 * time.Hour)
	if n, err := e.srv.Sweep(context.Background()); err != nil || n != 3 {
		t.Fatalf("second sweep: %d, %v; want 3", n, err)
	}
	e.flush(t)
	for _, b := range []string{"log", "fanout", "messages", "inbox", "idempotency", "events", "expiry"} {
		if n := e.bucketLen(t, b); n != 0 {
			t.Errorf("%s holds %d entries after everything expired", b, n)
		}
	}
	list, err := e.client.ListConversations(bob.ctx(), &messagingv1.ListConversationsRequest{})
	if err != nil || len(list.GetConversations()) != 1 || list.GetConversations()[0].GetLatestSequence() != 0 || list.GetConversations()[0].GetLatestMessageAt() != nil {
		t.Errorf("conversation with nothing stored: %v, %v; want latest 0", list, err)
	}
	if h, err := e.client.History(bob.ctx(), &messagingv1.HistoryRequest{ConversationId: conv}); err != nil || h.GetLatestSequence() != 5 || len(h.GetMessages()) != 0 {
		t.Errorf("history: %v, %v", h, err)
	}
	if r := e.send(t, bob, alice.identity, "next", "next"); r.GetSequence() != 6 || m4.GetSequence() != 4 {
		t.Errorf("next message got sequence %d, want 6", r.GetSequence())
	}
}

// TestRetentionSweepsInBoundedTransactions: more expired entries than one transaction
// may delete are deleted over several.
func TestRetentionSweepsInBoundedTransactions(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{quiet: true, cfg: Config{Retention: time.Minute, SendRate: 1e6, SendBurst: 1e6}})
	a := e.newApp(t)
	us := e.newUsers(t, a, "alice", "bob")
	e.longLived(t, us...)
	const n = 30
	for i := range n {
		e.send(t, us[0], us[1].identity, fmt.Sprint(i), body(i))
	}
	e.clock.Add(2 * time.Minute)
	deleted, more, err := e.srv.commit.sweep(context.Background(), e.clock.Now(), 9) // each message is 3 units of work
	if err != nil || deleted != 3 || !more {
		t.Fatalf("bounded sweep: %d deleted, more %v, %v; want 3 and more", deleted, more, err)
	}
	if total, err := e.srv.Sweep(context.Background()); err != nil || total != n-3 {
		t.Fatalf("sweep of the rest: %d, %v", total, err)
	}
}

// TestSweeperRuns: the background sweeper deletes expired messages by itself.
func TestSweeperRuns(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{cfg: Config{Retention: time.Minute, SweepInterval: 20 * time.Millisecond}})
	us := e.newUsers(t, e.newApp(t), "alice", "bob")
	e.longLived(t, us...)
	conv := e.send(t, us[0], us[1].identity, "1", "one").GetConversationId()
	e.clock.Add(2 * time.Minute)
	deadline := time.Now().Add(5 * time.Second)
	for len(e.history(t, us[1], conv)) != 0 {
		if time.Now().After(deadline) {
			t.Fatal("the expired message is still there after 5 s")
		}
		time.Sleep(10 * time.Millisecond)
	}
}
