package messaging

import (
	"context"
	"fmt"
	"io"
	"maps"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"

	"github.com/umbra-e2ee/umbra/pkg/grpcclient"
	groupv1 "github.com/umbra-e2ee/umbra/proto/umbra/group/v1"
	identityv1 "github.com/umbra-e2ee/umbra/proto/umbra/identity/v1"
	messagingv1 "github.com/umbra-e2ee/umbra/proto/umbra/messaging/v1"
)

type sendStream = grpc.BidiStreamingClient[messagingv1.SendStreamRequest, messagingv1.SendStreamResponse]

// openSendStream opens a SendStream for u, closed at the end of the test.
func (e *env) openSendStream(t testing.TB, u user) sendStream {
	t.Helper()
	ctx, cancel := context.WithCancel(u.ctx())
	t.Cleanup(cancel)
	s, err := e.client.SendStream(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// roundTrip sends req on s and returns its reply.
func roundTrip(t testing.TB, s sendStream, req *messagingv1.SendRequest) *messagingv1.SendStreamResponse {
	t.Helper()
	if err := s.Send(&messagingv1.SendStreamRequest{Send: req}); err != nil {
		t.Fatalf("send on the stream: %v", err)
	}
	resp, err := s.Recv()
	if err != nil {
		t.Fatalf("reply on the stream: %v", err)
	}
	if resp.GetClientMessageId() != req.GetClientMessageId() {
		t.Fatalf("reply for %q, want %q", resp.GetClientMessageId(), req.GetClientMessageId())
	}
	return resp
}

func wantSendError(t testing.TB, resp *messagingv1.SendStreamResponse, code codes.Code, msg string) {
	t.Helper()
	e := resp.GetError()
	if e == nil || codes.Code(e.GetCode()) != code || !containsFold(e.GetMessage(), msg) {
		t.Errorf("reply %v; want an error %v with %q", resp, code, msg)
	}
}

// TestSendStreamRefusals: every request Send refuses gets, on a stream, its own reply
// with the same code and message, writes nothing, and the stream goes on; the refusals
// that are not about the message (no credential, the group service unreachable) end
// the stream with Send's code instead.
func TestSendStreamRefusals(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{})
	streams := map[string]sendStream{}
	var alice user
	for _, tc := range sendRefusals(t, e) {
		stream := func() sendStream {
			if s := streams[tc.ctx.token]; s != nil {
				return s
			}
			s := e.openSendStream(t, tc.ctx)
			streams[tc.ctx.token] = s
			return s
		}
		t.Run(tc.name, func(t *testing.T) {
			before := e.snapshot(t)
			if tc.code == codes.Unauthenticated || tc.code == codes.Unavailable {
				s := e.openSendStream(t, tc.ctx)
				// io.EOF: the server ended the stream already; Recv says why.
				if err := s.Send(&messagingv1.SendStreamRequest{Send: tc.req}); err != nil && err != io.EOF {
					t.Fatal(err)
				}
				_, err := s.Recv()
				wantCode(t, err, tc.code, tc.msg)
			} else {
				if tc.name == "empty envelope" {
					alice = tc.ctx
				}
				wantSendError(t, roundTrip(t, stream(), tc.req), tc.code, tc.msg)
			}
			if !maps.Equal(before, e.snapshot(t)) {
				t.Error("the refused request changed the store")
			}
		})
	}
	if len(streams) != 3 || alice.identity == "" {
		t.Fatalf("the cases used %d streams; want alice's, carol's and mallory's", len(streams))
	}
	// After all that, alice's stream still stores a good message.
	ok := roundTrip(t, streams[alice.token], alice.sendReq(e.newUsers(t, alice.app, "bob")[0].identity, "m-ok", "fine"))
	if ok.GetSent().GetSequence() != 2 {
		t.Errorf("good message after the refusals: %v", ok)
	}
}

// TestSendStreamOrder: a client that sends ahead of the replies gets one reply per
// request, in the requests' order, a refusal in the middle included; the messages are
// stored in that order; retries on another stream, or through Send, are duplicates.
func TestSendStreamOrder(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{})
	alice, bob := e.aliceAndBob(t)
	const n, bad = 3 * SendStreamWindow, 100
	s := e.openSendStream(t, alice)
	for i := range n {
		req := alice.sendReq(bob.identity, fmt.Sprintf("m-%d", i), body(i))
		if i == bad {
			req.Envelope = nil
		}
		if err := s.Send(&messagingv1.SendStreamRequest{Send: req}); err != nil {
			t.Fatalf("request %d: %v", i, err)
		}
	}
	if err := s.CloseSend(); err != nil {
		t.Fatal(err)
	}
	var conv string
	seq := uint64(0)
	for i := range n {
		resp, err := s.Recv()
		if err != nil {
			t.Fatalf("reply %d: %v", i, err)
		}
		if want := fmt.Sprintf("m-%d", i); resp.GetClientMessageId() != want {
			t.Fatalf("reply %d is for %q, want %q", i, resp.GetClientMessageId(), want)
		}
		if i == bad {
			wantSendError(t, resp, codes.InvalidArgument, "envelope is empty")
			continue
		}
		seq++
		if got := resp.GetSent(); got.GetSequence() != seq || got.GetDuplicate() {
			t.Fatalf("reply %d: %v, want sequence %d", i, resp, seq)
		}
		conv = resp.GetSent().GetConversationId()
	}
	if _, err := s.Recv(); err != io.EOF {
		t.Fatalf("after the last reply: %v, want the end of the stream", err)
	}
	h := e.history(t, bob, conv)
	if len(h) != n-1 {
		t.Fatalf("%d messages stored, want %d", len(h), n-1)
	}
	for i, m := range h {
		j := i
		if i >= bad {
			j++
		}
		if string(m.GetEnvelope()) != body(j) || m.GetSequence() != uint64(i+1) {
			t.Fatalf("message %d: sequence %d %q, want %d %q", i, m.GetSequence(), m.GetEnvelope(), i+1, body(j))
		}
	}
	again := e.openSendStream(t, alice)
	for i := range 5 {
		r := roundTrip(t, again, alice.sendReq(bob.identity, fmt.Sprintf("m-%d", i), body(i)))
		if r.GetSent().GetSequence() != uint64(i+1) || !r.GetSent().GetDuplicate() {
			t.Errorf("retry of m-%d on a new stream: %v", i, r)
		}
	}
	if r, err := e.client.Send(alice.ctx(), alice.sendReq(bob.identity, "m-5", body(5))); err != nil || !r.GetDuplicate() || r.GetSequence() != 6 {
		t.Errorf("retry of m-5 through Send: %v, %v", r, err)
	}
	if h := e.history(t, bob, conv); len(h) != n-1 {
		t.Errorf("the retries stored %d more messages", len(h)-(n-1))
	}
}

