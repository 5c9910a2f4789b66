package node_test

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/umbra-e2ee/umbra/internal/node"
	"github.com/umbra-e2ee/umbra/internal/node/nodetest"
	"github.com/umbra-e2ee/umbra/pkg/errs"
	"github.com/umbra-e2ee/umbra/pkg/grpcclient"
	messagingv1 "github.com/umbra-e2ee/umbra/proto/umbra/messaging/v1"
	"github.com/umbra-e2ee/umbra/services/messaging"
)

// streamSender sends on one SendStream as fast as the stream takes messages, and keeps
// what it sent and which replies came back.
type streamSender struct {
	identity string
	mu       sync.Mutex
	sent     []string        // client_message_ids, in order
	acked    map[string]bool // those whose reply said stored
	refused  int
	end      error // why the stream ended
}

func (s *streamSender) run(ctx context.Context, client messagingv1.MessagingServiceClient, peer string) {
	stream, err := client.SendStream(ctx)
	if err != nil {
		s.end = err
		return
	}
	var wg sync.WaitGroup
	wg.Go(func() {
		for i := 0; ; i++ {
			id := fmt.Sprintf("%s-%06d", s.identity[:8], i)
			s.mu.Lock()
			s.sent = append(s.sent, id)
			s.mu.Unlock()
			err := stream.Send(&messagingv1.SendStreamRequest{Send: &messagingv1.SendRequest{
				ConversationId:  peer,
				ClientMessageId: id,
				Header:          &messagingv1.MessageHeader{Kind: messagingv1.MessageKind_MESSAGE_KIND_PLAINTEXT},
				Envelope:        []byte("message " + id),
			}})
			if err != nil {
				return
			}
		}
	})
	for {
		r, err := stream.Recv()
		if err != nil {
			s.end = err
			break
		}
		s.mu.Lock()
		if r.GetSent() != nil {
			s.acked[r.GetClientMessageId()] = true
		} else {
			s.refused++
		}
		s.mu.Unlock()
	}
	wg.Wait()
}

// TestGracefulStopAnswersEveryStoredMessage: SendStreams send without pause while the
// node stops as on SIGTERM. Every message the store holds afterwards had its reply
// reach its sender (none stored unanswered, which a client would not know to count as
// sent), every stream ends with UNAVAILABLE, and the stop takes less than the grace
// period.
func TestGracefulStopAnswersEveryStoredMessage(t *testing.T) {
	const (
		senders = 8
		grace   = 5 * time.Second
	)
	n := nodetest.Start(t, func(c *node.Config) {
		c.GRPC.ShutdownGrace = grace
		c.Messaging.SendRate, c.Messaging.SendBurst = 1e6, 1e6
	})
	app := n.NewApp(t)
	app.AllowPlaintextDirect(t) // opaque bytes: the point is the replies, not encryption
	peer := app.User(t, "peer")
	conn, err := grpcclient.Dial(grpcclient.Config{Addr: n.GRPC})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	client := messagingv1.NewMessagingServiceClient(conn)

	streams := make([]*streamSender, senders)
	var wg sync.WaitGroup
	for i := range streams {
		id := app.User(t, fmt.Sprintf("sender-%d", i))
		s := &streamSender{identity: id, acked: map[string]bool{}}
		streams[i] = s
		ctx := metadata.AppendToOutgoingContext(context.Background(), "authorization", "Bearer "+app.Token(t, id))
		wg.Go(func() { s.run(ctx, client, peer) })
	}
	// Let the flow reach its pace: every stream has replies coming back.
	deadline := time.Now().Add(10 * time.Second)
	for _, s := range streams {
		for {
			s.mu.Lock()
			got := len(s.acked)
			s.mu.Unlock()
			if got >= 100 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("sender %s: %d replies after 10 s", s.identity, got)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}

	start := time.Now()
	if err := n.Stop(); err != nil {
		t.Fatalf("stop: %v", err)
	}
	took := time.Since(start)
	wg.Wait()
	if took >= grace {
		t.Errorf("the stop took %s, the grace period is %s", took, grace)
	}

	store, err := messaging.OpenBoltStore(filepath.Join(n.DataDir, "messaging.db"), messaging.StoreOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	total, unanswered := 0, 0
	for _, s := range streams {
		if status.Code(s.end) != codes.Unavailable {
			t.Errorf("sender %s: the stream ended with %v, want UNAVAILABLE", s.identity, s.end)
		}
		if s.refused > 0 {
			t.Errorf("sender %s: %d messages refused", s.identity, s.refused)
		}
		for _, id := range s.sent {
			_, err := store.Sent(app.ID, s.identity, id)
			switch {
			case errors.Is(err, errs.ErrNotFound):
				if s.acked[id] {
					t.Errorf("sender %s: %s was acknowledged but is not stored", s.identity, id)
				}
			case err != nil:
				t.Fatal(err)
			default:
				total++
				if !s.acked[id] {
					unanswered++
				}
			}
		}
	}
	if unanswered > 0 {
		t.Errorf("%d of %d stored messages never had their reply reach the sender", unanswered, total)
	}
	t.Logf("%d streams, %d messages stored, the stop took %s", senders, total, took.Round(time.Millisecond))
}
