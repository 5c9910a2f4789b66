package sdk_test

import (
	"bytes"
	"context"
	"errors"
	"testing"

	"google.golang.org/grpc/metadata"

	"github.com/umbra-e2ee/umbra/internal/node/nodetest"
	"github.com/umbra-e2ee/umbra/pkg/e2ee"
	"github.com/umbra-e2ee/umbra/pkg/kt"
	"github.com/umbra-e2ee/umbra/pkg/sdk"
	cardv1 "github.com/umbra-e2ee/umbra/proto/umbra/card/v1"
	ktv1 "github.com/umbra-e2ee/umbra/proto/umbra/kt/v1"
)

// TestLookupsAcrossALogKeyRotation: the operator rotates the log key (RotateLogKey,
// then RetireLogKey of the old one). A client given the old key, one that pinned it on
// first use, and one given only the new key all prove lookups during the overlap;
// after the retirement the first two refuse the checkpoints (ErrUnknownLogKey) and use
// nothing, until given the new key (Config.LogKeys), with which the same keystore and
// kept checkpoint go on: the rotation does not reset the log, and a rewritten log
// signed by the new key is still refused (ErrLogInconsistent).
func TestLookupsAcrossALogKeyRotation(t *testing.T) {
	t.Parallel()
	n, app := startNode(t)
	ctx := context.Background()
	admin := metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+nodetest.Admin)
	cards := cardv1.NewCardServiceClient(n.Conn())
	bob, bobCard := registeredDevice(t, n, app, "bob", e2ee.SuiteX25519)
	oldKey := logKey(t, n)

	aliceDir := t.TempDir()
	var tp tamperer
	given := func(keys ...string) func(*sdk.Config) { return func(c *sdk.Config) { c.LogKeys = keys } }
	alice := newKTDevice(t, n, app, "alice", aliceDir, &tp, given(oldKey))
	carol := newKTDevice(t, n, app, "carol", "", nil, nil) // pins on first use
	for _, d := range []*ktDevice{alice, carol} {
		if _, err := d.FindCards(ctx, bob.identity); err != nil {
			t.Fatalf("before the rotation: %v", err)
		}
	}

	rot, err := cards.RotateLogKey(admin, &cardv1.RotateLogKeyRequest{})
	if err != nil {
		t.Fatal(err)
	}
	newKey := rot.GetKey().GetVerifierKey()
	// During the overlap, with a card published after the rotation (a new checkpoint).
	dave, _ := registeredDevice(t, n, app, "dave", e2ee.SuiteX25519)
	erin := newKTDevice(t, n, app, "erin", "", nil, given(newKey))
	for name, d := range map[string]*ktDevice{"given the old key": alice, "pinned on first use": carol, "given the new key": erin} {
		if found, err := d.FindCards(ctx, bob.identity, dave.identity); err != nil || found[dave.identity] == nil {
			t.Errorf("during the rotation, a client %s: %v, %v", name, found, err)
		}
	}

	if _, err := cards.RetireLogKey(admin, &cardv1.RetireLogKeyRequest{Key: oldKey}); err != nil {
		t.Fatal(err)
	}
	frank, _ := registeredDevice(t, n, app, "frank", e2ee.SuiteX25519)
	for name, d := range map[string]*ktDevice{"given the old key": alice, "pinned on first use": carol} {
		found, err := d.FindCards(ctx, frank.identity)
		if !errors.Is(err, sdk.ErrUnknownLogKey) || !errors.Is(err, kt.ErrUnknownLogKey) || found != nil {
			t.Errorf("after the retirement, a client %s: %v, %v; want ErrUnknownLogKey and no card", name, found, err)
		}
	}
	if _, err := erin.FindCards(ctx, frank.identity); err != nil {
		t.Errorf("after the retirement, a client given the new key: %v", err)
	}
	kept, err := alice.KeptCheckpoint()
	if err != nil {
		t.Fatal(err)
	}

	// Alice's app ships the new key: the same keystore and kept checkpoint go on.
	alice = newKTDevice(t, n, app, "alice", aliceDir, &tp, given(newKey))
	if found, err := alice.FindCards(ctx, frank.identity); err != nil || found[frank.identity] == nil {
		t.Fatalf("given the new key: %v, %v", found, err)
	}
	now, err := alice.KeptCheckpoint()
	if err != nil || now.Size <= kept.Size {
		t.Fatalf("the kept checkpoint after the new key: %+v, %v; want one larger than %d entries", now, err, kept.Size)
	}

	// The operator, holding the new key, rewrites the log: refused as before.
	op := newOperatorLog(t, n, app.ID)
	if op.signer.VerifierKey() != newKey {
		t.Fatalf("the operator's key is %s; want the new log key %s", op.signer.VerifierKey(), newKey)
	}
	real := op.leaves()
	rewritten := append([][]byte(nil), real...)
	for i := range rewritten {
		if leaf, _ := kt.ParseLeaf(rewritten[i]); bytes.Equal(leaf.GetCardId(), bobCard.ID) {
			rewritten[i] = op.leaf(bob.identity, ktv1.LogEventKind_LOG_EVENT_KIND_REVOCATION, bobCard.ID)
		}
	}
	v := op.forge(rewritten, nil)
	if _, err := kt.OpenCheckpoint(v.signed, newKey); err != nil {
		t.Fatalf("the forged checkpoint is not signed by the new key: %v", err)
	}
	tp.set(v.serve)
	defer tp.set(nil)
	if _, err := alice.FindCards(ctx, bob.identity); !errors.Is(err, sdk.ErrLogInconsistent) {
		t.Errorf("a rewritten log signed by the new key: %v; want ErrLogInconsistent", err)
	}
}
