package sdk

import (
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/umbra-e2ee/umbra/pkg/e2ee"
)

// Encrypt encrypts and signs data for the active cards of recipients (identities), and
// for the user's own card unless Config.ExcludeSelf is set. Every recipient must have
// an active card, and it must be one this client trusts (TrustedCards): a contact's key
// change is a *KeyChangedError under KeyChangeRefuse.
func (c *Client) Encrypt(ctx context.Context, data []byte, recipients ...string) ([]byte, error) {
	ks, kp, myID, err := c.current()
	if err != nil {
		return nil, err
	}
	me := ks.Identity()
	want := slices.Clone(recipients)
	if !c.cfg.ExcludeSelf && !slices.Contains(want, me) {
		want = append(want, me)
	}
	slices.Sort(want)
	want = slices.Compact(want)
	if len(want) == 0 {
		return nil, fmt.Errorf("sdk: no recipients")
	}
	found, err := c.TrustedCards(ctx, want...)
	if err != nil {
		return nil, err
	}
	cards := make([]*e2ee.Card, 0, len(want))
	for _, id := range want {
		card, ok := found[id]
		if !ok {
			return nil, fmt.Errorf("%w: %s", ErrNoCard, id)
		}
		if id == me && !sameID(card.ID, myID) {
			return nil, errNotActiveHere(me)
		}
		cards = append(cards, card.Card)
	}
	return e2ee.Encrypt(kp, myID, cards, data, c.cfg.Now())
}

// errNotActiveHere says that the keys of this device are not the active card of me.
func errNotActiveHere(me string) error {
	return fmt.Errorf("sdk: this device's keys are not %s's active card (another device rotated them?): restore the keys from a backup", me)
}

// Decrypt opens data, which sender (an identity) is expected to have sent. It checks
// the signature against the sender's card named in the message, which must be a card
// of sender and must have been active when the message says it was written (neither
// superseded nor revoked before), so messages sent before a rotation still verify and a
// key retired since cannot forge new ones. Messages to the user's older cards decrypt
// with the superseded keys the keystore keeps.
func (c *Client) Decrypt(ctx context.Context, data []byte, sender string) ([]byte, error) {
	ks, _, _, err := c.current()
	if err != nil {
		return nil, err
	}
	info, err := e2ee.InspectEnvelope(data)
	if err != nil {
		return nil, err
	}
	card, err := c.senderCard(ctx, info.SenderCardID, sender, info.CreatedAt)
	if err != nil {
		return nil, err
	}
	return e2ee.Decrypt(data, ks.KeyFor, card.Card)
}

// senderCard returns the card cardID that signed a message sender (an identity) is
// expected to have written at written: it must be one of sender's cards, was active
// then (checkCardLifetime), and be trusted by this client's pins (trustSender).
func (c *Client) senderCard(ctx context.Context, cardID []byte, sender string, written time.Time) (*Card, error) {
	card, err := c.CardByID(ctx, cardID)
	if err != nil {
		return nil, fmt.Errorf("sdk: sender's card: %w", err)
	}
	if card.Identity != sender {
		return nil, fmt.Errorf("%w: the message is signed by a card of %s, not %s", e2ee.ErrWrongSender, card.Identity, sender)
	}
	if err := c.checkCardLifetime(card, written); err != nil {
		return nil, err
	}
	if err := c.trustSender(ctx, card); err != nil {
		return nil, err
	}
	return card, nil
}

// checkCardLifetime reports ErrCardNotValidThen unless card was the active card of
// its identity at written, within the clock skew s: published_at - s <= written, and
// written <= superseded_at + s and written <= revoked_at + s for a card that was
// superseded or revoked (docs/wire-format.md, 6.3).
func (c *Client) checkCardLifetime(card *Card, written time.Time) error {
	skew := c.cfg.ClockSkew
	switch {
	case written.Before(card.PublishedAt.Add(-skew)):
		return fmt.Errorf("%w: written %s, before the card was published", ErrCardNotValidThen, written)
	case !card.SupersededAt.IsZero() && written.After(card.SupersededAt.Add(skew)):
		return fmt.Errorf("%w: written %s, after the card was superseded at %s", ErrCardNotValidThen, written, card.SupersededAt)
	case !card.RevokedAt.IsZero() && written.After(card.RevokedAt.Add(skew)):
		return fmt.Errorf("%w: written %s, after the card was revoked at %s", ErrCardNotValidThen, written, card.RevokedAt)
	}
	return nil
}