// TestSendStreamGroupEpoch: a group refusal reaches the client with its EpochRequired
// detail, as Send returns it, and the stream goes on.
func TestSendStreamGroupEpoch(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{fakeGroups: true})
	a := e.newApp(t)
	us := e.newUsers(t, a, "alice", "bob")
	alice, bob := us[0], us[1]
	group := e.groupID(t, a, "team")
	e.groups.create(a.id, group, e.clock.Now(), alice.identity, bob.identity)
	s := e.openSendStream(t, alice)
	stale := roundTrip(t, s, alice.groupReq(group, "g-1", "hello", 2))
	wantSendError(t, stale, codes.FailedPrecondition, "epoch required")
	var detail groupv1.EpochRequired
	if d := stale.GetError().GetDetails(); len(d) != 1 || d[0].UnmarshalTo(&detail) != nil || detail.GetCurrentEpoch() != 1 || detail.GetMessageEpoch() != 2 {
		t.Errorf("details %v; want EpochRequired at epoch 1", d)
	}
	if r := roundTrip(t, s, alice.groupReq(group, "g-1", "hello", 1)); r.GetSent().GetSequence() != 1 || r.GetSent().GetConversationId() != group {
		t.Errorf("resent at the current epoch: %v", r)
	}
}

// TestSendStreamEndsWhenTokenExpires: past its token's expiry a stream takes no more
// messages, and an idle one ends too.
func TestSendStreamEndsWhenTokenExpires(t *testing.T) {
	e := newEnv(t, envOptions{})
	alice, bob := e.aliceAndBob(t)
	short := alice
	short.token = e.token(t, alice, 2*time.Minute)
	busy, idle := e.openSendStream(t, short), e.openSendStream(t, short)
	if r := roundTrip(t, busy, alice.sendReq(bob.identity, "1", "one")); r.GetSent().GetSequence() != 1 {
		t.Fatalf("first message: %v", r)
	}
	if r := roundTrip(t, idle, alice.sendReq(bob.identity, "2", "two")); r.GetSent().GetSequence() != 2 {
		t.Fatalf("first message on the other stream: %v", r)
	}
	e.clock.Add(3 * time.Minute)
	before := e.snapshot(t)
	// io.EOF: the server ended the stream already (its token watch); Recv says why.
	if err := busy.Send(&messagingv1.SendStreamRequest{Send: alice.sendReq(bob.identity, "3", "three")}); err != nil && err != io.EOF {
		t.Fatal(err)
	}
	_, err := busy.Recv()
	wantCode(t, err, codes.Unauthenticated, "access token expired")
	if !maps.Equal(before, e.snapshot(t)) {
		t.Error("a message was stored after the token expired")
	}
	wantEnded(t, idle, "access token expired")
}

