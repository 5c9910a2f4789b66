package servicetest

import (
	"context"
	"testing"
	"time"

	messagingv1 "github.com/umbra-e2ee/umbra/proto/umbra/messaging/v1"
)

// Inbox is a Subscribe stream of the messaging service, read in the background.
type Inbox struct {
	// Items are what the stream sent, heartbeats among them, with room for the buffer
	// SubscribeFromStart was given; it is closed when the stream ends.
	Items chan *messagingv1.SubscribeResponse
}

// SubscribeFromStart opens the inbox of ctx's caller from its start, so that an item
// delivered before it opens is replayed, not missed, until the test ends.
func SubscribeFromStart(t testing.TB, ctx context.Context, client messagingv1.MessagingServiceClient, buffer int) *Inbox {
	t.Helper()
	ctx, cancel := context.WithCancel(ctx)
	t.Cleanup(cancel)
	stream, err := client.Subscribe(ctx, &messagingv1.SubscribeRequest{AfterInboxSequence: new(uint64)})
	if err != nil {
		t.Fatal(err)
	}
	in := &Inbox{Items: make(chan *messagingv1.SubscribeResponse, buffer)}
	go func() {
		defer close(in.Items)
		for {
			it, err := stream.Recv()
			if err != nil {
				return
			}
			in.Items <- it
		}
	}()
	return in
}

// Next returns the next item that is not a heartbeat; the stream's end, or nothing
// within wait, fails the test.
func (in *Inbox) Next(t testing.TB, wait time.Duration) *messagingv1.SubscribeResponse {
	t.Helper()
	timeout := time.After(wait)
	for {
		select {
		case it, ok := <-in.Items:
			if !ok {
				t.Fatal("the stream ended")
			}
			if it.GetHeartbeat() == nil {
				return it
			}
		case <-timeout:
			t.Fatalf("nothing on the stream for %s", wait)
		}
	}
}
