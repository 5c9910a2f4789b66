package messaging

import (
	"fmt"
	"maps"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc/codes"

	"github.com/umbra-e2ee/umbra/internal/servicetest"
	messagingv1 "github.com/umbra-e2ee/umbra/proto/umbra/messaging/v1"
)

// sendRefusal is a bad Send request, who sends it, and what it must get.
type sendRefusal struct {
	name string
	ctx  user
	req  *messagingv1.SendRequest
	code codes.Code
	msg  string
}

// sendRefusals stores one message in e and returns the bad requests that Send and
// SendStream must refuse.
func sendRefusals(t *testing.T, e *env) []sendRefusal {
	t.Helper()
	a, b := e.newApp(t), e.newApp(t)
	us := e.newUsers(t, a, "alice", "bob", "carol")
	alice, bob, carol := us[0], us[1], us[2]
	mallory := e.newUsers(t, b, "mallory")[0]
	// Alice rotated: her superseded card still signs valid headers.
	oldCard := alice.card
	alice.card = e.publishCard(t, alice, oldCard)
	aliceBob := e.send(t, alice, bob.identity, "m-1", "first").GetConversationId()
	group := e.groupID(t, a, "team")

	big := strings.Repeat("x", DefaultMaxEnvelopeBytes+1)
	with := func(f func(r *messagingv1.SendRequest)) *messagingv1.SendRequest {
		r := alice.sendReq(bob.identity, "m-2", "second")
		f(r)
		return r
	}
	return []sendRefusal{
		{"empty conversation_id", alice, with(func(r *messagingv1.SendRequest) { r.ConversationId = "" }), codes.InvalidArgument, "conversation_id is empty"},
		{"unknown kind of conversation_id", alice, with(func(r *messagingv1.SendRequest) { r.ConversationId = "x_" + strings.Repeat("a", 32) }), codes.InvalidArgument, "neither a user identity"},
		{"truncated peer", alice, with(func(r *messagingv1.SendRequest) { r.ConversationId = bob.identity[:10] }), codes.InvalidArgument, "a user identity is 34"},
		{"malformed direct id", alice, with(func(r *messagingv1.SendRequest) { r.ConversationId = "d_ABC" }), codes.InvalidArgument, "malformed"},
		{"self as peer", alice, with(func(r *messagingv1.SendRequest) { r.ConversationId = alice.identity }), codes.InvalidArgument, "your own identity"},
		{"unknown conversation", alice, with(func(r *messagingv1.SendRequest) { r.ConversationId = "d_" + strings.Repeat("a", 32) }), codes.PermissionDenied, "take part in no conversation"},
		{"non-participant", carol, with(func(r *messagingv1.SendRequest) { r.ConversationId = aliceBob }), codes.PermissionDenied, "take part in no conversation"},
		{"another app's user", mallory, with(func(r *messagingv1.SendRequest) { r.ConversationId = aliceBob }), codes.PermissionDenied, "take part in no conversation"},
		{"group without a group service", alice, with(func(r *messagingv1.SendRequest) { r.ConversationId = group }), codes.Unavailable, "need the group service"},
		{"empty client_message_id", alice, with(func(r *messagingv1.SendRequest) { r.ClientMessageId = "" }), codes.InvalidArgument, "client_message_id is empty"},
		{"oversized client_message_id", alice, with(func(r *messagingv1.SendRequest) { r.ClientMessageId = strings.Repeat("i", 129) }), codes.InvalidArgument, "129 bytes; at most 128"},
		{"no header", alice, with(func(r *messagingv1.SendRequest) { r.Header = nil }), codes.InvalidArgument, "header is missing"},
		{"kind unspecified", alice, with(func(r *messagingv1.SendRequest) { r.Header.Kind = messagingv1.MessageKind_MESSAGE_KIND_UNSPECIFIED }), codes.InvalidArgument, "MESSAGE_KIND_UNSPECIFIED"},
		{"unknown kind", alice, with(func(r *messagingv1.SendRequest) { r.Header.Kind = 7 }), codes.InvalidArgument, "header.kind is 7"},
		{"plaintext with an epoch", alice, with(func(r *messagingv1.SendRequest) { r.Header = plaintext(); r.Header.Epoch = 3 }), codes.InvalidArgument, "PLAINTEXT message carries no epoch"},
		{"plaintext naming a card", alice, with(func(r *messagingv1.SendRequest) { r.Header = plaintext(); r.Header.SenderCardId = alice.card }), codes.InvalidArgument, "names no card"},
		{"encrypted without a card", alice, with(func(r *messagingv1.SendRequest) { r.Header.SenderCardId = nil }), codes.InvalidArgument, "sender_card_id is 0 bytes"},
		{"encrypted with a short card id", alice, with(func(r *messagingv1.SendRequest) { r.Header.SenderCardId = alice.card[:31] }), codes.InvalidArgument, "31 bytes"},
		{"direct message with an epoch", alice, with(func(r *messagingv1.SendRequest) { r.Header.Epoch = 2 }), codes.InvalidArgument, "direct message carries no epoch"},
		{"empty envelope", alice, with(func(r *messagingv1.SendRequest) { r.Envelope = nil }), codes.InvalidArgument, "envelope is empty"},
		{"oversized envelope", alice, with(func(r *messagingv1.SendRequest) { r.Envelope = []byte(big) }), codes.InvalidArgument, "limit is 262144"},
		{"id reused with another envelope", alice, with(func(r *messagingv1.SendRequest) { r.ClientMessageId = "m-1" }), codes.AlreadyExists, "already used"},
		{"id reused in another conversation", alice, with(func(r *messagingv1.SendRequest) {
			r.ClientMessageId, r.ConversationId, r.Envelope = "m-1", carol.identity, []byte("first")
		}), codes.AlreadyExists, "already used"},
		{"id reused with another header", alice, with(func(r *messagingv1.SendRequest) {
			r.ClientMessageId, r.Header.SenderCardId, r.Envelope = "m-1", oldCard, []byte("first")
		}), codes.AlreadyExists, "already used"},
		{"no credential", user{}, with(func(*messagingv1.SendRequest) {}), codes.Unauthenticated, "missing credential"},
		{"app key as credential", user{token: a.key}, with(func(*messagingv1.SendRequest) {}), codes.Unauthenticated, ""},
	}
}

