package sdk_test

import (
	"context"
	"io/fs"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/umbra-e2ee/umbra/pkg/e2ee"
	messagingv1 "github.com/umbra-e2ee/umbra/proto/umbra/messaging/v1"
)

// TestSendRetriesWhatTheSenderRetries: Client.Send, against a real server whose
// messaging store fails its writes, keeps sending the same request while the failure
// lasts (a full disk answers UNAVAILABLE, another I/O error INTERNAL, both of which a
// Sender retries) and returns the reply once the write succeeds, the message stored
// once. It gives up when its context ends, and returns a refusal at once.
func TestSendRetriesWhatTheSenderRetries(t *testing.T) {
	n, app := startNode(t)
	bob := app.User(t, "bob")
	c := newQuickDevice(t, n, app, "alice", e2ee.DefaultSuite)
	card, err := c.Register(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	store := n.Stores["messaging"]
	defer store.FailCommits(nil)
	stored := uint64(0)

	for _, tc := range []struct {
		name  string
		fault error
		code  codes.Code // what the server answers meanwhile
	}{
		{"storage full", &fs.PathError{Op: "write", Path: store.Path(), Err: syscall.ENOSPC}, codes.Unavailable},
		{"I/O error", &fs.PathError{Op: "write", Path: store.Path(), Err: syscall.EIO}, codes.Internal},
	} {
		t.Run(tc.name, func(t *testing.T) {
			store.FailCommits(func() error { return tc.fault })
			req := opaqueTo(bob, card, int(stored))
			// The server's answer while the fault lasts, as a client without retries
			// sees it.
			_, err := messagingv1.NewMessagingServiceClient(n.Conn()).Send(metadata.AppendToOutgoingContext(context.Background(), "authorization", "Bearer "+app.Token(t, c.identity)), req)
			if status.Code(err) != tc.code {
				t.Fatalf("the server answers %v; want %v", err, tc.code)
			}
			done := make(chan error, 1)
			var resp *messagingv1.SendResponse
			go func() {
				var err error
				resp, err = c.Send(context.Background(), req)
				done <- err
			}()
			select {
			case err := <-done:
				t.Fatalf("Send returned while writes fail: %v", err)
			case <-time.After(700 * time.Millisecond):
			}
			store.FailCommits(nil)
			select {
			case err := <-done:
				if err != nil {
					t.Fatalf("Send once writes succeed: %v", err)
				}
			case <-time.After(10 * time.Second):
				t.Fatal("Send still retrying 10 s after writes succeed")
			}
			if stored++; resp.GetSequence() != stored || resp.GetDuplicate() {
				t.Fatalf("stored at %d (duplicate %v); want %d, once", resp.GetSequence(), resp.GetDuplicate(), stored)
			}
		})
	}

	t.Run("until its context ends", func(t *testing.T) {
		store.FailCommits(func() error { return syscall.ENOSPC })
		defer store.FailCommits(nil)
		ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
		defer cancel()
		start := time.Now()
		_, err := c.Send(ctx, opaqueTo(bob, card, 100))
		if status.Code(err) != codes.DeadlineExceeded && err != context.DeadlineExceeded {
			t.Errorf("Send past its deadline: %v", err)
		}
		if d := time.Since(start); d > 2*time.Second {
			t.Errorf("Send returned %s after a 500 ms deadline", d)
		}
	})

	t.Run("a refusal at once", func(t *testing.T) {
		req := opaqueTo(bob, card, 101)
		req.Envelope = nil
		start := time.Now()
		_, err := c.Send(context.Background(), req)
		if status.Code(err) != codes.InvalidArgument || time.Since(start) > time.Second {
			t.Errorf("Send of an empty envelope: %v after %s; want INVALID_ARGUMENT at once", err, time.Since(start))
		}
	})
}
