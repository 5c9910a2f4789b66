package messaging

import (
	"context"
	"crypto/rand"
	"maps"
	"net"
	"sync"
	"sync/atomic"
	"testing"

	"google.golang.org/grpc/codes"

	"github.com/umbra-e2ee/umbra/pkg/auth"
	"github.com/umbra-e2ee/umbra/pkg/grpcclient"
	cardv1 "github.com/umbra-e2ee/umbra/proto/umbra/card/v1"
	messagingv1 "github.com/umbra-e2ee/umbra/proto/umbra/messaging/v1"
)

// countingCards is the real card client, counted, whose calls can be switched to a
// card service that is not there (a closed port, down) to see what the messaging
// service does while the card service is down.
type countingCards struct {
	mu    sync.Mutex
	real  Cards
	down  Cards
	isUp  bool
	calls atomic.Int64
}

func (c *countingCards) LookupCardOwner(ctx context.Context, req *cardv1.LookupCardOwnerRequest) (*cardv1.LookupCardOwnerResponse, error) {
	c.calls.Add(1)
	c.mu.Lock()
	to := c.real
	if !c.isUp {
		to = c.down
	}
	c.mu.Unlock()
	return to.LookupCardOwner(ctx, req)
}

func (c *countingCards) setUp(up bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.isUp = up
}

// newCountingCards dials the env's card service (at addr, once the env exists) and a
// closed port.
func newCountingCards(t *testing.T) (*countingCards, func(addr string)) {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := lis.Addr().String()
	lis.Close()
	dial := func(addr string) Cards {
		conn, err := grpcclient.Dial(grpcclient.Config{Addr: addr, ServiceToken: testServiceToken})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { conn.Close() })
		return CardClient{Client: cardv1.NewCardServiceClient(conn), Timeout: 500e6}
	}
	c := &countingCards{down: dial(closed), isUp: true}
	return c, func(addr string) {
		c.mu.Lock()
		defer c.mu.Unlock()
		c.real = dial(addr)
	}
}

// TestSenderCardIsTheSenders: an ENCRYPTED message is stored only when its header's
// sender_card_id is a card of its sender, in its app: another identity's card, a card
// of another app, an unknown id and a revoked card are refused with nothing written;
// the sender's superseded card is accepted (messages written before a rotation); a
// known card costs no call to the card service until its status is due for a recheck.
func TestSenderCardIsTheSenders(t *testing.T) {
	t.Parallel()
	cards, connect := newCountingCards(t)
	e := newEnv(t, envOptions{cards: cards})
	connect(e.conn.Target())
	a, b := e.newApp(t), e.newApp(t)
	us := e.newUsers(t, a, "alice", "bob")
	alice, bob := us[0], us[1]
	mallory := e.newUsers(t, b, "mallory")[0]
	unknown := make([]byte, SenderCardIDLen)
	rand.Read(unknown)
	withCard := func(id []byte, cmid string) *messagingv1.SendRequest {
		r := alice.sendReq(bob.identity, cmid, "signed by "+cmid)
		r.Header.SenderCardId = id
		return r
	}
	e.send(t, alice, bob.identity, "first", "with her own card")

	for _, tc := range []struct {
		name string
		card []byte
		code codes.Code
		msg  string
	}{
		{"another identity's card", bob.card, codes.PermissionDenied, "is a card of another identity"},
		{"another app's card", mallory.card, codes.FailedPrecondition, "is no card of this app"},
		{"an unknown card", unknown, codes.FailedPrecondition, "is no card of this app"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := e.snapshot(t)
			_, err := e.client.Send(alice.ctx(), withCard(tc.card, "x"))
			wantCode(t, err, tc.code, tc.msg)
			// The same over a SendStream.
			r := roundTrip(t, e.openSendStream(t, alice), withCard(tc.card, "y"))
			wantSendError(t, r, tc.code, tc.msg)
			if !maps.Equal(before, e.snapshot(t)) {
				t.Error("the refused message changed the store")
			}
		})
	}

	// Known cards are not looked up again within the recheck interval.
	calls := cards.calls.Load()
	for i := range 5 {
		e.send(t, alice, bob.identity, "again-"+string(rune('a'+i)), "x")
	}
	if n := cards.calls.Load() - calls; n != 0 {
		t.Errorf("5 messages with a known card made %d calls to the card service; want none", n)
	}

	// A rotation: the superseded card still sends (written before, arriving after),
	// and so does the new one.
	old := alice.card
	alice.card = e.publishCard(t, alice, old)
	e.send(t, alice, bob.identity, "new-card", "x")
	if _, err := e.client.Send(alice.ctx(), withCard(old, "old-card")); err != nil {
		t.Errorf("a message signed with the superseded card: %v", err)
	}

	// A revoked card is refused once its status is rechecked, at most CardRecheck
	// after the revocation.
	if _, err := e.cards.RevokeCard(alice.ctx(), &cardv1.RevokeCardRequest{CardId: alice.card}); err != nil {
		t.Fatal(err)
	}
	e.clock.Add(DefaultCardRecheck)
	before := e.snapshot(t)
	_, err := e.client.Send(alice.ctx(), withCard(alice.card, "revoked"))
	wantCode(t, err, codes.FailedPrecondition, "was revoked")
	if !maps.Equal(before, e.snapshot(t)) {
		t.Error("the refused message changed the store")
	}

	// The card service down: a known card still sends (its owner cannot change), an
	// unknown one is UNAVAILABLE; back up, the new card is checked.
	e.clock.Add(DefaultCardRecheck)
	cards.setUp(false)
	if _, err := e.client.Send(alice.ctx(), withCard(old, "while-down")); err != nil {
		t.Errorf("a known card while the card service is down: %v", err)
	}
	fresh := e.publishCard(t, bob, bob.card)
	_, err = e.client.Send(bob.ctx(), &messagingv1.SendRequest{ConversationId: alice.identity, ClientMessageId: "b1", Envelope: []byte("x"),
		Header: &messagingv1.MessageHeader{Kind: messagingv1.MessageKind_MESSAGE_KIND_ENCRYPTED, SenderCardId: fresh}})
	wantCode(t, err, codes.Unavailable, "card service")
	cards.setUp(true)
	bob.card = fresh
	e.send(t, bob, alice.identity, "b1", "x")
}

