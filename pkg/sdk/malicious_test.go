package sdk_test

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"errors"
	"sync"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/umbra-e2ee/umbra/internal/boltdb"
	"github.com/umbra-e2ee/umbra/internal/node/nodetest"
	"github.com/umbra-e2ee/umbra/pkg/e2ee"
	"github.com/umbra-e2ee/umbra/pkg/sdk"
	cardv1 "github.com/umbra-e2ee/umbra/proto/umbra/card/v1"
	cardstoragev1 "github.com/umbra-e2ee/umbra/proto/umbra/storage/card/v1"
)

// The malicious-server tests: the real services, with a tampering layer between one
// client and them (a client interceptor that rewrites replies), playing an operator
// who holds everything the server holds, the card service's private key included.
// Each attack must be refused by the client's own checks.

// tamperer rewrites the replies of the calls of one client while fn is set: fn gets
// the request, the reply and the call's error, and returns the error the client sees.
type tamperer struct {
	mu sync.Mutex
	fn func(method string, req, reply any, err error) error
}

func (tp *tamperer) option() grpc.DialOption {
	return grpc.WithChainUnaryInterceptor(func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
		err := invoker(ctx, method, req, reply, cc, opts...)
		tp.mu.Lock()
		fn := tp.fn
		tp.mu.Unlock()
		if fn != nil {
			return fn(method, req, reply, err)
		}
		return err
	})
}

// onReplies makes a tamperer function of fn, which rewrites successful replies.
func onReplies(fn func(reply any)) func(string, any, any, error) error {
	return func(_ string, _, reply any, err error) error {
		if err == nil {
			fn(reply)
		}
		return err
	}
}

func (tp *tamperer) set(fn func(method string, req, reply any, err error) error) {
	tp.mu.Lock()
	tp.fn = fn
	tp.mu.Unlock()
}

// operatorKey reads the card service's current private key from the running node's
// card.db: what a malicious operator has.
func operatorKey(t *testing.T, n *nodetest.Node) (ed25519.PrivateKey, string) {
	t.Helper()
	var rec cardstoragev1.ServiceKeyRecord
	err := n.Stores["card"].View(func(tx *bolt.Tx) error {
		return boltdb.GetProto(tx.Bucket([]byte("service_key")), []byte("current"), &rec)
	})
	if err != nil {
		t.Fatal(err)
	}
	return ed25519.NewKeyFromSeed(rec.GetSeed()), rec.GetKeyId()
}

// forgedCard is a card of identity for a key pair the operator made, naming previous,
// with the given endorsement, counter-signed by key (id kid) as the service would.
func forgedCard(t *testing.T, identity string, previous []byte, endorsement *cardv1.CardEndorsement, key ed25519.PrivateKey, kid string) (*cardv1.Card, *e2ee.KeyPair, *e2ee.Card) {
	t.Helper()
	kp, err := e2ee.GenerateKeyPair(e2ee.SuiteX25519)
	if err != nil {
		t.Fatal(err)
	}
	content, sig, err := e2ee.NewCard(kp, identity, time.Now(), previous)
	if err != nil {
		t.Fatal(err)
	}
	parsed, err := e2ee.ParseCard(content, sig)
	if err != nil {
		t.Fatal(err)
	}
	return &cardv1.Card{
		CardId: parsed.ID, Identity: identity, Content: content, SelfSignature: sig, Endorsement: endorsement,
		ServiceSignature: e2ee.ServiceSign(key, parsed.ID), ServiceKeyId: kid,
		Status: cardv1.CardStatus_CARD_STATUS_ACTIVE, PublishedAt: timestamppb.Now(),
	}, kp, parsed
}

// serveAsActive makes the tamperer serve card as identity's active card, first in its
// history, and by id.
func serveAsActive(identity string, card *cardv1.Card) func(string, any, any, error) error {
	return func(method string, req, reply any, err error) error {
		if r, ok := req.(*cardv1.GetCardRequest); ok && bytes.Equal(r.GetCardId(), card.GetCardId()) {
			reply.(*cardv1.GetCardResponse).Card = proto.Clone(card).(*cardv1.Card)
			return nil
		}
		if err != nil {
			return err
		}
		switch r := reply.(type) {
		case *cardv1.SearchCardsResponse:
			for i, c := range r.GetCards() {
				if c.GetIdentity() == identity {
					r.Cards[i] = proto.Clone(card).(*cardv1.Card)
				}
			}
		case *cardv1.ListCardHistoryResponse:
			if len(r.GetCards()) > 0 && r.GetCards()[0].GetIdentity() == identity {
				r.Cards = append([]*cardv1.Card{proto.Clone(card).(*cardv1.Card)}, r.GetCards()...)
			}
		}
		return nil
	}
}

