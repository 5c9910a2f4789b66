package sdk

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/umbra-e2ee/umbra/pkg/e2ee"
)

// A contact as the user sees it: its pins, safety numbers (docs/wire-format.md, 5.5).

// PinnedCard is one card of a contact's pinned chain.
type PinnedCard struct {
	CardID      []byte
	SigningKey  ed25519.PublicKey
	Fingerprint string
	// How the card came to be trusted: "first-use", "endorsed" (chained by verified
	// endorsements), "accepted" (by the user) or "warned" (under KeyChangeWarn).
	How string
	At  time.Time
}

// PendingKeyChange is a key change this client refused and the user has not accepted.
type PendingKeyChange struct {
	CardID      []byte
	SigningKey  ed25519.PublicKey
	Fingerprint string
	Reason      KeyChangeReason
	Detail      string
	At          time.Time
	// SafetyNumber is the safety number with the new key: the one to compare before
	// accepting it.
	SafetyNumber string
}

// ContactTrust is what this client trusts of a contact.
type ContactTrust struct {
	Identity string
	// MyCardID is the user's own current card, the other half of the safety number.
	MyCardID []byte
	// Chain is the pinned chain, oldest first; the last card is the one the client
	// encrypts to.
	Chain []PinnedCard
	// SafetyNumber is computed from the user's current card and the pinned head.
	SafetyNumber string
	Verified     bool
	VerifiedAt   time.Time
	// Pending is a refused key change, or nil.
	Pending *PendingKeyChange
}

// Contact checks identity's active card against the pins (TrustedCards, which pins a
// contact seen for the first time and records a key change as pending, whatever the
// policy) and returns what this client trusts of the contact, with the safety
// numbers.
func (c *Client) Contact(ctx context.Context, identity string) (*ContactTrust, error) {
	_, kp, myCard, err := c.current()
	if err != nil {
		return nil, err
	}
	me, err := c.Identity(ctx)
	if err != nil {
		return nil, err
	}
	if identity == me {
		return nil, fmt.Errorf("sdk: %s is this user: a safety number is between two people", identity)
	}
	found, err := c.FindCards(ctx, identity)
	if err != nil {
		return nil, err
	}
	if card, ok := found[identity]; ok {
		if _, err = c.trustActive(ctx, card, KeyChangeRefuse); err != nil && !errors.Is(err, ErrKeyChanged) {
			return nil, err
		}
	}
	pin := c.contactPin(identity)
	if pin == nil {
		return nil, fmt.Errorf("%w: %s has no active card, and this client has never pinned one", ErrNoCard, identity)
	}
	out := &ContactTrust{Identity: identity, MyCardID: myCard, Verified: pin.Verified, VerifiedAt: pin.VerifiedAt}
	for _, pc := range pin.Chain {
		out.Chain = append(out.Chain, PinnedCard{CardID: pc.CardID, SigningKey: pc.SigningKey, Fingerprint: fingerprint(pc.CardID), How: pc.How, At: pc.At})
	}
	mine := ed25519.PublicKey(kp.SigningPublicKey())
	if out.SafetyNumber, err = e2ee.SafetyNumber(me, mine, identity, pin.head().SigningKey); err != nil {
		return nil, err
	}
	if p := pin.Pending; p != nil {
		out.Pending = &PendingKeyChange{CardID: p.CardID, SigningKey: p.SigningKey, Fingerprint: fingerprint(p.CardID), Reason: p.Reason, Detail: p.Detail, At: p.At}
		if out.Pending.SafetyNumber, err = e2ee.SafetyNumber(me, mine, identity, p.SigningKey); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// SafetyNumber returns the safety number of the user and identity (Contact).
func (c *Client) SafetyNumber(ctx context.Context, identity string) (string, error) {
	ct, err := c.Contact(ctx, identity)
	if err != nil {
		return "", err
	}
	return ct.SafetyNumber, nil
}

// AcceptKeyChange accepts identity's new key after the user compared safety numbers
// (Contact's Pending.SafetyNumber): the directory's active card, which must still be
// the pending one, becomes the pinned card, and the contact is no longer verified
// (the new key has not been). It returns what changed, or ErrNoKeyChange.
func (c *Client) AcceptKeyChange(ctx context.Context, identity string) (*KeyChangedError, error) {
	ct, err := c.Contact(ctx, identity)
	if err != nil {
		return nil, err
	}
	if ct.Pending == nil {
		return nil, fmt.Errorf("%w: %s's active card is the one this client pinned", ErrNoKeyChange, identity)
	}
	found, err := c.FindCards(ctx, identity)
	if err != nil {
		return nil, err
	}
	card, ok := found[identity]
	if !ok {
		return nil, fmt.Errorf("%w: %s", ErrNoCard, identity)
	}
	if !bytes.Equal(card.ID, ct.Pending.CardID) {
		return nil, fmt.Errorf("%w: %s's key changed again (now %s, not %s): compare the safety number again", ErrKeyChanged, identity, card.Fingerprint(), ct.Pending.Fingerprint)
	}
	head := ct.Chain[len(ct.Chain)-1]
	changed := &KeyChangedError{
		Identity: identity, OldCardID: head.CardID, NewCardID: card.ID,
		OldFingerprint: head.Fingerprint, NewFingerprint: card.Fingerprint(),
		Reason: ct.Pending.Reason, Verified: ct.Verified,
	}
	now := c.cfg.Now()
	err = c.updatePins(func(f *pinFile) error {
		p := f.Contacts[identity]
		if p == nil || p.Pending == nil || !bytes.Equal(p.Pending.CardID, card.ID) {
			return fmt.Errorf("%w: the pending key change of %s changed meanwhile; look again", ErrKeyChanged, identity)
		}
		p.push(pinnedCard{CardID: card.ID, SigningKey: card.SigningKey, How: pinAccepted, At: now})
		p.Pending, p.Verified, p.VerifiedAt = nil, false, time.Time{}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return changed, nil
}

// VerifyContact marks identity verified, after the user compared the safety number
// with the contact's (out of band: in person, on a call). If safetyNumber is not
// empty it must be the safety number (spaces do not matter). A contact with a pending
// key change must have it accepted first. From then on any key change of the contact
// is refused whatever the policy, until the user accepts it.
func (c *Client) VerifyContact(ctx context.Context, identity, safetyNumber string) error {
	ct, err := c.Contact(ctx, identity)
	if err != nil {
		return err
	}
	if ct.Pending != nil {
		return fmt.Errorf("%w: %s has a pending key change (%s): accept it first, after comparing the new safety number", ErrKeyChanged, identity, ct.Pending.Reason)
	}
	strip := func(s string) string { return strings.Join(strings.Fields(s), "") }
	if safetyNumber != "" && strip(safetyNumber) != strip(ct.SafetyNumber) {
		return fmt.Errorf("sdk: the safety number given is not the safety number with %s (%s): do not mark the contact verified", identity, ct.SafetyNumber)
	}
	head := ct.Chain[len(ct.Chain)-1].CardID
	now := c.cfg.Now()
	return c.updatePins(func(f *pinFile) error {
		p := f.Contacts[identity]
		if p == nil || !bytes.Equal(p.head().CardID, head) || p.Pending != nil {
			return fmt.Errorf("%w: %s's pinned card changed meanwhile; look again", ErrKeyChanged, identity)
		}
		p.Verified, p.VerifiedAt = true, now
		return nil
	})
}
