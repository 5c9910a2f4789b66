package sdk_test

import (
	"bytes"
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/umbra-e2ee/umbra/internal/node/nodetest"
	"github.com/umbra-e2ee/umbra/pkg/e2ee"
	"github.com/umbra-e2ee/umbra/pkg/sdk"
	cardv1 "github.com/umbra-e2ee/umbra/proto/umbra/card/v1"
)

// rotateServiceKey rotates the node's card service key with the admin credential.
func rotateServiceKey(t *testing.T, n *nodetest.Node) *cardv1.RotateServiceKeyResponse {
	t.Helper()
	ctx := metadata.AppendToOutgoingContext(context.Background(), "authorization", "Bearer "+nodetest.Admin)
	resp, err := cardv1.NewCardServiceClient(n.Conn()).RotateServiceKey(ctx, &cardv1.RotateServiceKeyRequest{})
	if err != nil {
		t.Fatal(err)
	}
	return resp
}

// TestCardsVerifyAfterServiceKeyRotation: after the card service rotates its key, a
// client that never saw the old key still verifies a card the old key signed, and
// every client verifies new cards with the new key.
func TestCardsVerifyAfterServiceKeyRotation(t *testing.T) {
	t.Parallel()
	n, app := startNode(t)
	ctx := context.Background()
	alice, aliceCard := registeredDevice(t, n, app, "alice", e2ee.SuiteX25519)
	rotateServiceKey(t, n)

	// bob's client starts after the rotation: the service's current key is not the one
	// that signed alice's card.
	bob, _ := registeredDevice(t, n, app, "bob", e2ee.SuiteX25519)
	found, err := bob.FindCards(ctx, alice.identity)
	if err != nil {
		t.Fatalf("a new client looks up a card signed before the rotation: %v", err)
	}
	if got := found[alice.identity]; got == nil || !bytes.Equal(got.ID, aliceCard.ID) {
		t.Fatalf("FindCards = %v", found)
	}
	// alice's client, which cached the old key as the current one, verifies bob's card,
	// signed by the new key.
	if _, err := alice.FindCards(ctx, bob.identity); err != nil {
		t.Fatalf("an old client looks up a card signed after the rotation: %v", err)
	}
	wantDelivered(t, alice, bob, "across the rotation", "alice's message to bob")
}

// TestCardDatedAfterItsServiceKeyRetiredIsRefused: a server that serves a card signed
// by a retired key with a publication time after the key's retirement (what a thief of
// the old private key would need) gets the card refused.
func TestCardDatedAfterItsServiceKeyRetiredIsRefused(t *testing.T) {
	t.Parallel()
	n, app := startNode(t)
	ctx := context.Background()
	alice, _ := registeredDevice(t, n, app, "alice", e2ee.SuiteX25519)
	rot := rotateServiceKey(t, n)
	var tamper atomic.Bool
	backdate := func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
		err := invoker(ctx, method, req, reply, cc, opts...)
		if r, ok := reply.(*cardv1.SearchCardsWithProofsResponse); ok && err == nil && tamper.Load() {
			for _, res := range r.GetResults() {
				if c := res.GetCard(); c != nil {
					c.PublishedAt = timestamppb.New(rot.GetPrevious().GetSupersededAt().AsTime().Add(2 * time.Second)) // the signed retirement time is in whole seconds
				}
			}
		}
		return err
	}
	bob := newDevice(t, n, app, "bob", e2ee.SuiteX25519, "", grpc.WithChainUnaryInterceptor(backdate))
	if _, err := bob.FindCards(ctx, alice.identity); err != nil {
		t.Fatalf("the card as the service serves it: %v", err)
	}
	tamper.Store(true)
	if _, err := bob.FindCards(ctx, alice.identity); !errors.Is(err, sdk.ErrUntrustedCard) {
		t.Fatalf("a card dated after its service key was retired: %v; want ErrUntrustedCard", err)
	}
}