// TestSenderCardWithoutCardService: a server without a card service refuses every
// ENCRYPTED message as UNAVAILABLE, since no sender card can be checked.
func TestSenderCardWithoutCardService(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{cards: noCards{}})
	us := e.newUsers(t, e.newApp(t), "alice", "bob")
	_, err := e.client.Send(us[0].ctx(), us[0].sendReq(us[1].identity, "1", "x"))
	wantCode(t, err, codes.Unavailable, "need the card service")
}

// TestCardCacheIsBounded: the cache keeps at most its size, the cards in use stay.
func TestCardCacheIsBounded(t *testing.T) {
	t.Parallel()
	c := newCardCache(4)
	c.put("hot", cardOwner{identity: "h"})
	for i := range 100 {
		c.put(string(rune('a'+i%26))+string(rune(i)), cardOwner{})
		if _, ok := c.get("hot"); !ok {
			t.Fatalf("the card in use was dropped after %d others", i+1)
		}
		if n := len(c.cur) + len(c.prev); n > 4 {
			t.Fatalf("%d cards cached; at most 4", n)
		}
	}
}

// BenchmarkSenderCardCheck measures what the sender card check adds to a send with a
// known card: a cache lookup, no call to the card service (b.N checks from 8
// goroutines; calls reports how many reached the card service).
func BenchmarkSenderCardCheck(b *testing.B) {
	e := newEnv(b, envOptions{quiet: true})
	u := e.newUsers(b, e.newApp(b), "alice")[0]
	p := &auth.Principal{Policy: auth.AccessToken, AppID: u.app.id, Identity: u.identity}
	if err := e.srv.checkSenderCard(context.Background(), p, u.card); err != nil {
		b.Fatal(err)
	}
	counted := &countingCards{real: e.srv.cards.Cards, isUp: true}
	e.srv.cards.Cards = counted
	b.SetParallelism(4)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if err := e.srv.checkSenderCard(context.Background(), p, u.card); err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.ReportMetric(float64(counted.calls.Load()), "calls")
}