// TestSendRefusals: each bad request gets its code and a message that says what was
// wrong, and writes nothing.
func TestSendRefusals(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{})
	var cases []servicetest.Refusal
	for _, tc := range sendRefusals(t, e) {
		cases = append(cases, servicetest.Refusal{Name: tc.name, Call: e.sendCall(tc.ctx, tc.req), Code: tc.code, Msg: tc.msg})
	}
	servicetest.CheckRefusals(t, cases, e.snapshot)
}

// sendCall is a Send of req by u, for a table of refusals (servicetest.CheckRefusals).
func (e *env) sendCall(u user, req *messagingv1.SendRequest) func() error {
	return servicetest.Call(e.client.Send, u.ctx(), req)
}

// TestSendRateLimit: an identity over its send rate gets RESOURCE_EXHAUSTED; another
// identity is not affected.
func TestSendRateLimit(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{cfg: Config{SendRate: 0.001, SendBurst: 2}})
	alice, bob := e.aliceAndBob(t)
	e.send(t, alice, bob.identity, "1", "one")
	e.send(t, alice, bob.identity, "2", "two")
	before := e.snapshot(t)
	_, err := e.client.Send(alice.ctx(), alice.sendReq(bob.identity, "3", "three"))
	wantCode(t, err, codes.ResourceExhausted, "rate limit exceeded")
	if !maps.Equal(before, e.snapshot(t)) {
		t.Error("the refused message changed the store")
	}
	if r := e.send(t, bob, alice.identity, "1", "reply"); r.GetSequence() != 3 {
		t.Errorf("bob's message got sequence %d, want 3", r.GetSequence())
	}
}

