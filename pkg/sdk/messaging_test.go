package sdk_test

import (
	"context"
	"errors"
	"strings"
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