// wantRefused checks that d refuses identity's card and keeps nothing of it: Encrypt to
// identity fails with an error that matches each of want and makes no envelope,
// FindCards fails with want[0] and finds nothing, and identity is not pinned.
func wantRefused(t *testing.T, d *device, identity string, want ...error) {
	t.Helper()
	ctx := context.Background()
	env, err := d.Encrypt(ctx, []byte("for "+identity+" only"), identity)
	for _, w := range want {
		if !errors.Is(err, w) {
			t.Errorf("Encrypt: %v; want %v", err, w)
		}
	}
	if env != nil {
		t.Error("an envelope was made")
	}
	if found, err := d.FindCards(ctx, identity); !errors.Is(err, want[0]) || found != nil {
		t.Errorf("FindCards = %v, %v; want %v", found, err, want[0])
	}
	if ct, _ := d.Contact(ctx, identity); ct != nil {
		t.Errorf("%s was pinned from a refused lookup: %+v", identity, ct)
	}
}

// TestMaliciousServerSubstitutesACard: the operator serves, for bob, a card whose keys
// it holds, counter-signed with the real service key; alice pinned bob's real chain
// (his first card and an endorsed rotation). Whatever the forged card claims to be, it
// does not chain to the pin: Encrypt refuses it with the reason, and a message the
// operator signs with it is refused by Decrypt. The pins are tested on their own here
// (alice's lookups without key transparency): the operator holds the log key, so it
// could put the forged card in its log, where bob's monitoring would see it
// (kt_malicious_test.go) but alice's lookups would prove it.
func TestMaliciousServerSubstitutesACard(t *testing.T) {
	t.Parallel()
	n, app := startNode(t)
	ctx := context.Background()
	var tp tamperer
	alice := newDevice(t, n, app, "alice", e2ee.SuiteX25519, "", tp.option(), withoutKT)
	aliceCard := registeredCard(t, alice)
	bob, first := registeredDevice(t, n, app, "bob", e2ee.SuiteX25519)
	if _, err := alice.Encrypt(ctx, []byte("pin bob"), bob.identity); err != nil {
		t.Fatal(err)
	}
	head := rotatedCard(t, bob)
	if _, err := alice.Encrypt(ctx, []byte("follow bob's rotation"), bob.identity); err != nil {
		t.Fatal(err)
	}
	key, kid := operatorKey(t, n)
	badEndorsement := func(prev []byte) *cardv1.CardEndorsement {
		// An endorsement the operator can make: signed by a key of its own, not by
		// bob's pinned key.
		other, err := e2ee.GenerateKeyPair(e2ee.SuiteX25519)
		if err != nil {
			t.Fatal(err)
		}
		content, sig, err := e2ee.NewCard(other, bob.identity, time.Now(), prev)
		if err != nil {
			t.Fatal(err)
		}
		next, _ := e2ee.ParseCard(content, sig)
		eContent, eSig, err := e2ee.Endorse(other, next)
		if err != nil {
			t.Fatal(err)
		}
		return &cardv1.CardEndorsement{Content: eContent, Signature: eSig}
	}

	for _, tc := range []struct {
		name   string
		card   func() (*cardv1.Card, *e2ee.KeyPair, *e2ee.Card)
		reason sdk.KeyChangeReason
		kind   error
	}{
		{"a card naming no previous card", func() (*cardv1.Card, *e2ee.KeyPair, *e2ee.Card) {
			return forgedCard(t, bob.identity, nil, nil, key, kid)
		}, sdk.ReasonReset, nil},
		{"a rotation of the pinned card without endorsement", func() (*cardv1.Card, *e2ee.KeyPair, *e2ee.Card) {
			return forgedCard(t, bob.identity, head.ID, nil, key, kid)
		}, sdk.ReasonNotEndorsed, nil},
		{"a rotation with an endorsement that does not verify", func() (*cardv1.Card, *e2ee.KeyPair, *e2ee.Card) {
			return forgedCard(t, bob.identity, head.ID, badEndorsement(head.ID), key, kid)
		}, sdk.ReasonBadEndorsement, e2ee.ErrMalformed},
		{"a rotation of an unknown card", func() (*cardv1.Card, *e2ee.KeyPair, *e2ee.Card) {
			return forgedCard(t, bob.identity, bytes.Repeat([]byte{7}, 32), badEndorsement(bytes.Repeat([]byte{7}, 32)), key, kid)
		}, sdk.ReasonNoChain, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			forged, forgedKeys, parsed := tc.card()
			tp.set(serveAsActive(bob.identity, forged))
			defer tp.set(nil)
			kc := wantEncryptKeyChange(t, alice.Client, bob.identity, tc.reason, head.ID, parsed.ID)
			if tc.kind != nil && !errors.Is(kc, tc.kind) {
				t.Errorf("the key change wraps %v; want also %v", kc.Err, tc.kind)
			}
			// A message "from bob" that the operator signs with the forged card.
			forgedMsg, err := e2ee.Encrypt(forgedKeys, parsed.ID, []*e2ee.Card{aliceCard.Card}, []byte("send me your password"), time.Now())
			if err != nil {
				t.Fatal(err)
			}
			_, err = alice.Decrypt(ctx, forgedMsg, bob.identity)
			wantKeyChange(t, err, bob.identity, tc.reason, head.ID, parsed.ID)
		})
	}
	t.Run("an older card served as the active one", func(t *testing.T) {
		old, err := alice.CardByID(ctx, first.ID)
		if err != nil {
			t.Fatal(err)
		}
		tp.set(onReplies(func(reply any) {
			if r, ok := reply.(*cardv1.SearchCardsResponse); ok {
				for _, c := range r.GetCards() {
					if c.GetIdentity() == bob.identity {
						c.CardId, c.Content, c.SelfSignature, c.Endorsement = old.ID, old.Content, old.SelfSignature, nil
						c.ServiceSignature, c.ServiceKeyId = e2ee.ServiceSign(key, old.ID), kid
					}
				}
			}
		}))
		defer tp.set(nil)
		wantEncryptKeyChange(t, alice.Client, bob.identity, sdk.ReasonRollback, head.ID, first.ID)
	})
	// Without the tampering, bob's real card is the pinned one: nothing to accept.
	if _, err := alice.Encrypt(ctx, []byte("bob, really"), bob.identity); err != nil {
		t.Fatalf("after the attack, encrypt to bob's real card: %v", err)
	}
	if ct, err := alice.Contact(ctx, bob.identity); err != nil || ct.Pending != nil {
		t.Errorf("after the attack, alice's view of bob = %+v, %v; want no pending change", ct, err)
	}
}