// TestSendIdempotent: a retry returns the original sequence and time with duplicate
// set and stores nothing, whether the original's index entries are still in memory,
// written down, or rebuilt from the log after a crash.
func TestSendIdempotent(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	opts := envOptions{dir: dir, store: StoreOptions{FlushEntries: 1 << 30, FlushAge: time.Hour}}
	e := newEnv(t, opts)
	alice, bob := e.aliceAndBob(t)
	first := e.send(t, alice, bob.identity, "id-1", "hello")
	if first.GetSequence() != 1 || first.GetDuplicate() || !strings.HasPrefix(first.GetConversationId(), "d_") {
		t.Fatalf("first send: %v", first)
	}
	check := func(stage string, e *env, pending bool) {
		t.Helper()
		e.clock.Add(time.Minute) // a duplicate keeps the original time
		var before map[string]string
		if !pending {
			before = e.snapshot(t)
		}
		again, err := e.client.Send(alice.ctx(), alice.sendReq(first.GetConversationId(), "id-1", "hello"))
		if err != nil {
			t.Fatalf("%s: retry: %v", stage, err)
		}
		if !again.GetDuplicate() || again.GetSequence() != 1 || !again.GetServerTime().AsTime().Equal(first.GetServerTime().AsTime()) ||
			again.GetConversationId() != first.GetConversationId() {
			t.Errorf("%s: retry got %v; want the original %v with duplicate set", stage, again, first)
		}
		if pending {
			if n := e.store.PendingIdempotencyKeys(); n != 1 {
				t.Fatalf("%s: %d pending idempotency entries, want the original's only", stage, n)
			}
		} else if !maps.Equal(before, e.snapshot(t)) {
			t.Errorf("%s: the retry changed the store", stage)
		}
		if h := e.history(t, bob, alice.identity); len(h) != 1 {
			t.Errorf("%s: %d messages stored, want 1", stage, len(h))
		}
	}
	// The original's idempotency entry is still in memory, then written down, then
	// rebuilt from the log.
	check("pending", e, true)
	check("written down", e, false)
	e.crash()
	e = newEnv(t, envOptions{dir: dir, clock: e.clock, store: opts.store})
	check("after a crash", e, false)
	if r := e.send(t, bob, alice.identity, "id-1", "bob's own id-1"); r.GetSequence() != 2 || r.GetDuplicate() {
		t.Errorf("bob's message with the same id got %v: ids are per sender", r)
	}
}

// TestConcurrentRetries: many copies of one message sent at once store it once; all
// get its sequence and one of them is not a duplicate. Copies with other bytes under
// the same id are refused, whichever arrives first.
func TestConcurrentRetries(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{quiet: true, cfg: Config{SendRate: 1e6, SendBurst: 1e6}})
	alice, bob := e.aliceAndBob(t)
	const n = 32
	type result struct {
		resp *messagingv1.SendResponse
		err  error
	}
	results := make([]result, 2*n)
	var wg sync.WaitGroup
	for i := range 2 * n {
		wg.Go(func() {
			body := "the one"
			if i%2 == 1 {
				body = fmt.Sprintf("an impostor %d", i)
			}
			r, err := e.client.Send(alice.ctx(), alice.sendReq(bob.identity, "same-id", body))
			results[i] = result{r, err}
		})
	}
	wg.Wait()
	h := e.history(t, bob, alice.identity)
	if len(h) != 1 {
		t.Fatalf("%d messages stored, want 1", len(h))
	}
	stored := string(h[0].GetEnvelope())
	originals := 0
	for i, r := range results {
		body := "the one"
		if i%2 == 1 {
			body = fmt.Sprintf("an impostor %d", i)
		}
		if body != stored {
			wantCode(t, r.err, codes.AlreadyExists, "already used")
			continue
		}
		if r.err != nil || r.resp.GetSequence() != 1 {
			t.Errorf("copy %d: %v, %v", i, r.resp, r.err)
		}
		if !r.resp.GetDuplicate() {
			originals++
		}
	}
	if originals != 1 {
		t.Errorf("%d sends were not duplicates, want 1", originals)
	}
}

