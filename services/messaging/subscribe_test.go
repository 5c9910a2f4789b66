package messaging

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/umbra-e2ee/umbra/pkg/grpcclient"
	identityv1 "github.com/umbra-e2ee/umbra/proto/umbra/identity/v1"
	messagingv1 "github.com/umbra-e2ee/umbra/proto/umbra/messaging/v1"
)

// wantMessages fails the test unless items are messages with the inbox sequences from
// first on and the envelopes bodies, in order.
func wantMessages(t testing.TB, items []*messagingv1.SubscribeResponse, first uint64, bodies ...string) {
	t.Helper()
	if len(items) != len(bodies) {
		t.Fatalf("%d items, want %d: %v", len(items), len(bodies), items)
	}
	for i, it := range items {
		if it.GetInboxSequence() != first+uint64(i) || string(it.GetMessage().GetEnvelope()) != bodies[i] {
			t.Fatalf("item %d is %d %q; want %d %q", i, it.GetInboxSequence(), it.GetMessage().GetEnvelope(), first+uint64(i), bodies[i])
		}
	}
}

func bodies(from, to int) []string {
	var out []string
	for i := from; i <= to; i++ {
		out = append(out, body(i))
	}
	return out
}

// TestSubscribeResume: a client that disconnects and resumes after the last item it
// processed gets exactly the items after it: no gap, no duplicate, whether they were
// stored while it was away or arrive live.
func TestSubscribeResume(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{})
	alice, bob := e.aliceAndBob(t)
	for i := 1; i <= 6; i++ {
		e.send(t, alice, bob.identity, fmt.Sprint(i), body(i))
	}
	s := e.subscribe(t, bob, ptr(uint64(0)), 0)
	var got []*messagingv1.SubscribeResponse
	for range 4 {
		got = append(got, s.nextItem(t))
	}
	wantMessages(t, got, 1, bodies(1, 4)...)
	s.cancel()
	s.end(t, 5*time.Second)

	for i := 7; i <= 9; i++ { // while bob is away
		e.send(t, alice, bob.identity, fmt.Sprint(i), body(i))
	}
	s = e.subscribe(t, bob, ptr(uint64(4)), 0)
	got, hb := s.untilCaughtUp(t)
	wantMessages(t, got, 5, bodies(5, 9)...)
	if hb.GetInboxSequence() != 9 || hb.GetHeartbeat().GetLatestInboxSequence() != 9 {
		t.Errorf("catch-up heartbeat %v; want it at inbox sequence 9", hb)
	}
	e.send(t, alice, bob.identity, "10", body(10))
	wantMessages(t, []*messagingv1.SubscribeResponse{s.nextItem(t)}, 10, body(10))

	// Resuming at the latest sequence is allowed and starts live.
	s.cancel()
	s = e.subscribe(t, bob, ptr(uint64(10)), 0)
	if got, hb := s.untilCaughtUp(t); len(got) != 0 || hb.GetInboxSequence() != 10 {
		t.Errorf("resume at the end: %v then %v", got, hb)
	}
}

// TestSubscribeLive: without a cursor a stream starts with what arrives from now on.
func TestSubscribeLive(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{})
	alice, bob := e.aliceAndBob(t)
	e.send(t, alice, bob.identity, "old", "old")
	s := e.subscribe(t, bob, nil, 0)
	got, hb := s.untilCaughtUp(t)
	if len(got) != 0 || hb.GetInboxSequence() != 1 || hb.GetHeartbeat().GetLatestInboxSequence() != 1 {
		t.Fatalf("live start: %v then %v; want a heartbeat at 1 and nothing before", got, hb)
	}
	e.send(t, alice, bob.identity, "new", "new")
	wantMessages(t, []*messagingv1.SubscribeResponse{s.nextItem(t)}, 2, "new")
}