// TestSendStreamEndsWhenTokenIsRevoked: "log out everywhere" ends open send streams.
func TestSendStreamEndsWhenTokenIsRevoked(t *testing.T) {
	e := newEnv(t, envOptions{})
	alice, bob := e.aliceAndBob(t)
	s := e.openSendStream(t, alice)
	roundTrip(t, s, alice.sendReq(bob.identity, "1", "one"))
	e.clock.Add(2 * time.Second) // revocation covers tokens issued before its second
	if _, err := e.ids.RevokeTokens(as(alice.app.key), &identityv1.RevokeTokensRequest{Identity: alice.identity}); err != nil {
		t.Fatal(err)
	}
	wantEnded(t, s, "access token was revoked")
}

// wantEnded waits for the server to end s, which sends nothing more, with
// UNAUTHENTICATED and msg, as it must within a RevocationCheck of its token's end.
func wantEnded(t *testing.T, s sendStream, msg string) {
	t.Helper()
	end := make(chan error, 1)
	go func() { _, err := s.Recv(); end <- err }()
	select {
	case err := <-end:
		wantCode(t, err, codes.Unauthenticated, msg)
	case <-time.After(RevocationCheck + 3*time.Second):
		t.Fatalf("the stream is still open %s after its token's end (%q expected)", RevocationCheck+3*time.Second, msg)
	}
}

// TestSendStreamLimit: an identity has at most MaxStreamsPerIdentity send streams open;
// closing one frees its place, and another identity is not affected.
func TestSendStreamLimit(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{cfg: Config{MaxStreamsPerIdentity: 2}})
	alice, bob := e.aliceAndBob(t)
	ctx, closeFirst := context.WithCancel(alice.ctx())
	first, err := e.client.SendStream(ctx)
	if err != nil {
		t.Fatal(err)
	}
	roundTrip(t, first, alice.sendReq(bob.identity, "1", "one"))
	roundTrip(t, e.openSendStream(t, alice), alice.sendReq(bob.identity, "2", "two"))
	third := e.openSendStream(t, alice)
	_, err = third.Recv()
	wantCode(t, err, codes.ResourceExhausted, "2 send streams open already")
	roundTrip(t, e.openSendStream(t, bob), bob.sendReq(alice.identity, "1", "bob's"))
	closeFirst()
	deadline := time.Now().Add(5 * time.Second)
	for {
		s := e.openSendStream(t, alice)
		if err := s.Send(&messagingv1.SendStreamRequest{Send: alice.sendReq(bob.identity, "3", "three")}); err == nil {
			if r, err := s.Recv(); err == nil && r.GetSent().GetSequence() == 4 {
				return
			} else if time.Now().After(deadline) {
				t.Fatalf("after closing a stream: %v, %v", r, err)
			}
		}
		time.Sleep(50 * time.Millisecond) // the server ends the closed stream a moment later
	}
}

