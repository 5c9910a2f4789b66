package messaging

import (
	"context"
	"encoding/base64"
	"sync"
	"time"

	"go.uber.org/zap"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/umbra-e2ee/umbra/pkg/auth"
	"github.com/umbra-e2ee/umbra/pkg/errs"
	"github.com/umbra-e2ee/umbra/pkg/errs/errstatus"
	cardv1 "github.com/umbra-e2ee/umbra/proto/umbra/card/v1"
)

// Defaults of Config for the sender card check.
const (
	// DefaultCardRecheck is how long a card's status, once looked up, is trusted: a
	// card revoked since is refused at most this long after its revocation.
	DefaultCardRecheck = time.Minute
	// DefaultCardCacheSize bounds the cards whose owner the service remembers.
	DefaultCardCacheSize = 100_000
	// DefaultCardTimeout bounds each call to the card service.
	DefaultCardTimeout = 5 * time.Second
)

// CardClient is Cards over gRPC. Its connection carries the service credential, as
// LookupCardOwner is internal.
type CardClient struct {
	Client cardv1.CardServiceClient
	// Timeout bounds each call; 0 means DefaultCardTimeout.
	Timeout time.Duration
}

var _ Cards = CardClient{}

// LookupCardOwner implements Cards.
func (c CardClient) LookupCardOwner(ctx context.Context, req *cardv1.LookupCardOwnerRequest) (*cardv1.LookupCardOwnerResponse, error) {
	t := c.Timeout
	if t == 0 {
		t = DefaultCardTimeout
	}
	ctx, cancel := context.WithTimeout(ctx, t)
	defer cancel()
	resp, err := c.Client.LookupCardOwner(ctx, req)
	if err == nil {
		return resp, nil
	}
	st, ok := status.FromError(err)
	if !ok {
		return nil, errs.Unavailablef("the card service cannot be reached: encrypted messages from unknown cards are refused until it answers")
	}
	switch st.Code() {
	case codes.Unavailable, codes.DeadlineExceeded, codes.Unimplemented:
		return nil, errs.Unavailablef("the card service cannot answer (%s): encrypted messages from unknown cards are refused until it does", st.Code())
	}
	return nil, err
}

// noCards is the Cards of a server without a card service: no sender card can be
// checked, so every ENCRYPTED message is refused.
type noCards struct{}

func (noCards) LookupCardOwner(context.Context, *cardv1.LookupCardOwnerRequest) (*cardv1.LookupCardOwnerResponse, error) {
	return nil, errs.Unavailablef("encrypted messages need the card service, to check their sender card, and this server has none configured: they are refused")
}

// senderCards are the card service and the cache of its answers.
type senderCards struct {
	Cards
	cache *cardCache
}

// cardOwner is what the service knows of one card.
type cardOwner struct {
	identity string
	revoked  bool
	// checked is when the status was looked up.
	checked time.Time
}

// cardCache remembers cards' owners: a card's identity never changes (the card id is
// the hash of content that names it), only its status, which is looked up again once
// it is older than the recheck interval, and which stays REVOKED once it is. It holds
// at most max entries, in two generations: when the current one is full it becomes
// the previous one, and the previous one is dropped; a card found in the previous
// generation moves to the current one, so cards in use stay.
type cardCache struct {
	mu        sync.Mutex
	max       int
	cur, prev map[string]cardOwner
}

func newCardCache(max int) *cardCache {
	return &cardCache{max: max, cur: map[string]cardOwner{}, prev: map[string]cardOwner{}}
}

func (c *cardCache) get(key string) (cardOwner, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if o, ok := c.cur[key]; ok {
		return o, true
	}
	o, ok := c.prev[key]
	if ok {
		c.putLocked(key, o)
	}
	return o, ok
}

func (c *cardCache) put(key string, o cardOwner) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.putLocked(key, o)
}

func (c *cardCache) putLocked(key string, o cardOwner) {
	if _, ok := c.cur[key]; !ok && len(c.cur) >= c.max/2 {
		c.prev, c.cur = c.cur, make(map[string]cardOwner, len(c.cur))
	}
	c.cur[key] = o
}

// checkSenderCard refuses an ENCRYPTED message whose sender card id is not a card of
// its sender p (same app, same identity), or is a revoked card. A superseded card of
// the sender is accepted: messages written before a rotation reach the server after it
// (an offline outbox, a retry), and recipients check each message against the card
// that was active when it was written (docs/threat-model.md, "Sender cards").
//
// A known card costs no call: its owner is cached, and its status is looked up again
// only every Config.CardRecheck. When that lookup fails, the cached answer stands
// (the owner cannot have changed; a revocation is then honoured late); an unknown card
// is refused as UNAVAILABLE while the card service cannot answer.
func (s *Server) checkSenderCard(ctx context.Context, p *auth.Principal, cardID []byte) error {
	key := p.AppID + "\x00" + string(cardID)
	now := s.now()
	o, known := s.cards.cache.get(key)
	if !known || !o.revoked && now.Sub(o.checked) >= s.cfg.CardRecheck {
		resp, err := s.cards.LookupCardOwner(ctx, &cardv1.LookupCardOwnerRequest{AppId: p.AppID, CardId: cardID})
		code, _ := errstatus.Code(err)
		switch {
		case err == nil:
			o = cardOwner{identity: resp.GetIdentity(), revoked: resp.GetStatus() == cardv1.CardStatus_CARD_STATUS_REVOKED, checked: now}
			s.cards.cache.put(key, o)
		case code == codes.NotFound:
			return errs.Preconditionf("header.sender_card_id %s is no card of this app: publish your card before sending with it", cardIDText(cardID))
		case known && code == codes.Unavailable:
			s.log.Warn("the card service cannot answer: a sender card's cached owner is used without a fresh status", zap.Error(err))
		default:
			return err
		}
	}
	switch {
	case o.identity != p.Identity:
		return errs.Permissionf("header.sender_card_id %s is a card of another identity: a message names its sender's own card", cardIDText(cardID))
	case o.revoked:
		return errs.Preconditionf("header.sender_card_id %s was revoked: messages signed with it are refused; publish a new card and send with it", cardIDText(cardID))
	}
	return nil
}

// cardIDText writes a card id as REST paths take it: URL-safe base64, unpadded.
func cardIDText(id []byte) string { return base64.RawURLEncoding.EncodeToString(id) }
