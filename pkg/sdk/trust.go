package sdk

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/umbra-e2ee/umbra/pkg/e2ee"
)

// Trust in contacts' cards (docs/wire-format.md, 5.4 and 5.5): the client pins the
// first card it sees of each contact and accepts a later one only if it chains to the
// pinned card through endorsements it verifies itself; anything else is a key change.

// KeyChangePolicy says what the client does when a contact's key changed.
type KeyChangePolicy int

const (
	// KeyChangeRefuse (the default) refuses to use the new card: Encrypt, group
	// commits and Decrypt return the *KeyChangedError until the user accepts the new
	// key (AcceptKeyChange), after comparing safety numbers.
	KeyChangeRefuse KeyChangePolicy = iota
	// KeyChangeWarn pins the new card and goes on, reporting the change to
	// Config.OnKeyChange. A contact the user marked verified is refused all the same.
	KeyChangeWarn
)

// KeyChangeReason says why a card did not chain to the pinned one.
type KeyChangeReason string

// The reasons of a key change (docs/wire-format.md, 5.4).
const (
	ReasonReset          KeyChangeReason = "reset"
	ReasonNotEndorsed    KeyChangeReason = "not endorsed"
	ReasonBadEndorsement KeyChangeReason = "bad endorsement"
	ReasonNoChain        KeyChangeReason = "does not chain"
	ReasonRollback       KeyChangeReason = "rollback"
)

// Explain says a reason in a sentence.
func (r KeyChangeReason) Explain() string {
	switch r {
	case ReasonReset:
		return "the new card is a reset: no earlier key of theirs vouches for it (a reset under a grant from the app backend, or a card the server made up)"
	case ReasonNotEndorsed:
		return "the new card is not endorsed by the previous key"
	case ReasonBadEndorsement:
		return "the new card's endorsement does not verify with the previous key"
	case ReasonRollback:
		return "the directory serves an older card of theirs as the current one"
	}
	return "the new card does not chain to the pinned one by endorsements"
}

// KeyChangedError is a key change of a contact: the card the directory serves does
// not chain to the one this client pinned. errors.Is(err, ErrKeyChanged) holds, and
// so does errors.Is with the underlying failure, if any (e2ee.ErrBadSignature for an
// endorsement that does not verify).
type KeyChangedError struct {
	Identity string
	// OldCardID is the pinned card's id, NewCardID the card the directory serves (or
	// that signed a message).
	OldCardID, NewCardID           []byte
	OldFingerprint, NewFingerprint string
	Reason                         KeyChangeReason
	// Verified: the user had verified the contact's safety number, so the change is
	// refused whatever the policy.
	Verified bool
	// Err is what failed in the chain, when something did (a bad endorsement).
	Err error
}

func (e *KeyChangedError) Error() string {
	msg := fmt.Sprintf("%s's key changed: pinned %s, now %s: %s", e.Identity, e.OldFingerprint, e.NewFingerprint, e.Reason.Explain())
	if e.Err != nil {
		msg += " (" + e.Err.Error() + ")"
	}
	if e.Verified {
		msg += "; the contact was verified"
	}
	return msg
}

// Unwrap returns ErrKeyChanged and the underlying failure.
func (e *KeyChangedError) Unwrap() []error {
	if e.Err != nil {
		return []error{ErrKeyChanged, e.Err}
	}
	return []error{ErrKeyChanged}
}

// ServiceKeyPin is a card service key an app ships with (Config.ServiceKeys): the
// key id and Ed25519 public key GetServiceKey lists.
type ServiceKeyPin struct {
	KeyID     string
	PublicKey ed25519.PublicKey
}

