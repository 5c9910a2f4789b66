package sdk_test

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/umbra-e2ee/umbra/pkg/e2ee"
	"github.com/umbra-e2ee/umbra/pkg/sdk"
	messagingv1 "github.com/umbra-e2ee/umbra/proto/umbra/messaging/v1"
)

// dropAfter is a client stream interceptor that breaks the first SendStream after n
// replies, as a lost connection would, and counts the SendStreams opened.
type dropAfter struct {
	n       int
	opened  atomic.Int32
	replies atomic.Int32
}

func (d *dropAfter) intercept(ctx context.Context, desc *grpc.StreamDesc, cc *grpc.ClientConn, method string, streamer grpc.Streamer, opts ...grpc.CallOption) (grpc.ClientStream, error) {
	cs, err := streamer(ctx, desc, cc, method, opts...)
	if err != nil || method != messagingv1.MessagingService_SendStream_FullMethodName {
		return cs, err
	}
	if d.opened.Add(1) > 1 {
		return cs, nil
	}
	return &droppingStream{ClientStream: cs, d: d}, nil
}

type droppingStream struct {
	grpc.ClientStream
	d *dropAfter
}

func (s *droppingStream) RecvMsg(m any) error {
	if int(s.d.replies.Add(1)) > s.d.n {
		return status.Error(codes.Unavailable, "test: the connection dropped")
	}
	return s.ClientStream.RecvMsg(m)
}

// opaqueTo is the ith message to peer, signed (as the header says) with card: the
// envelope is opaque to the server, which checks only whose card the header names.
func opaqueTo(peer string, card *sdk.Card, i int) *messagingv1.SendRequest {
	return &messagingv1.SendRequest{
		ConversationId:  peer,
		ClientMessageId: fmt.Sprintf("m-%03d", i),
		Header:          &messagingv1.MessageHeader{Kind: messagingv1.MessageKind_MESSAGE_KIND_ENCRYPTED, SenderCardId: card.ID},
		Envelope:        fmt.Appendf(nil, "message %d", i),
	}
}

// TestSender: messages sent ahead of their replies are stored in the order of Send,
// each once, across a dropped stream that the Sender reopens by itself; a refused
// message gets its error and the others go on.
func TestSender(t *testing.T) {
	t.Parallel()
	n, app := startNode(t)
	ctx := context.Background()
	bob := app.User(t, "bob")
	drop := &dropAfter{n: 40}
	c := newQuickDevice(t, n, app, "alice", e2ee.DefaultSuite, grpc.WithChainStreamInterceptor(drop.intercept))
	card := registeredCard(t, c)
	const total, bad = 150, 70
	s, err := c.NewSender(ctx, 16)
	if err != nil {
		t.Fatal(err)
	}
	pending := make([]*sdk.Pending, total)
	for i := range total {
		req := opaqueTo(bob, card, i)
		if i == bad {
			req.Envelope = nil
		}
		if pending[i], err = s.Send(ctx, req); err != nil {
			t.Fatalf("send %d: %v", i, err)
		}
	}
	wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	seq := uint64(0)
	var conv string
	for i, p := range pending {
		resp, err := p.Wait(wctx)
		if i == bad {
			if status.Code(err) != codes.InvalidArgument {
				t.Errorf("message %d with no envelope: %v, want InvalidArgument", i, err)
			}
			continue
		}
		if err != nil {
			t.Fatalf("message %d: %v", i, err)
		}
		if seq++; resp.GetSequence() != seq {
			t.Fatalf("message %d stored at %d, want %d", i, resp.GetSequence(), seq)
		}
		conv = resp.GetConversationId()
	}
	if err := s.Close(wctx); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Send(ctx, opaqueTo(bob, card, total)); err != sdk.ErrSenderClosed {
		t.Errorf("Send after Close: %v", err)
	}
	if got := drop.opened.Load(); got != 2 {
		t.Errorf("%d streams opened, want 2 (the dropped one and its replacement)", got)
	}
	hist, err := c.History(ctx, &messagingv1.HistoryRequest{ConversationId: conv, AfterSequence: new(uint64), PageSize: 500})
	if err != nil {
		t.Fatal(err)
	}
	if len(hist.GetMessages()) != total-1 {
		t.Fatalf("%d messages stored, want %d", len(hist.GetMessages()), total-1)
	}
	for j, m := range hist.GetMessages() {
		i := j
		if j >= bad {
			i++
		}
		if m.GetClientMessageId() != fmt.Sprintf("m-%03d", i) {
			t.Fatalf("stored #%d is %s, want m-%03d", j, m.GetClientMessageId(), i)
		}
	}
}

// TestSenderRefusesBadWindow: the window is 1 to MaxSenderWindow.
func TestSenderRefusesBadWindow(t *testing.T) {
	t.Parallel()
	n, app := startNode(t)
	c := newQuickDevice(t, n, app, "alice", e2ee.DefaultSuite)
	for _, w := range []int{-1, sdk.MaxSenderWindow + 1} {
		if _, err := c.NewSender(context.Background(), w); err == nil {
			t.Errorf("window %d accepted", w)
		}
	}
}

// BenchmarkSender: one device sending 1 KiB messages (already encrypted: the envelope
// is opaque here) to one peer, with Client.Send (a call per message, each waited for)
// and with a Sender (its window in flight on one stream); durable acknowledgements
// either way, the whole node on the same two cores.
func BenchmarkSender(b *testing.B) {
	n, app := benchNode(b)
	ctx := context.Background()
	bob := app.User(b, "bob")
	c := newQuickDevice(b, n, app, "alice", e2ee.DefaultSuite)
	card := registeredCard(b, c)
	env := make([]byte, 1024)
	req := func() *messagingv1.SendRequest {
		return &messagingv1.SendRequest{
			ConversationId: bob, ClientMessageId: sdk.NewClientMessageID(),
			Header: &messagingv1.MessageHeader{Kind: messagingv1.MessageKind_MESSAGE_KIND_ENCRYPTED, SenderCardId: card.ID}, Envelope: env,
		}
	}
	b.Run("path=Send", func(b *testing.B) {
		b.SetBytes(int64(len(env)))
		for b.Loop() {
			if _, err := c.Send(ctx, req()); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msgs/s")
	})
	for _, window := range []int{8, sdk.MaxSenderWindow} {
		b.Run(fmt.Sprintf("path=Sender/window=%d", window), func(b *testing.B) {
			s, err := c.NewSender(ctx, window)
			if err != nil {
				b.Fatal(err)
			}
			b.SetBytes(int64(len(env)))
			var sent []*sdk.Pending
			for b.Loop() {
				p, err := s.Send(ctx, req())
				if err != nil {
					b.Fatal(err)
				}
				sent = append(sent, p)
			}
			for _, p := range sent { // the window was full until the last few were in
				if _, err := p.Wait(ctx); err != nil {
					b.Fatal(err)
				}
			}
			if err := s.Close(ctx); err != nil {
				b.Fatal(err)
			}
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msgs/s")
		})
	}
}
