package sdk

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"fmt"
	"time"

	"github.com/umbra-e2ee/umbra/pkg/e2ee"
	"github.com/umbra-e2ee/umbra/pkg/kt"
	cardv1 "github.com/umbra-e2ee/umbra/proto/umbra/card/v1"
	ktv1 "github.com/umbra-e2ee/umbra/proto/umbra/kt/v1"
)

// Trust in the card that signed a message or an epoch commit (docs/wire-format.md, 5.4).

// trustSender checks card, the card that signed a message (or an epoch commit) of its
// identity, against the pin (docs/wire-format.md, 5.4, "Senders"): a card in the pin
// is trusted; a contact without a pin gets card pinned if it is active; a card that
// chains forward from the pinned head is pinned; a card from which the first pinned
// card chains (an older message) is trusted as it is. Anything else is a key change,
// under the policy. The user's own cards that the keystore holds are trusted.
func (c *Client) trustSender(ctx context.Context, card *Card) error {
	c.mu.Lock()
	ks := c.ks
	c.mu.Unlock()
	if ks != nil && ks.Identity() == card.Identity && ks.KeyFor(card.ID) != nil {
		return nil
	}
	if pin := c.contactPin(card.Identity); pin != nil && pin.holds(card.ID) {
		return nil
	}
	if err := c.loadPins(); err != nil {
		return err
	}
	pin := c.contactPin(card.Identity)
	if pin != nil && pin.holds(card.ID) {
		return nil
	}
	if pin == nil && c.cfg.withoutKT {
		if card.Status != cardv1.CardStatus_CARD_STATUS_ACTIVE {
			return nil
		}
		_, err := c.trustActive(ctx, card, c.cfg.KeyChangePolicy)
		return err
	}
	if pin == nil {
		// A contact met first through something they signed: pin their current card
		// as the log proves it; the card that signed must be that one, or an older
		// card of theirs that the log shows (or that chains to the pinned one).
		return c.trustFirstSender(ctx, card)
	}
	links, reason, why, err := c.chainForward(ctx, pin.head(), card)
	if err != nil {
		return err
	}
	if reason == "" {
		return c.pinLinks(card.Identity, pin.head().CardID, links)
	}
	older, err := c.chainsTo(ctx, pin.Chain[0], card)
	if err != nil || older {
		return err
	}
	policy := c.cfg.KeyChangePolicy
	if policy == KeyChangeWarn && !c.cfg.withoutKT {
		// KeyChangeWarn pins the new card: only the one the log proves current.
		proved, err := c.provedCards(ctx, []string{card.Identity}, false)
		if err != nil {
			return err
		}
		if p := proved[card.Identity]; p.Card == nil || !bytes.Equal(p.Card.ID, card.ID) {
			policy = KeyChangeRefuse
		}
	}
	return c.keyChanged(pin, card, reason, why, policy)
}

// trustFirstSender checks card, which signed something of a contact this client had
// no pin for: it pins the contact's current card as the log proves it (if the contact
// has one), and accepts card if it is that card, an older card from which the pinned
// one chains by endorsements, the card whose revocation the log shows last, or any
// card whose publication for the contact the log proves (its entry log_index). A
// card the log does not show is ErrUnprovedCard: without a pin, nothing else vouches
// for it.
func (c *Client) trustFirstSender(ctx context.Context, card *Card) error {
	proved, err := c.provedCards(ctx, []string{card.Identity}, false)
	if err != nil {
		return err
	}
	p := proved[card.Identity]
	if p.Card != nil {
		if _, err := c.trustActive(ctx, p.Card, c.cfg.KeyChangePolicy); err != nil {
			return err
		}
		if pin := c.contactPin(card.Identity); pin != nil {
			if pin.holds(card.ID) {
				return nil
			}
			older, err := c.chainsTo(ctx, pin.Chain[0], card)
			if err != nil || older {
				return err
			}
		}
	} else if p.Leaf != nil && bytes.Equal(p.Leaf.GetCardId(), card.ID) {
		return nil // the contact's last card, revoked
	}
	return c.proveLogged(ctx, card)
}

// proveLogged checks that the log holds the publication of card for its identity:
// entry card.LogIndex, with its inclusion proof in the kept checkpoint (or a newer
// one, waited for up to Config.KeyTransparencyWait when the entry is newer than it).
func (c *Client) proveLogged(ctx context.Context, card *Card) error {
	cp, err := c.KeptCheckpoint()
	if err != nil {
		return err
	}
	deadline := time.Now().Add(c.ktWait())
	for cp == nil || card.LogIndex >= cp.Size {
		resp, err := c.cards.GetCheckpoint(ctx, &cardv1.GetCheckpointRequest{})
		if err != nil {
			return err
		}
		if cp, err = c.acceptCheckpoint(ctx, resp.GetCheckpoint()); err != nil {
			return err
		}
		if card.LogIndex < cp.Size {
			break
		}
		if !time.Now().Before(deadline) {
			return fmt.Errorf("%w: card %s of %s names log entry %d, and the log has %d entries %s later", ErrNotYetInLog, card.Fingerprint(), card.Identity, card.LogIndex, cp.Size, c.ktWait())
		}
		if err := c.waitForCheckpoint(ctx, cp.Size, deadline); err != nil {
			return err
		}
	}
	resp, err := c.cards.GetInclusionProof(ctx, &cardv1.GetInclusionProofRequest{Index: card.LogIndex, TreeSize: cp.Size})
	if err != nil {
		return err
	}
	if err := kt.VerifyInclusion(&cp.Checkpoint, card.LogIndex, resp.GetLeaf(), resp.GetProof()); err != nil {
		return unproved(card.Identity, "card %s: log entry %d: %w", card.Fingerprint(), card.LogIndex, err)
	}
	leaf, err := kt.ParseLeaf(resp.GetLeaf())
	if err != nil {
		return unproved(card.Identity, "card %s: log entry %d: %w", card.Fingerprint(), card.LogIndex, err)
	}
	app, err := c.appID(ctx)
	if err != nil {
		return err
	}
	key := kt.MapKey(app, card.Identity)
	if !bytes.Equal(leaf.GetMapKey(), key[:]) || !bytes.Equal(leaf.GetCardId(), card.ID) || leaf.GetKind() == ktv1.LogEventKind_LOG_EVENT_KIND_REVOCATION {
		return unproved(card.Identity, "card %s: log entry %d is not its publication for %s: the log does not show the card", card.Fingerprint(), card.LogIndex, card.Identity)
	}
	return nil
}

// chainsTo reports whether the pinned card first chains back, by endorsements this
// client verifies, to card: card is an older card of the contact than any it pinned.
func (c *Client) chainsTo(ctx context.Context, first pinnedCard, card *Card) (bool, error) {
	history, err := c.CardHistory(ctx, card.Identity)
	if err != nil {
		return false, err
	}
	byID := make(map[string]*Card, len(history))
	for _, h := range history {
		byID[string(h.ID)] = h
	}
	cur := byID[string(first.CardID)]
	if cur == nil || !ed25519.PublicKey(first.SigningKey).Equal(cur.SigningKey) {
		return false, nil
	}
	for range maxChainLinks {
		if cur.Endorsement == nil || len(cur.PreviousCardID) == 0 {
			return false, nil
		}
		prev := byID[string(cur.PreviousCardID)]
		if prev == nil || e2ee.VerifyEndorsement(prev.Card, cur.Card, cur.Endorsement.Content, cur.Endorsement.Signature) != nil {
			return false, nil
		}
		if bytes.Equal(prev.ID, card.ID) {
			return true, nil
		}
		cur = prev
	}
	return false, nil
}