// TrustedCards returns the active card of each identity that has one, each checked
// against this client's pins (docs/wire-format.md, 5.4): a contact seen for the first
// time is pinned; a card that is the pinned one costs nothing beyond the lookup; a
// later card is accepted if it chains to the pinned one through endorsements this
// client verifies (which costs one ListCardHistory), and is then pinned. Any other
// card is a key change: a *KeyChangedError under KeyChangeRefuse (the first one met,
// in the order of identities), or under KeyChangeWarn the new card, pinned, and a
// call to Config.OnKeyChange. The user's own card is not pinned (callers check it
// against the keystore). Encrypt and the group epoch commits pick their recipients'
// cards with it.
func (c *Client) TrustedCards(ctx context.Context, identities ...string) (map[string]*Card, error) {
	found, err := c.FindCards(ctx, identities...)
	if err != nil {
		return nil, err
	}
	me, _ := c.Identity(ctx)
	var firstSeen []*Card
	seen := make(map[string]bool, len(identities))
	for _, id := range identities {
		card, ok := found[id]
		if !ok || id == me || seen[id] {
			continue
		}
		seen[id] = true
		if c.contactPin(id) == nil {
			firstSeen = append(firstSeen, card) // pinned together below
			continue
		}
		trusted, err := c.trustActive(ctx, card, c.cfg.KeyChangePolicy)
		if err != nil {
			return nil, err
		}
		found[id] = trusted
	}
	raced, err := c.pinFirstSeen(firstSeen)
	if err != nil {
		return nil, err
	}
	for _, card := range raced {
		trusted, err := c.trustActive(ctx, card, c.cfg.KeyChangePolicy)
		if err != nil {
			return nil, err
		}
		found[card.Identity] = trusted
	}
	return found, nil
}

// pinFirstSeen pins cards, each the active card of a contact this client had no pin
// for, in one write of the pin file: a group of a thousand new contacts costs one write,
// not a thousand. It returns the cards whose contact another process pinned meanwhile,
// which the caller checks one by one (trustActive).
func (c *Client) pinFirstSeen(cards []*Card) (raced []*Card, err error) {
	if len(cards) == 0 {
		return nil, nil
	}
	now := c.cfg.Now()
	err = c.updatePins(func(f *pinFile) error {
		raced = raced[:0]
		for _, card := range cards {
			if f.Contacts[card.Identity] != nil {
				raced = append(raced, card)
				continue
			}
			f.Contacts[card.Identity] = &contactPin{Chain: []pinnedCard{{CardID: card.ID, SigningKey: card.SigningKey, How: pinFirstUse, At: now}}}
		}
		return nil
	})
	return raced, err
}

// trustActive checks card, the directory's active card of a contact, against the pin;
// a key change is handled under policy.
func (c *Client) trustActive(ctx context.Context, card *Card, policy KeyChangePolicy) (*Card, error) {
	pin := c.contactPin(card.Identity)
	if pin != nil && bytes.Equal(pin.head().CardID, card.ID) {
		if pin.Pending != nil {
			// The directory serves the pinned card again: a pending change lasts only
			// while the new card is what the directory serves.
			return card, c.updatePins(func(f *pinFile) error {
				if p := f.Contacts[card.Identity]; p != nil && bytes.Equal(p.head().CardID, card.ID) {
					p.Pending = nil
				}
				return nil
			})
		}
		return card, nil
	}
	// Another process may have pinned or accepted since this one read the file.
	if err := c.loadPins(); err != nil {
		return nil, err
	}
	pin = c.contactPin(card.Identity)
	now := c.cfg.Now()
	if pin == nil {
		err := c.updatePins(func(f *pinFile) error {
			if f.Contacts[card.Identity] == nil {
				f.Contacts[card.Identity] = &contactPin{Chain: []pinnedCard{{CardID: card.ID, SigningKey: card.SigningKey, How: pinFirstUse, At: now}}}
			}
			return nil
		})
		return card, err
	}
	if bytes.Equal(pin.head().CardID, card.ID) {
		return card, nil
	}
	var links []*Card
	reason, why := ReasonRollback, error(nil)
	if !pin.holds(card.ID) {
		var err error
		if links, reason, why, err = c.chainForward(ctx, pin.head(), card); err != nil {
			return nil, err
		}
	}
	if reason != "" {
		// Under KeyChangeWarn (a contact not verified) the new card is now pinned.
		if err := c.keyChanged(pin, card, reason, why, policy); err != nil {
			return nil, err
		}
		return card, nil
	}
	if err := c.pinLinks(card.Identity, pin.head().CardID, links); err != nil {
		return nil, err
	}
	out := *card
	out.Endorsed = true
	return &out, nil
}

// pinLinks appends links, cards that chain from the pinned head headID, to the pin of
// identity, if the head is still headID.
func (c *Client) pinLinks(identity string, headID []byte, links []*Card) error {
	now := c.cfg.Now()
	return c.updatePins(func(f *pinFile) error {
		p := f.Contacts[identity]
		if p == nil || !bytes.Equal(p.head().CardID, headID) {
			return fmt.Errorf("sdk: the pin of %s changed while its new card was checked; try again", identity)
		}
		for _, l := range links {
			p.push(pinnedCard{CardID: l.ID, SigningKey: l.SigningKey, How: pinEndorsed, At: now})
		}
		p.Pending = nil
		return nil
	})
}