// TestSubscribeDevices: several streams of one identity each get everything, the
// identity's own messages included, each at its own pace.
func TestSubscribeDevices(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{})
	alice, bob := e.aliceAndBob(t)
	phone, laptop := e.subscribe(t, bob, nil, 0), e.subscribe(t, bob, nil, 0)
	sender := e.subscribe(t, alice, nil, 0)
	for _, s := range []*sub{phone, laptop, sender} {
		s.untilCaughtUp(t)
	}
	for i := 1; i <= 20; i++ {
		u, peer := alice, bob
		if i%5 == 0 {
			u, peer = bob, alice // sent from one of bob's devices
		}
		e.send(t, u, peer.identity, fmt.Sprint(i), body(i))
	}
	for name, s := range map[string]*sub{"phone": phone, "laptop": laptop, "alice": sender} {
		var got []*messagingv1.SubscribeResponse
		for range 20 {
			got = append(got, s.nextItem(t))
		}
		for i, it := range got {
			if it.GetInboxSequence() != uint64(i+1) || string(it.GetMessage().GetEnvelope()) != body(i+1) || it.GetMessage().GetSequence() != uint64(i+1) {
				t.Fatalf("%s: item %d is %v", name, i, it)
			}
		}
	}
}

// TestSubscribeHeartbeats: a heartbeat right after catch-up, then one per interval
// while nothing else is sent, each at the last item sent.
func TestSubscribeHeartbeats(t *testing.T) {
	e := newEnv(t, envOptions{})
	alice, bob := e.aliceAndBob(t)
	e.send(t, alice, bob.identity, "1", "one")
	start := time.Now()
	s := e.subscribe(t, bob, ptr(uint64(0)), time.Second)
	got, hb := s.untilCaughtUp(t)
	if len(got) != 1 || hb.GetInboxSequence() != 1 {
		t.Fatalf("catch-up: %v then %v", got, hb)
	}
	if since := time.Since(start); since > 900*time.Millisecond {
		t.Errorf("the catch-up heartbeat came after %s; want it at once", since)
	}
	for i := range 2 {
		it := s.next(t, 3*time.Second)
		if it.GetHeartbeat() == nil || it.GetInboxSequence() != 1 || it.GetHeartbeat().GetLatestInboxSequence() != 1 || it.GetHeartbeat().GetServerTime() == nil {
			t.Fatalf("item %d after catch-up: %v; want a heartbeat at 1", i, it)
		}
	}
	if since := time.Since(start); since < 1800*time.Millisecond {
		t.Errorf("two heartbeats at a 1 s interval came within %s", since)
	}
}

// TestSubscribeRefusals: bad cursors and intervals, and the stream limit.
func TestSubscribeRefusals(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{cfg: Config{MaxStreamsPerIdentity: 2}})
	alice, bob := e.aliceAndBob(t)
	for i := range 3 {
		e.send(t, alice, bob.identity, fmt.Sprint(i), "x")
	}
	cases := []struct {
		name string
		u    user
		req  *messagingv1.SubscribeRequest
		code codes.Code
		msg  string
	}{
		{"cursor beyond the end", bob, &messagingv1.SubscribeRequest{AfterInboxSequence: ptr(uint64(4))}, codes.InvalidArgument, "beyond your latest inbox sequence 3"},
		{"heartbeat too frequent", bob, &messagingv1.SubscribeRequest{HeartbeatInterval: durationOf(500 * time.Millisecond)}, codes.InvalidArgument, "out of range"},
		{"heartbeat too rare", bob, &messagingv1.SubscribeRequest{HeartbeatInterval: durationOf(10 * time.Minute)}, codes.InvalidArgument, "out of range"},
		{"negative heartbeat", bob, &messagingv1.SubscribeRequest{HeartbeatInterval: durationOf(-time.Second)}, codes.InvalidArgument, "out of range"},
		{"from_start with a cursor", bob, &messagingv1.SubscribeRequest{FromStart: true, AfterInboxSequence: ptr(uint64(2))}, codes.InvalidArgument, "two different starts"},
		{"no credential", user{}, &messagingv1.SubscribeRequest{}, codes.Unauthenticated, "missing credential"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			stream, err := e.client.Subscribe(tc.u.ctx(), tc.req)
			if err == nil {
				_, err = stream.Recv()
			}
			wantCode(t, err, tc.code, tc.msg)
		})
	}
	t.Run("too many streams", func(t *testing.T) {
		a, b := e.subscribe(t, bob, nil, 0), e.subscribe(t, bob, nil, 0)
		a.untilCaughtUp(t)
		b.untilCaughtUp(t)
		third := e.subscribe(t, bob, nil, 0)
		wantCode(t, third.end(t, 5*time.Second), codes.ResourceExhausted, "2 streams open already")
		e.subscribe(t, alice, nil, 0).untilCaughtUp(t) // other identities are not affected
		a.cancel()
		a.end(t, 5*time.Second)
		deadline := time.Now().Add(5 * time.Second)
		for { // the server notices the cancellation a moment later
			s := e.subscribe(t, bob, nil, 0)
			select {
			case it := <-s.items:
				if it.GetHeartbeat() == nil {
					t.Fatalf("first item %v", it)
				}
				return
			case err := <-s.done:
				if time.Now().After(deadline) {
					t.Fatalf("a stream closed does not free its place: %v", err)
				}
				time.Sleep(20 * time.Millisecond)
			}
		}
	})
}

