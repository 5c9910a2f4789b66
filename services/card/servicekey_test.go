package card

import (
	"bytes"
	"context"
	"net/http"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/umbra-e2ee/umbra/internal/servicetest"
	"github.com/umbra-e2ee/umbra/pkg/auth"
	"github.com/umbra-e2ee/umbra/pkg/e2ee"
	cardv1 "github.com/umbra-e2ee/umbra/proto/umbra/card/v1"
)

// TestServiceKeyRotation rotates the counter-signing key and checks that cards signed
// before and after verify with the key each names, that GetServiceKey lists both with
// their validity, that only the admin may rotate, and that it all survives a restart.
func TestServiceKeyRotation(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{})
	a := e.newApp(t, "A")
	users := e.newUsers(t, a, "alice", "bob", "carol")
	alice, bob, carol := users[0], users[1], users[2]
	cardA := e.publish(t, alice, newKeys(t, e2ee.SuiteX25519), nil, nil)
	first, err := e.client.GetServiceKey(as(""), &cardv1.GetServiceKeyRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if len(first.GetKeys()) != 1 || !proto.Equal(first.GetKeys()[0], first.GetKey()) || first.GetKey().GetSupersededAt() != nil {
		t.Fatalf("before any rotation GetServiceKey = %v; want one current key, listed in keys", first)
	}

	servicetest.CheckRefusals(t, notAdmin(alice, "RotateServiceKey", e.client.RotateServiceKey, &cardv1.RotateServiceKeyRequest{}), e.snapshot)
	if now, err := e.client.GetServiceKey(as(""), &cardv1.GetServiceKeyRequest{}); err != nil || !proto.Equal(now, first) {
		t.Fatalf("a refused rotation changed the keys: %v, %v", now, err)
	}

	e.clock.Add(10 * time.Minute)
	rotatedAt := e.clock.Now()
	rot, err := e.client.RotateServiceKey(as(testAdmin), &cardv1.RotateServiceKeyRequest{})
	if err != nil {
		t.Fatal(err)
	}
	oldID, newID := first.GetKey().GetKeyId(), rot.GetKey().GetKeyId()
	if rot.GetPrevious().GetKeyId() != oldID || !rot.GetPrevious().GetSupersededAt().AsTime().Equal(rotatedAt) || newID == oldID || rot.GetKey().GetSupersededAt() != nil {
		t.Fatalf("RotateServiceKey = %v; want a new current key, and the old one retired at %s", rot, rotatedAt)
	}
	e.clock.Add(time.Minute)
	cardB := e.publish(t, bob, newKeys(t, e2ee.SuiteX25519), nil, nil)
	if cardB.GetServiceKeyId() != newID {
		t.Errorf("a card published after the rotation names key %q; want the new key %q", cardB.GetServiceKeyId(), newID)
	}

	// checkKeys verifies each card with the key its service_key_id names, as a client
	// that never saw the old key does.
	checkKeys := func(t *testing.T, c cardv1.CardServiceClient, cards ...*cardv1.Card) {
		t.Helper()
		resp, err := c.GetServiceKey(as(""), &cardv1.GetServiceKeyRequest{})
		if err != nil {
			t.Fatal(err)
		}
		keys := resp.GetKeys()
		if len(keys) != 2 || keys[0].GetKeyId() != oldID || keys[1].GetKeyId() != newID || !proto.Equal(keys[1], resp.GetKey()) ||
			!keys[0].GetSupersededAt().AsTime().Equal(rotatedAt) || keys[1].GetSupersededAt() != nil {
			t.Fatalf("GetServiceKey = %v; want the retired key (superseded at %s), then the current one", resp, rotatedAt)
		}
		// The new key comes with the rotation statement the old key signed; the first
		// key has none (it has no predecessor).
		if keys[0].GetRotation() != nil {
			t.Errorf("the first key carries a rotation statement: %v", keys[0].GetRotation())
		}
		r, err := e2ee.VerifyServiceKeyRotation(oldID, keys[0].GetPublicKey(), keys[1].GetRotation().GetContent(), keys[1].GetRotation().GetSignature())
		if err != nil {
			t.Fatalf("the rotation statement of the new key: %v", err)
		}
		if r.NewKeyID != newID || !bytes.Equal(r.NewPublicKey, keys[1].GetPublicKey()) || !r.CreatedAt.Equal(rotatedAt.Truncate(time.Second)) {
			t.Errorf("the rotation statement says %s %x at %s; want %s %x at %s", r.NewKeyID, r.NewPublicKey, r.CreatedAt, newID, keys[1].GetPublicKey(), rotatedAt)
		}
		byID := map[string]*cardv1.ServiceKey{oldID: keys[0], newID: keys[1]}
		for _, card := range cards {
			got, err := c.GetCard(carol.ctx(), &cardv1.GetCardRequest{CardId: card.GetCardId()})
			if err != nil {
				t.Fatal(err)
			}
			key := byID[got.GetCard().GetServiceKeyId()]
			if err := e2ee.VerifyServiceSignature(key.GetPublicKey(), card.GetCardId(), got.GetCard().GetServiceSignature()); err != nil {
				t.Errorf("card of %s, signed by key %s: %v", got.GetCard().GetIdentity(), got.GetCard().GetServiceKeyId(), err)
			}
			if ss := key.GetSupersededAt(); ss != nil && got.GetCard().GetPublishedAt().AsTime().After(ss.AsTime()) {
				t.Errorf("card published at %s names key %s, retired at %s", got.GetCard().GetPublishedAt().AsTime(), key.GetKeyId(), ss.AsTime())
			}
		}
	}
	checkKeys(t, e.client, cardA, cardB)
	if cardA.GetServiceKeyId() != oldID {
		t.Errorf("alice's card names key %q; want the old key %q", cardA.GetServiceKeyId(), oldID)
	}

	// The retired key's private half is gone; the current one's is kept.
	recs, err := e.store.ServiceKeys()
	if err != nil || len(recs) != 2 || len(recs[0].GetSeed()) != 0 || len(recs[0].GetPublicKey()) != 32 || len(recs[1].GetSeed()) != 32 {
		t.Fatalf("stored service keys = %v, %v; want the retired one without a seed", recs, err)
	}

	e.stop()
	e2 := newEnv(t, envOptions{dir: e.dir, clock: e.clock})
	checkKeys(t, e2.client, cardA, cardB)
	cardC := e2.publish(t, carol, newKeys(t, e2ee.SuiteHybrid), nil, nil)
	if cardC.GetServiceKeyId() != newID {
		t.Errorf("after a restart a card names key %q; want %q", cardC.GetServiceKeyId(), newID)
	}
	checkKeys(t, e2.client, cardC)

	// A second rotation: each key after the first carries the statement of the key
	// before it, the retired middle one included, so a client follows the whole chain.
	e.clock.Add(time.Minute)
	if _, err := e2.client.RotateServiceKey(as(testAdmin), &cardv1.RotateServiceKeyRequest{}); err != nil {
		t.Fatal(err)
	}
	all, err := e2.client.GetServiceKey(as(""), &cardv1.GetServiceKeyRequest{})
	if err != nil || len(all.GetKeys()) != 3 {
		t.Fatalf("GetServiceKey after two rotations = %v, %v", all, err)
	}
	for i := 1; i < 3; i++ {
		prev, k := all.GetKeys()[i-1], all.GetKeys()[i]
		r, err := e2ee.VerifyServiceKeyRotation(prev.GetKeyId(), prev.GetPublicKey(), k.GetRotation().GetContent(), k.GetRotation().GetSignature())
		if err != nil || r.NewKeyID != k.GetKeyId() || !bytes.Equal(r.NewPublicKey, k.GetPublicKey()) {
			t.Errorf("key %d (%s): rotation statement %v, %v; want one signed by key %s naming it", i, k.GetKeyId(), r, err, prev.GetKeyId())
		}
	}
}

