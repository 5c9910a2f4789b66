package sdk

import (
	"context"
	"crypto/ed25519"
	"encoding/hex"
	"fmt"
	"maps"
	"time"

	"github.com/umbra-e2ee/umbra/pkg/e2ee"
	cardv1 "github.com/umbra-e2ee/umbra/proto/umbra/card/v1"
)

// Card is a card from the directory that passed verification: its content parsed, its
// self-signature and the card service's counter-signature verified.
type Card struct {
	*e2ee.Card
	Status       cardv1.CardStatus
	PublishedAt  time.Time
	SupersededBy []byte
	// SupersededAt and RevokedAt are zero when the card never was.
	SupersededAt time.Time
	RevokedAt    time.Time
	// Endorsed reports whether a rotation card carries its predecessor's endorsement
	// (the server checked it). A rotation without one means the user's key changed
	// without the old key vouching for it.
	Endorsed bool
	// KeyReset reports that the card was published under a reset grant from the app
	// backend (ResetKeys): no earlier card of the identity endorses it, so it is a key
	// change of its identity. It is the card service's word, not a signature; that the
	// card is unendorsed is what the client can check itself (Endorsed,
	// PreviousCardID).
	KeyReset bool
}

type cardRecord = Card

// Fingerprint is a short, stable rendering of a card id for people to compare.
func (c *Card) Fingerprint() string {
	h := hex.EncodeToString(c.ID[:12])
	out := ""
	for i := 0; i < len(h); i += 4 {
		if i > 0 {
			out += " "
		}
		out += h[i : i+4]
	}
	return out
}

// serviceKey is one of the card service's counter-signing keys.
type serviceKey struct {
	public ed25519.PublicKey
	// supersededAt is when a rotation retired the key; zero for the current key.
	supersededAt time.Time
}

// serviceKeyFor returns the card service's key with id kid. The service lists every key
// it has had, so a card signed before a rotation verifies on a client that never saw
// the old key; a key id the service does not list is refused.
func (c *Client) serviceKeyFor(ctx context.Context, kid string) (serviceKey, error) {
	c.mu.Lock()
	k, ok := c.serviceKey[kid]
	c.mu.Unlock()
	if ok {
		return k, nil
	}
	resp, err := c.cards.GetServiceKey(ctx, &cardv1.GetServiceKeyRequest{})
	if err != nil {
		return serviceKey{}, err
	}
	keys := resp.GetKeys()
	if len(keys) == 0 { // a service from before key rotation lists only its key
		keys = []*cardv1.ServiceKey{resp.GetKey()}
	}
	fetched := map[string]serviceKey{}
	for _, key := range keys {
		if key.GetAlgorithm() != "Ed25519" {
			return serviceKey{}, fmt.Errorf("%w: the card service's key %q is of algorithm %q, not Ed25519", ErrUntrustedCard, key.GetKeyId(), key.GetAlgorithm())
		}
		if err := e2ee.CheckSigningPublicKey(key.GetPublicKey()); err != nil {
			return serviceKey{}, fmt.Errorf("%w: the card service's key %q: %w", ErrUntrustedCard, key.GetKeyId(), err)
		}
		sk := serviceKey{public: ed25519.PublicKey(key.GetPublicKey())}
		if key.GetSupersededAt() != nil {
			sk.supersededAt = key.GetSupersededAt().AsTime()
		}
		fetched[key.GetKeyId()] = sk
	}
	c.mu.Lock()
	maps.Copy(c.serviceKey, fetched)
	k, ok = c.serviceKey[kid]
	c.mu.Unlock()
	if !ok {
		return serviceKey{}, fmt.Errorf("%w: signed by unknown service key %q", ErrUntrustedCard, kid)
	}
	return k, nil
}