// chainForward walks from card back along previous_card_id, through the identity's
// history, to head, checking every link (docs/wire-format.md, 5.4). It returns the
// cards from the one after head to card, oldest first; or the reason the walk failed
// and what failed; err is for a failure to fetch the history.
func (c *Client) chainForward(ctx context.Context, head pinnedCard, card *Card) (links []*Card, reason KeyChangeReason, why error, err error) {
	if len(card.PreviousCardID) == 0 {
		return nil, ReasonReset, nil, nil
	}
	history, err := c.CardHistory(ctx, card.Identity)
	if err != nil {
		return nil, "", nil, err
	}
	byID := make(map[string]*Card, len(history))
	for _, h := range history {
		byID[string(h.ID)] = h
	}
	// The head as pinned: its key is the one this client trusts, whatever the
	// history says.
	headCard := &e2ee.Card{ID: head.CardID, Identity: card.Identity, SigningKey: head.SigningKey}
	seen := map[string]bool{}
	cur := card
	for range maxChainLinks {
		if len(cur.PreviousCardID) == 0 {
			return nil, ReasonReset, nil, nil
		}
		if seen[string(cur.ID)] {
			return nil, ReasonNoChain, errors.New("the cards' previous_card_id form a loop"), nil
		}
		seen[string(cur.ID)] = true
		if cur.Endorsement == nil {
			return nil, ReasonNotEndorsed, nil, nil
		}
		prevRecord := byID[string(cur.PreviousCardID)]
		var prev *e2ee.Card
		switch {
		case bytes.Equal(cur.PreviousCardID, head.CardID):
			prev = headCard
		case prevRecord != nil:
			prev = prevRecord.Card
		default:
			return nil, ReasonNoChain, fmt.Errorf("card %s names a previous card %s that its identity's history does not hold", cur.Fingerprint(), fingerprint(cur.PreviousCardID)), nil
		}
		if err := e2ee.VerifyEndorsement(prev, cur.Card, cur.Endorsement.Content, cur.Endorsement.Signature); err != nil {
			return nil, ReasonBadEndorsement, err, nil
		}
		if prevRecord != nil && !prevRecord.RevokedAt.IsZero() && cur.PublishedAt.After(prevRecord.RevokedAt) {
			return nil, ReasonNoChain, fmt.Errorf("card %s was revoked at %s, before its successor %s was published", prevRecord.Fingerprint(), prevRecord.RevokedAt.Format(time.RFC3339), cur.Fingerprint()), nil
		}
		links = append(links, cur)
		if prev == headCard {
			slices.Reverse(links)
			return links, "", nil, nil
		}
		cur = prevRecord
	}
	return nil, ReasonNoChain, fmt.Errorf("no chain to the pinned card within %d links", maxChainLinks), nil
}

// maxChainLinks bounds the walk of chainForward.
const maxChainLinks = 1000

// keyChanged reports a key change of pin's contact to card: it records it as pending
// and calls Config.OnKeyChange; under KeyChangeWarn, for a contact not verified, it
// pins card instead and returns nil.
func (c *Client) keyChanged(pin *contactPin, card *Card, reason KeyChangeReason, why error, policy KeyChangePolicy) error {
	old := pin.head()
	kc := &KeyChangedError{
		Identity: card.Identity, OldCardID: old.CardID, NewCardID: card.ID,
		OldFingerprint: fingerprint(old.CardID), NewFingerprint: card.Fingerprint(),
		Reason: reason, Verified: pin.Verified, Err: why,
	}
	if c.cfg.OnKeyChange != nil {
		c.cfg.OnKeyChange(kc)
	}
	now := c.cfg.Now()
	warn := policy == KeyChangeWarn && !pin.Verified
	err := c.updatePins(func(f *pinFile) error {
		p := f.Contacts[card.Identity]
		if p == nil {
			return nil
		}
		if warn {
			p.push(pinnedCard{CardID: card.ID, SigningKey: card.SigningKey, How: pinWarned, At: now})
			p.Pending = nil
			return nil
		}
		detail := ""
		if why != nil {
			detail = why.Error()
		}
		p.Pending = &pendingChange{CardID: card.ID, SigningKey: card.SigningKey, Reason: reason, Detail: detail, At: now}
		return nil
	})
	if err != nil {
		return err
	}
	if warn {
		return nil
	}
	return kc
}