// TestSubscribeEndsWhenTokenExpires: the stream ends with UNAUTHENTICATED once the
// access token has expired, and the client resumes with a fresh one.
func TestSubscribeEndsWhenTokenExpires(t *testing.T) {
	e := newEnv(t, envOptions{})
	alice, bob := e.aliceAndBob(t)
	short := bob
	short.token = e.token(t, bob, 2*time.Minute)
	e.send(t, alice, bob.identity, "1", "one")
	s := e.subscribe(t, short, ptr(uint64(0)), time.Second)
	if got, _ := s.untilCaughtUp(t); len(got) != 1 {
		t.Fatalf("caught up with %d items", len(got))
	}
	e.clock.Add(3 * time.Minute)
	wantCode(t, s.end(t, 5*time.Second), codes.Unauthenticated, "access token expired")
	fresh := e.subscribe(t, bob, ptr(uint64(1)), 0)
	if got, hb := fresh.untilCaughtUp(t); len(got) != 0 || hb.GetInboxSequence() != 1 {
		t.Errorf("resumed stream: %v then %v", got, hb)
	}
}

// TestSubscribeEndsWhenTokenIsRevoked: "log out everywhere" ends the open streams too.
func TestSubscribeEndsWhenTokenIsRevoked(t *testing.T) {
	e := newEnv(t, envOptions{})
	us := e.newUsers(t, e.newApp(t), "alice", "bob")
	bob := us[1]
	s := e.subscribe(t, bob, nil, 0)
	s.untilCaughtUp(t)
	e.clock.Add(2 * time.Second) // revocation covers tokens issued before its second
	if _, err := e.ids.RevokeTokens(as(bob.app.key), &identityv1.RevokeTokensRequest{Identity: bob.identity}); err != nil {
		t.Fatal(err)
	}
	wantCode(t, s.end(t, RevocationCheck+3*time.Second), codes.Unauthenticated, "access token was revoked")
}