// verify checks a card from the directory and caches it by id.
func (c *Client) verify(ctx context.Context, pc *cardv1.Card) (*Card, error) {
	parsed, err := e2ee.ParseCard(pc.GetContent(), pc.GetSelfSignature())
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrUntrustedCard, err)
	}
	if !sameID(parsed.ID, pc.GetCardId()) {
		return nil, fmt.Errorf("%w: card id does not match its content", ErrUntrustedCard)
	}
	if pc.GetIdentity() != parsed.Identity {
		return nil, fmt.Errorf("%w: the directory files a card of %s under %s", ErrUntrustedCard, parsed.Identity, pc.GetIdentity())
	}
	key, err := c.serviceKeyFor(ctx, pc.GetServiceKeyId())
	if err != nil {
		return nil, err
	}
	if err := e2ee.VerifyServiceSignature(key.public, parsed.ID, pc.GetServiceSignature()); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrUntrustedCard, err)
	}
	if published := pc.GetPublishedAt().AsTime(); !key.supersededAt.IsZero() && published.After(key.supersededAt) {
		return nil, fmt.Errorf("%w: the card is dated %s, after its service key %s was retired at %s", ErrUntrustedCard,
			published.Format(time.RFC3339), pc.GetServiceKeyId(), key.supersededAt.Format(time.RFC3339))
	}
	card := &Card{
		Card:         parsed,
		Status:       pc.GetStatus(),
		PublishedAt:  pc.GetPublishedAt().AsTime(),
		SupersededBy: pc.GetSupersededBy(),
		Endorsed:     pc.GetEndorsement() != nil,
		KeyReset:     pc.GetKeyReset(),
	}
	if pc.GetSupersededAt() != nil {
		card.SupersededAt = pc.GetSupersededAt().AsTime()
	}
	if pc.GetRevokedAt() != nil {
		card.RevokedAt = pc.GetRevokedAt().AsTime()
	}
	c.mu.Lock()
	c.cardCache[string(parsed.ID)] = card
	c.mu.Unlock()
	return card, nil
}

// FindCards returns the active card of each identity that has one (E3Kit's findUsers).
// Identities without an active card are absent from the map.
func (c *Client) FindCards(ctx context.Context, identities ...string) (map[string]*Card, error) {
	out := map[string]*Card{}
	for len(identities) > 0 {
		batch := identities[:min(len(identities), 1000)]
		identities = identities[len(batch):]
		resp, err := c.cards.SearchCards(ctx, &cardv1.SearchCardsRequest{Identities: batch})
		if err != nil {
			return nil, err
		}
		for _, pc := range resp.GetCards() {
			card, err := c.verify(ctx, pc)
			if err != nil {
				return nil, err
			}
			out[card.Identity] = card
		}
	}
	return out, nil
}

// CardByID returns any card, whatever its status: the sender's card of an old message.
// Cards are immutable but for their status, so a cached card is refetched only when
// its status could matter (it was active when cached).
func (c *Client) CardByID(ctx context.Context, id []byte) (*Card, error) {
	c.mu.Lock()
	cached, ok := c.cardCache[string(id)]
	c.mu.Unlock()
	if ok && cached.Status != cardv1.CardStatus_CARD_STATUS_ACTIVE {
		return cached, nil
	}
	resp, err := c.cards.GetCard(ctx, &cardv1.GetCardRequest{CardId: id})
	if err != nil {
		return nil, err
	}
	return c.verify(ctx, resp.GetCard())
}

// CardHistory returns every card identity ever published, newest first.
func (c *Client) CardHistory(ctx context.Context, identity string) ([]*Card, error) {
	var out []*Card
	token := ""
	for {
		resp, err := c.cards.ListCardHistory(ctx, &cardv1.ListCardHistoryRequest{Identity: identity, PageToken: token})
		if err != nil {
			return nil, err
		}
		for _, pc := range resp.GetCards() {
			card, err := c.verify(ctx, pc)
			if err != nil {
				return nil, err
			}
			out = append(out, card)
		}
		if token = resp.GetNextPageToken(); token == "" {
			return out, nil
		}
	}
}