// TestSequencesWithoutGaps: 32 concurrent senders (two devices each of 16 users) send
// to one hub. Every conversation numbers its messages 1..n and every inbox its items
// 1..m, each message exactly once, with index entries in memory, written down at every
// batch, and rebuilt after a crash.
func TestSequencesWithoutGaps(t *testing.T) {
	t.Parallel()
	for _, mode := range []struct {
		name  string
		store StoreOptions
	}{
		{"flush every batch", StoreOptions{FlushEntries: 1}},
		{"flush never", StoreOptions{FlushEntries: 1 << 30, FlushAge: time.Hour}},
	} {
		t.Run(mode.name, func(t *testing.T) {
			dir := t.TempDir()
			opts := envOptions{dir: dir, quiet: true, store: mode.store, cfg: Config{SendRate: 1e6, SendBurst: 1e6}}
			e := newEnv(t, opts)
			a := e.newApp(t)
			hub, senders := e.hubAndSenders(t, a, 16)
			const perDevice = 15
			var wg sync.WaitGroup
			for d := range 2 * len(senders) {
				wg.Go(func() {
					s := senders[d/2]
					for i := range perDevice {
						if _, err := e.client.Send(s.ctx(), s.sendReq(hub.identity, fmt.Sprintf("dev%d-%d", d%2, i), fmt.Sprintf("%s/%d/%d", s.identity, d%2, i))); err != nil {
							t.Error(err)
							return
						}
					}
				})
			}
			wg.Wait()
			verify := func(e *env) {
				t.Helper()
				for _, s := range senders {
					h := e.history(t, hub, s.identity)
					seen := map[string]bool{}
					for i, m := range h {
						if m.GetSequence() != uint64(i+1) || seen[m.GetClientMessageId()] || m.GetSender() != s.identity {
							t.Fatalf("conversation with %s: message %d is %v", s.identity, i, m)
						}
						seen[m.GetClientMessageId()] = true
					}
					if len(h) != 2*perDevice {
						t.Fatalf("conversation with %s holds %d messages, want %d", s.identity, len(h), 2*perDevice)
					}
				}
				total := 2 * perDevice * len(senders)
				st := e.subscribe(t, hub, ptr(uint64(0)), 0)
				items, hb := st.untilCaughtUp(t)
				st.cancel()
				lastInConv := map[string]uint64{}
				for i, it := range items {
					m := it.GetMessage()
					if it.GetInboxSequence() != uint64(i+1) || m.GetSequence() != lastInConv[m.GetConversationId()]+1 {
						t.Fatalf("hub's inbox item %d: %v", i, it)
					}
					lastInConv[m.GetConversationId()] = m.GetSequence()
				}
				if len(items) != total || hb.GetHeartbeat().GetLatestInboxSequence() != uint64(total) {
					t.Fatalf("hub's inbox: %d items, caught up at %d; want %d", len(items), hb.GetHeartbeat().GetLatestInboxSequence(), total)
				}
				for _, s := range senders[:2] {
					head, err := e.store.InboxHead(a.id, s.identity)
					if err != nil || head != 2*perDevice {
						t.Fatalf("inbox of %s ends at %d (%v), want %d: a sender's own messages reach its inbox", s.identity, head, err, 2*perDevice)
					}
				}
			}
			verify(e)
			e.crash()
			e = newEnv(t, envOptions{dir: dir, quiet: true, clock: e.clock, store: mode.store})
			verify(e)
			if r := e.send(t, senders[0], hub.identity, "after", "after the crash"); r.GetSequence() != 2*perDevice+1 {
				t.Errorf("the next message got sequence %d, want %d: a sequence was handed out twice", r.GetSequence(), 2*perDevice+1)
			}
		})
	}
}