// TestServiceKeyRotationOverREST rotates through the gateway's route, which only the
// admin credential opens, and reads the keys back.
func TestServiceKeyRotationOverREST(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{})
	if code, body := e.rest(t, "POST", "/v1/service-keys:rotate", "", map[string]any{}); code != http.StatusUnauthorized {
		t.Fatalf("rotate without a credential: %d %v", code, body)
	}
	code, body := e.rest(t, "POST", "/v1/service-keys:rotate", testAdmin, map[string]any{})
	if code != http.StatusOK {
		t.Fatalf("rotate: %d %v", code, body)
	}
	newID := body["key"].(map[string]any)["keyId"]
	code, body = e.rest(t, "GET", "/v1/service-keys", "", nil)
	keys, _ := body["keys"].([]any)
	if code != http.StatusOK || len(keys) != 2 || keys[1].(map[string]any)["keyId"] != newID || keys[0].(map[string]any)["supersededAt"] == nil {
		t.Fatalf("GET /v1/service-keys after a rotation: %d %v", code, body)
	}
}

// TestServiceKeyRotationAcrossReplicas: two servers over one store, as two replicas
// over one database. After one rotates the service key, the other counter-signs new
// cards with the new key (the store refuses its stale key; it reloads and signs again),
// never with the retired one after its retirement; and a rotation by the replica whose
// key is stale is signed by the key it actually retires, so the chain a client follows
// stays whole.
func TestServiceKeyRotationAcrossReplicas(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{})
	other, err := New(e.store, Config{Clock: e.clock.Now}, nil)
	if err != nil {
		t.Fatal(err)
	}
	a := e.newApp(t, "A")
	users := e.newUsers(t, a, "alice", "bob")
	on := func(u user) context.Context {
		return auth.NewContext(context.Background(), &auth.Principal{AppID: u.app.id, Identity: u.identity})
	}
	e.clock.Add(time.Minute)
	rot, err := e.client.RotateServiceKey(as(testAdmin), &cardv1.RotateServiceKeyRequest{})
	if err != nil {
		t.Fatal(err)
	}
	e.clock.Add(time.Minute)
	// The other replica still holds the retired key.
	resp, err := other.PublishCard(on(users[0]), e.cardRequest(t, users[0], newKeys(t, e2ee.SuiteX25519), nil, nil))
	if err != nil {
		t.Fatal(err)
	}
	c := resp.GetCard()
	if c.GetServiceKeyId() != rot.GetKey().GetKeyId() || e2ee.VerifyServiceSignature(rot.GetKey().GetPublicKey(), c.GetCardId(), c.GetServiceSignature()) != nil {
		t.Errorf("the other replica counter-signed with key %s; want the new key %s, verifying", c.GetServiceKeyId(), rot.GetKey().GetKeyId())
	}
	if c.GetPublishedAt().AsTime().Before(rot.GetPrevious().GetSupersededAt().AsTime()) {
		t.Errorf("the card is dated %v, before the rotation at %v", c.GetPublishedAt().AsTime(), rot.GetPrevious().GetSupersededAt().AsTime())
	}

	// A rotation on the first replica, then one on the other, which knows the key
	// before it.
	e.clock.Add(time.Minute)
	if _, err := e.client.RotateServiceKey(as(testAdmin), &cardv1.RotateServiceKeyRequest{}); err != nil {
		t.Fatal(err)
	}
	e.clock.Add(time.Minute)
	if _, err := other.RotateServiceKey(context.Background(), &cardv1.RotateServiceKeyRequest{}); err != nil {
		t.Fatalf("a rotation on the replica with the stale key: %v", err)
	}
	keys, err := e.client.GetServiceKey(as(""), &cardv1.GetServiceKeyRequest{})
	if err != nil || len(keys.GetKeys()) != 4 {
		t.Fatalf("GetServiceKey = %v, %v; want 4 keys", keys, err)
	}
	list := keys.GetKeys()
	for i := 1; i < len(list); i++ {
		r, err := e2ee.VerifyServiceKeyRotation(list[i-1].GetKeyId(), list[i-1].GetPublicKey(), list[i].GetRotation().GetContent(), list[i].GetRotation().GetSignature())
		if err != nil || r.NewKeyID != list[i].GetKeyId() {
			t.Errorf("key %d (%s) does not chain to key %d: %v", i, list[i].GetKeyId(), i-1, err)
		}
	}
	// The first replica, now stale itself, follows too.
	resp, err = e.client.PublishCard(users[1].ctx(), e.cardRequest(t, users[1], newKeys(t, e2ee.SuiteX25519), nil, nil))
	if err != nil || resp.GetCard().GetServiceKeyId() != list[3].GetKeyId() {
		t.Errorf("a card published on the first replica after the other's rotation names key %s (%v); want %s", resp.GetCard().GetServiceKeyId(), err, list[3].GetKeyId())
	}
}