// TestSlowSubscriber: a stream whose client never reads (its flow-control window full)
// slows neither the sender nor another stream of the same identity, and later gets
// every item, in order.
func TestSlowSubscriber(t *testing.T) {
	e := newEnv(t, envOptions{quiet: true})
	alice, bob := e.aliceAndBob(t)
	// The slow device has its own connection with small fixed windows, so that the
	// server's sends to it block after 64 KiB.
	conn, err := grpcclient.Dial(grpcclient.Config{Addr: e.conn.Target()}, grpc.WithInitialWindowSize(64<<10), grpc.WithInitialConnWindowSize(64<<10))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithCancel(bob.ctx())
	defer cancel()
	slow, err := messagingv1.NewMessagingServiceClient(conn).Subscribe(ctx, &messagingv1.SubscribeRequest{AfterInboxSequence: ptr(uint64(0)), HeartbeatInterval: durationOf(time.Second)})
	if err != nil {
		t.Fatal(err)
	}
	fast := e.subscribe(t, bob, ptr(uint64(0)), 0)
	fast.untilCaughtUp(t)

	const n = 40
	big := strings.Repeat("z", 100<<10)
	var slowest time.Duration
	for i := 1; i <= n; i++ {
		start := time.Now()
		if _, err := e.client.Send(alice.ctx(), alice.sendReq(bob.identity, fmt.Sprint(i), fmt.Sprintf("%d:%s", i, big))); err != nil {
			t.Fatal(err)
		}
		it := fast.nextItem(t)
		if it.GetInboxSequence() != uint64(i) {
			t.Fatalf("fast stream: item %d at %d", i, it.GetInboxSequence())
		}
		slowest = max(slowest, time.Since(start))
	}
	if slowest > 5*time.Second {
		t.Errorf("the slowest send-to-deliver took %s with a stuck stream open", slowest)
	}
	// 4 MiB were sent to the slow stream, far beyond its window: it is behind, and
	// catches up from the store. It was caught up (at 0) when it opened.
	if it, err := slow.Recv(); err != nil || it.GetHeartbeat() == nil || it.GetInboxSequence() != 0 {
		t.Fatalf("first item of the slow stream: %v, %v; want the catch-up heartbeat at 0", it, err)
	}
	for i := 1; i <= n; i++ {
		it, err := slow.Recv()
		if err != nil {
			t.Fatal(err)
		}
		if it.GetHeartbeat() != nil {
			t.Fatalf("heartbeat %v before item %d: the stream claims to have caught up", it, i)
		}
		if it.GetInboxSequence() != uint64(i) || !strings.HasPrefix(string(it.GetMessage().GetEnvelope()), fmt.Sprintf("%d:", i)) {
			t.Fatalf("slow stream: item %d is at %d", i, it.GetInboxSequence())
		}
	}
	if it, err := slow.Recv(); err != nil || it.GetHeartbeat().GetLatestInboxSequence() != n {
		t.Errorf("after catching up: %v, %v; want a heartbeat at %d", it, err, n)
	}
}

// TestSubscribeUnderConcurrentLoad: streams that start and stop while 16 senders send
// see every item of their inbox exactly once, across reconnects.
func TestSubscribeUnderConcurrentLoad(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{quiet: true, cfg: Config{SendRate: 1e6, SendBurst: 1e6}, store: StoreOptions{FlushEntries: 64}})
	a := e.newApp(t)
	hub, senders := e.hubAndSenders(t, a, 16)
	const per = 20
	total := per * len(senders)
	var wg sync.WaitGroup
	for _, s := range senders {
		wg.Go(func() {
			for i := range per {
				if _, err := e.client.Send(s.ctx(), s.sendReq(hub.identity, fmt.Sprint(i), fmt.Sprint(s.identity, i))); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	// The reader reconnects every few items, resuming from its last one.
	var cursor uint64
	seen := map[string]bool{}
	for cursor < uint64(total) {
		s := e.subscribe(t, hub, ptr(cursor), 0)
		for range 7 {
			if cursor == uint64(total) {
				break
			}
			it := s.nextItem(t)
			key := string(it.GetMessage().GetEnvelope())
			if it.GetInboxSequence() != cursor+1 || seen[key] {
				t.Fatalf("after %d: item %d %q (seen before: %v)", cursor, it.GetInboxSequence(), key, seen[key])
			}
			seen[key] = true
			cursor = it.GetInboxSequence()
		}
		s.cancel()
	}
	wg.Wait()
	if len(seen) != total {
		t.Errorf("%d distinct messages received, want %d", len(seen), total)
	}
	if _, err := e.client.Send(hub.ctx(), hub.sendReq(senders[0].identity, "x", "x")); status.Code(err) != codes.OK {
		t.Fatal(err)
	}
}