// TestSendStreamCancelStoresAPrefix: a stream cancelled with requests in flight stores
// some of its first requests and none after them, whatever the cancellation
// interrupts, so a client that resends what had no reply keeps its order.
func TestSendStreamCancelStoresAPrefix(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{cfg: Config{SendRate: 1e6, SendBurst: 1e6}, quiet: true})
	alice, bob := e.aliceAndBob(t)
	const rounds = 30
	for r := range rounds {
		ctx, cancel := context.WithCancel(alice.ctx())
		s, err := e.client.SendStream(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for i := range SendStreamWindow {
			if s.Send(&messagingv1.SendStreamRequest{Send: alice.sendReq(bob.identity, fmt.Sprintf("r%02d-%02d", r, i), body(i))}) != nil {
				break
			}
		}
		time.Sleep(time.Duration(r%5) * 200 * time.Microsecond)
		cancel()
	}
	// The committer answers in order: once this is stored, so is all that was queued.
	last := e.send(t, alice, bob.identity, "last", "last")
	t.Logf("stored per round: %v", storedPrefixes(t, e.history(t, bob, last.GetConversationId())))
}

// storedPrefixes counts the stored messages of each round of requests (client_message_id
// "rNN-II": request II of round NN) and fails the test unless each round's are its
// first requests, in order: a request stored after one that was not would land before
// it when the client resends.
func storedPrefixes(t testing.TB, msgs []*messagingv1.Message) map[int]int {
	t.Helper()
	stored := map[int]int{} // round -> messages stored
	for _, m := range msgs {
		var r, i int
		if _, err := fmt.Sscanf(m.GetClientMessageId(), "r%02d-%02d", &r, &i); err != nil {
			continue
		}
		if i != stored[r] {
			t.Fatalf("round %d: request %d stored after %d of the round's requests: a request was stored after one that was not", r, i, stored[r])
		}
		stored[r]++
	}
	return stored
}

// TestSendStreamStopsAtAStreamError: the requests after one that ends the stream (here
// a group message without a group service) are not stored, even those the client had
// sent already.
func TestSendStreamStopsAtAStreamError(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{})
	a := e.newApp(t)
	us := e.newUsers(t, a, "alice", "bob")
	alice, bob := us[0], us[1]
	group := e.groupID(t, a, "team")
	s := e.openSendStream(t, alice)
	reqs := []*messagingv1.SendRequest{alice.sendReq(bob.identity, "1", "one"), alice.groupReq(group, "2", "to the group", 1), alice.sendReq(bob.identity, "3", "three")}
	for _, req := range reqs {
		if err := s.Send(&messagingv1.SendStreamRequest{Send: req}); err != nil && err != io.EOF {
			t.Fatal(err)
		}
	}
	if r, err := s.Recv(); err != nil || r.GetSent().GetSequence() != 1 {
		t.Fatalf("first reply: %v, %v", r, err)
	}
	_, err := s.Recv()
	wantCode(t, err, codes.Unavailable, "need the group service")
	if h := e.history(t, bob, alice.identity); len(h) != 1 {
		t.Errorf("%d messages stored, want the first only", len(h))
	}
}

// TestSendStreamEndsAtShutdown: an open SendStream ends with UNAVAILABLE when the
// service stops, instead of holding up the graceful stop.
func TestSendStreamEndsAtShutdown(t *testing.T) {
	e := newEnv(t, envOptions{})
	alice, bob := e.aliceAndBob(t)
	conn, err := grpcclient.Dial(grpcclient.Config{Addr: e.conn.Target()}) // env's own closes first
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	s, err := messagingv1.NewMessagingServiceClient(conn).SendStream(alice.ctx())
	if err != nil {
		t.Fatal(err)
	}
	roundTrip(t, s, alice.sendReq(bob.identity, "1", "one"))
	start := time.Now()
	stopped := make(chan struct{})
	go func() { e.stop(); close(stopped) }()
	_, err = s.Recv()
	wantCode(t, err, codes.Unavailable, "shutting down")
	<-stopped
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("the service took %s to stop with a send stream open", d)
	}
}