// TestMaliciousServerSwapsItsServiceKey: the operator signs a card with a key of its
// own and lists that key as the service's, with no rotation statement, with one it
// signed itself, or under the pinned key's id. A client that pinned the real key
// refuses each; so does a new client given the real key in Config.ServiceKeys, where
// one trusting on first use would have been fooled.
func TestMaliciousServerSwapsItsServiceKey(t *testing.T) {
	t.Parallel()
	n, app := startNode(t)
	ctx := context.Background()
	var tp tamperer
	alice := newDevice(t, n, app, "alice", e2ee.SuiteX25519, "", tp.option())
	mustRegister(t, alice)
	bob, _ := registeredDevice(t, n, app, "bob", e2ee.SuiteX25519)
	realKey, realID := operatorKey(t, n)
	rogue := ed25519.NewKeyFromSeed(bytes.Repeat([]byte{9}, 32))
	rogueID := "rogue-key"
	selfSigned, selfSig, err := e2ee.SignServiceKeyRotation(rogue, realID, rogueID, rogue.Public().(ed25519.PublicKey), time.Now())
	if err != nil {
		t.Fatal(err)
	}
	swap := func(kid string, listed *cardv1.ServiceKey) func(string, any, any, error) error {
		return onReplies(func(reply any) {
			switch r := reply.(type) {
			case *cardv1.SearchCardsWithProofsResponse:
				for _, res := range r.GetResults() {
					if c := res.GetCard(); c != nil {
						c.ServiceSignature, c.ServiceKeyId = e2ee.ServiceSign(rogue, c.GetCardId()), kid
					}
				}
			case *cardv1.GetServiceKeyResponse:
				r.Keys = append(r.Keys, listed)
				r.Key = listed
			}
		})
	}
	rogueKey := func(rotation *cardv1.ServiceKeyRotation) *cardv1.ServiceKey {
		return &cardv1.ServiceKey{KeyId: rogueID, Algorithm: "Ed25519", PublicKey: rogue.Public().(ed25519.PublicKey), CreatedAt: timestamppb.Now(), Rotation: rotation}
	}
	for _, tc := range []struct {
		name string
		fn   func(string, any, any, error) error
		want error
	}{
		{"a new key with no rotation statement", swap(rogueID, rogueKey(nil)), sdk.ErrUnknownServiceKey},
		{"a new key with a statement it signed itself", swap(rogueID, rogueKey(&cardv1.ServiceKeyRotation{Content: selfSigned, Signature: selfSig})), sdk.ErrUnknownServiceKey},
		{"the pinned key's id with another key", swap(realID, &cardv1.ServiceKey{KeyId: realID, Algorithm: "Ed25519", PublicKey: rogue.Public().(ed25519.PublicKey)}), sdk.ErrUntrustedCard},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tp.set(tc.fn)
			defer tp.set(nil)
			wantRefused(t, alice, bob.identity, tc.want)
		})
	}

	// A new client that ships the real key refuses the swap on its very first call.
	var fresh tamperer
	fresh.set(swap(rogueID, rogueKey(nil)))
	shipped, err := sdk.New(ctx, sdk.Config{
		Addr: n.GRPC, Token: app.TokenFunc(app.User(t, "carol")), KeystorePath: t.TempDir() + "/keystore", NoPassphrase: true,
		ServiceKeys: []sdk.ServiceKeyPin{{KeyID: realID, PublicKey: realKey.Public().(ed25519.PublicKey)}},
		DialOptions: []grpc.DialOption{fresh.option()},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer shipped.Close()
	if _, err := shipped.FindCards(ctx, bob.identity); !errors.Is(err, sdk.ErrUnknownServiceKey) {
		t.Errorf("a client configured with the real service key, facing a swapped one: %v; want ErrUnknownServiceKey", err)
	}
	// The same client follows a real, signed rotation.
	fresh.set(nil)
	rotateServiceKey(t, n)
	dave, _ := registeredDevice(t, n, app, "dave", e2ee.SuiteX25519)
	if _, err := shipped.FindCards(ctx, dave.identity, bob.identity); err != nil {
		t.Errorf("a configured client, after a signed service key rotation: %v", err)
	}
}

// TestGroupRotationRefusesAChangedMember: a member's card that does not chain to the
// pinned one (here a real reset, which a malicious operator could equally fake) stops
// the next epoch commit with the key change, so the new epoch key is wrapped to no
// key this client has not accepted; after AcceptKeyChange the group goes on.
func TestGroupRotationRefusesAChangedMember(t *testing.T) {
	t.Parallel()
	w := newGroupWorld(t, "alice", "bob")
	ctx := context.Background()
	alice, bob := w.users["alice"], w.users["bob"]
	g := w.createGroup(t, alice, bob)
	mustSend(t, g, "epoch one")
	old, err := alice.TrustedCards(ctx, bob.identity)
	if err != nil {
		t.Fatal(err)
	}
	newBob := newQuickDevice(t, w.n, w.app, "bob", e2ee.SuiteX25519)
	reset, err := newBob.ResetKeys(ctx, w.app.ResetGrant(t, bob.identity))
	if err != nil {
		t.Fatal(err)
	}
	// The card feed marks the group for rotation within seconds; Rotate commits at
	// once, the same way.
	err = g.Rotate(ctx)
	wantKeyChange(t, err, bob.identity, sdk.ReasonReset, old[bob.identity].ID, reset.ID)
	wantEpoch(t, alice, w.group, 1, "the latest message, after the refused rotation,")
	if _, err := alice.AcceptKeyChange(ctx, bob.identity); err != nil {
		t.Fatal(err)
	}
	if err := g.Rotate(ctx); err != nil {
		t.Fatalf("rotation after accepting bob's new key: %v", err)
	}
	mustSend(t, g, "welcome back, bob")
	texts, errs := readGroup(t, newBob, w.group)
	if len(texts) == 0 || texts[len(texts)-1] != "welcome back, bob" {
		t.Errorf("bob's new device reads %q (%v); want alice's message after she accepted his key", texts, errs)
	}
}
