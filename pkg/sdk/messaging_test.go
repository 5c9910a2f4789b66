package sdk_test

import (
	"context"
	"errors"
	"io/fs"
	"strings"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/umbra-e2ee/umbra/pkg/e2ee"
	"github.com/umbra-e2ee/umbra/pkg/sdk"
	identityv1 "github.com/umbra-e2ee/umbra/proto/umbra/identity/v1"
	messagingv1 "github.com/umbra-e2ee/umbra/proto/umbra/messaging/v1"
)

func TestSendSubscribeHistory(t *testing.T) {
	t.Parallel()
	n, app := startNode(t)
	ctx := context.Background()
	alice, _ := registeredDevice(t, n, app, "alice", e2ee.SuiteX25519)
	bob, _ := registeredDevice(t, n, app, "bob", e2ee.SuiteHybrid)
	texts := []string{"one", "two", "three"}
	for _, text := range texts[:2] {
		if _, err := alice.SendTo(ctx, bob.identity, []byte(text)); err != nil {
			t.Fatal(err)
		}
	}

	// Bob replays his inbox from the start, stops after the second message, and
	// resumes from there: the third arrives once, nothing is repeated.
	var got []string
	var cursor uint64
	zero := uint64(0)
	errStop := errors.New("stop")
	err := bob.Subscribe(ctx, sdk.SubscribeOptions{After: &zero}, func(item *messagingv1.SubscribeResponse) error {
		m := item.GetMessage()
		if m == nil {
			return nil
		}
		text, err := bob.OpenMessage(ctx, m)
		if err != nil {
			return err
		}
		got = append(got, string(text))
		cursor = item.GetInboxSequence()
		if len(got) == 2 {
			return errStop
		}
		return nil
	})
	if !errors.Is(err, errStop) {
		t.Fatalf("Subscribe = %v", err)
	}
	if _, err := alice.SendTo(ctx, bob.identity, []byte(texts[2])); err != nil {
		t.Fatal(err)
	}
	err = bob.Subscribe(ctx, sdk.SubscribeOptions{After: &cursor}, func(item *messagingv1.SubscribeResponse) error {
		if m := item.GetMessage(); m != nil {
			text, err := bob.OpenMessage(ctx, m)
			if err != nil {
				return err
			}
			got = append(got, string(text))
		}
		if item.GetHeartbeat() != nil {
			return errStop // caught up
		}
		return nil
	})
	if !errors.Is(err, errStop) {
		t.Fatalf("resumed Subscribe = %v", err)
	}
	if len(got) != 3 || got[0] != "one" || got[1] != "two" || got[2] != "three" {
		t.Fatalf("bob read %q; want one, two, three exactly once", got)
	}

	// History reads the conversation back, newest first, and alice can read her copies.
	page, err := alice.History(ctx, &messagingv1.HistoryRequest{ConversationId: bob.identity})
	if err != nil {
		t.Fatal(err)
	}
	if len(page.GetMessages()) != 3 || page.GetMessages()[0].GetSequence() != 3 {
		t.Fatalf("history = %v", page.GetMessages())
	}
	mine, err := alice.OpenMessage(ctx, page.GetMessages()[0])
	if err != nil || string(mine) != "three" {
		t.Errorf("alice reads her own message: %q, %v", mine, err)
	}
}

// TestRevocationEndsAStream: "log out everywhere" closes an open stream within the
// revocation bound, not only at the token's expiry.
func TestRevocationEndsAStream(t *testing.T) {
	n, app := startNode(t)
	bob := app.User(t, "bob")
	tok := app.Token(t, bob)
	ctx, cancel := context.WithTimeout(metadata.AppendToOutgoingContext(context.Background(), "authorization", "Bearer "+tok), 30*time.Second)
	defer cancel()
	stream, err := messagingv1.NewMessagingServiceClient(n.Conn()).Subscribe(ctx, &messagingv1.SubscribeRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := stream.Recv(); err != nil { // the first heartbeat: the stream is open
		t.Fatal(err)
	}
	actx := metadata.AppendToOutgoingContext(context.Background(), "authorization", "Bearer "+app.APIKey)
	if _, err := identityv1.NewIdentityServiceClient(n.Conn()).RevokeTokens(actx, &identityv1.RevokeTokensRequest{Identity: bob}); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	for {
		_, err := stream.Recv()
		if err == nil {
			continue
		}
		if status.Code(err) != codes.Unauthenticated {
			t.Fatalf("stream ended with %v; want Unauthenticated", err)
		}
		break
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("the stream outlived the revocation by %s", d)
	}
}

// TestSubscribeStarts: the zero SubscribeOptions start live, FromStart and After = 0
// replay what is stored, and FromStart with a cursor is refused before any call.
func TestSubscribeStarts(t *testing.T) {
	t.Parallel()
	n, app := startNode(t)
	ctx := context.Background()
	alice, _ := registeredDevice(t, n, app, "alice", e2ee.SuiteX25519)
	bob, _ := registeredDevice(t, n, app, "bob", e2ee.SuiteX25519)
	if _, err := alice.SendTo(ctx, bob.identity, []byte("stored")); err != nil {
		t.Fatal(err)
	}
	errCaughtUp := errors.New("caught up")
	replayed := func(opts sdk.SubscribeOptions) (int, error) {
		messages := 0
		err := bob.Subscribe(ctx, opts, func(item *messagingv1.SubscribeResponse) error {
			if item.GetHeartbeat() != nil {
				return errCaughtUp
			}
			messages++
			return nil
		})
		if errors.Is(err, errCaughtUp) {
			err = nil
		}
		return messages, err
	}
	zero, one := uint64(0), uint64(1)
	for _, tc := range []struct {
		name string
		opts sdk.SubscribeOptions
		want int
	}{
		{"zero options: live", sdk.SubscribeOptions{}, 0},
		{"FromStart", sdk.SubscribeOptions{FromStart: true}, 1},
		{"After 0", sdk.SubscribeOptions{After: &zero}, 1},
		{"FromStart and After 0", sdk.SubscribeOptions{FromStart: true, After: &zero}, 1},
		{"After 1", sdk.SubscribeOptions{After: &one}, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got, err := replayed(tc.opts); err != nil || got != tc.want {
				t.Errorf("replayed %d messages, %v; want %d", got, err, tc.want)
			}
		})
	}
	if _, err := replayed(sdk.SubscribeOptions{FromStart: true, After: &one}); err == nil || !strings.Contains(err.Error(), "two different starts") {
		t.Errorf("FromStart with After 1: %v; want a refusal", err)
	}
}

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
