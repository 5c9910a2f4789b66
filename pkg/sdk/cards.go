package sdk

import (
	"context"
	"crypto/ed25519"
	"encoding/hex"
	"fmt"
	"time"

	"github.com/umbra-e2ee/umbra/pkg/e2ee"
	cardv1 "github.com/umbra-e2ee/umbra/proto/umbra/card/v1"
)

// Card is a card from the directory that passed verification: its content parsed, its
// self-signature and the card service's counter-signature verified, the latter with a
// service key this client pinned (docs/wire-format.md, 5.6).
type Card struct {
	*e2ee.Card
	Status       cardv1.CardStatus
	PublishedAt  time.Time
	SupersededBy []byte
	// SupersededAt and RevokedAt are zero when the card never was.
	SupersededAt time.Time
	RevokedAt    time.Time
	// Endorsement is the predecessor's endorsement of this card as the server attached
	// it, or nil. The server's attaching it proves nothing: see Endorsed.
	Endorsement *Endorsement
	// Endorsed reports that this client verified, itself, that the previous card's key
	// endorsed this card (docs/wire-format.md, 5.2): set on the cards of CardHistory
	// whose predecessor it lists, on cards that TrustedCards accepted by following
	// endorsements, and by VerifyEndorsement. False when no endorsement was verified,
	// which is not yet a key change: TrustedCards decides that.
	Endorsed bool
	// KeyReset reports that the card was published under a reset grant from the app
	// backend (ResetKeys): no earlier card of the identity endorses it, so it is a key
	// change of its identity. It is the card service's word, not a signature; a client
	// decides from the endorsements it verifies (TrustedCards), and the mark says why a
	// chain broke.
	KeyReset bool
	// LogIndex is the key transparency log entry that published the card, as the
	// service says: the client proves it (the entry names this card for its
	// identity) before relying on it.
	LogIndex uint64
}

// Endorsement is a rotation endorsement: the exact RotationEndorsementContent bytes
// and the previous card's signature over them.
type Endorsement struct {
	Content   []byte
	Signature []byte
}

type cardRecord = Card

// Fingerprint is a short, stable rendering of a card id for people to compare.
func (c *Card) Fingerprint() string { return fingerprint(c.ID) }

// Fingerprint renders a card id as Card.Fingerprint does, for a card known by id only.
func Fingerprint(cardID []byte) string { return fingerprint(cardID) }

// fingerprint renders the first 12 bytes of a card id in groups of four hex digits.
func fingerprint(id []byte) string {
	h := hex.EncodeToString(id[:min(len(id), 12)])
	out := ""
	for i := 0; i < len(h); i += 4 {
		if i > 0 {
			out += " "
		}
		out += h[i:min(i+4, len(h))]
	}
	return out
}

// serviceKey is one of the card service's counter-signing keys, as pinned.
type serviceKey struct {
	public ed25519.PublicKey
	// retiredAt is when a rotation retired the key; zero for the current key.
	retiredAt time.Time
}

// serviceKeyFor returns the card service's key with id kid, which must be pinned or
// chain to a pinned key through rotations signed by the key each replaced
// (docs/wire-format.md, 5.6). A pinned key costs no call; for another id the client
// fetches the service's keys once and follows their rotation statements. Without any
// pin (and no Config.ServiceKeys) it pins every key the service lists: trust on first
// use.
func (c *Client) serviceKeyFor(ctx context.Context, kid string) (serviceKey, error) {
	if k, ok := c.pinnedServiceKey(kid); ok {
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
	if err := c.updatePins(func(f *pinFile) error { return pinServiceKeys(f, keys, c.cfg.Now()) }); err != nil {
		return serviceKey{}, err
	}
	if k, ok := c.pinnedServiceKey(kid); ok {
		return k, nil
	}
	return serviceKey{}, fmt.Errorf("%w: the card is signed by service key %q, which does not chain to a service key this client pinned (by a rotation signed by the key it replaced); a server that swapped its key, or an app that must ship the new key (Config.ServiceKeys)", ErrUnknownServiceKey, kid)
}

func (c *Client) pinnedServiceKey(kid string) (serviceKey, bool) {
	c.pinMu.Lock()
	defer c.pinMu.Unlock()
	k := c.pins.serviceKey(kid)
	if k == nil {
		return serviceKey{}, false
	}
	return serviceKey{public: k.PublicKey, retiredAt: k.RetiredAt}, true
}

// pinServiceKeys pins the keys the service lists that chain to f's pinned keys, or,
// when f pins none, all of them (trust on first use). It changes f only if every key
// it lists is well formed and every statement it checks verifies.
func pinServiceKeys(f *pinFile, keys []*cardv1.ServiceKey, now time.Time) error {
	listed := map[string]*cardv1.ServiceKey{}
	for _, key := range keys {
		if key.GetAlgorithm() != "Ed25519" {
			return fmt.Errorf("%w: the card service's key %q is of algorithm %q, not Ed25519", ErrUntrustedCard, key.GetKeyId(), key.GetAlgorithm())
		}
		if err := e2ee.CheckSigningPublicKey(key.GetPublicKey()); err != nil {
			return fmt.Errorf("%w: the card service's key %q: %w", ErrUntrustedCard, key.GetKeyId(), err)
		}
		if have := f.serviceKey(key.GetKeyId()); have != nil && !have.PublicKey.Equal(ed25519.PublicKey(key.GetPublicKey())) {
			return fmt.Errorf("%w: the card service lists key %q with another public key than the one pinned", ErrUnknownServiceKey, key.GetKeyId())
		}
		listed[key.GetKeyId()] = key
	}
	// rotation verifies key's statement with its predecessor's key, taken from
	// known; ok is false when known has no such predecessor.
	rotation := func(key *cardv1.ServiceKey, known func(id string) ed25519.PublicKey) (r *e2ee.ServiceKeyRotation, ok bool, err error) {
		st := key.GetRotation()
		if st == nil {
			return nil, false, nil
		}
		parsed, err := e2ee.ParseServiceKeyRotation(st.GetContent())
		if err != nil {
			return nil, false, fmt.Errorf("%w: the rotation to service key %q: %w", ErrUnknownServiceKey, key.GetKeyId(), err)
		}
		prev := known(parsed.PreviousKeyID)
		if prev == nil {
			return nil, false, nil
		}
		r, err = e2ee.VerifyServiceKeyRotation(parsed.PreviousKeyID, prev, st.GetContent(), st.GetSignature())
		if err != nil {
			return nil, false, fmt.Errorf("%w: the rotation to service key %q: %w", ErrUnknownServiceKey, key.GetKeyId(), err)
		}
		if r.NewKeyID != key.GetKeyId() || !r.NewPublicKey.Equal(ed25519.PublicKey(key.GetPublicKey())) {
			return nil, false, fmt.Errorf("%w: the rotation statement listed with service key %q names key %q with another public key", ErrUnknownServiceKey, key.GetKeyId(), r.NewKeyID)
		}
		return r, true, nil
	}
	// A statement's time is in whole seconds, the service's own timestamps finer: a
	// key retired in the second after the one its successor's statement names.
	statementEnd := func(r *e2ee.ServiceKeyRotation) time.Time { return r.CreatedAt.Add(time.Second) }
	retire := func(k *pinnedServiceKey, at time.Time) {
		if k != nil && k.RetiredAt.IsZero() && !at.IsZero() {
			k.RetiredAt = at
		}
	}
	if len(f.ServiceKeys) == 0 {
		fromList := func(id string) ed25519.PublicKey {
			if k := listed[id]; k != nil {
				return k.GetPublicKey()
			}
			return nil
		}
		var pinned []*pinnedServiceKey
		retiredAt := map[string]time.Time{}
		for _, key := range keys {
			r, ok, err := rotation(key, fromList)
			if err != nil {
				return err
			}
			if ok {
				retiredAt[r.PreviousKeyID] = statementEnd(r)
			}
			pinned = append(pinned, &pinnedServiceKey{KeyID: key.GetKeyId(), PublicKey: key.GetPublicKey(), Source: pinFirstUse, PinnedAt: now})
		}
		for i, k := range pinned {
			retire(k, retiredAt[k.KeyID])
			if ss := keys[i].GetSupersededAt(); ss != nil {
				retire(k, ss.AsTime())
			}
		}
		f.ServiceKeys = pinned
		return nil
	}
	fromPins := func(id string) ed25519.PublicKey {
		if k := f.serviceKey(id); k != nil {
			return k.PublicKey
		}
		return nil
	}
	for progress := true; progress; {
		progress = false
		for _, key := range keys {
			if f.serviceKey(key.GetKeyId()) != nil {
				continue
			}
			r, ok, err := rotation(key, fromPins)
			if err != nil {
				return err
			}
			if !ok {
				continue
			}
			retire(f.serviceKey(r.PreviousKeyID), statementEnd(r))
			f.ServiceKeys = append(f.ServiceKeys, &pinnedServiceKey{KeyID: key.GetKeyId(), PublicKey: key.GetPublicKey(), Source: pinEndorsed, PinnedAt: now})
			progress = true
		}
	}
	// A pinned key the service now says it retired: its word can only make the
	// client refuse more, never accept more.
	for _, k := range f.ServiceKeys {
		if key := listed[k.KeyID]; key != nil && key.GetSupersededAt() != nil {
			retire(k, key.GetSupersededAt().AsTime())
		}
	}
	return nil
}

// verify checks a card from the directory and caches it by id.
func (c *Client) verify(ctx context.Context, pc *cardv1.Card) (*Card, error) {
	card, err := c.parseCard(ctx, pc)
	if err != nil {
		return nil, err
	}
	c.cacheCard(card)
	return card, nil
}

func (c *Client) cacheCard(card *Card) {
	c.mu.Lock()
	c.cardCache[string(card.ID)] = card
	c.mu.Unlock()
}

// parseCard checks a card from the directory: its content and self-signature, that
// the directory files it under its identity, and its service signature with a pinned
// service key (or one that chains to a pinned key).
func (c *Client) parseCard(ctx context.Context, pc *cardv1.Card) (*Card, error) {
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
	if published := pc.GetPublishedAt().AsTime(); !key.retiredAt.IsZero() && published.After(key.retiredAt) {
		return nil, fmt.Errorf("%w: the card is dated %s, after its service key %s was retired at %s", ErrUntrustedCard,
			published.Format(time.RFC3339), pc.GetServiceKeyId(), key.retiredAt.Format(time.RFC3339))
	}
	card := &Card{
		Card:         parsed,
		Status:       pc.GetStatus(),
		PublishedAt:  pc.GetPublishedAt().AsTime(),
		SupersededBy: pc.GetSupersededBy(),
		KeyReset:     pc.GetKeyReset(),
		LogIndex:     pc.GetLogIndex(),
	}
	if e := pc.GetEndorsement(); e != nil {
		card.Endorsement = &Endorsement{Content: e.GetContent(), Signature: e.GetSignature()}
	}
	if pc.GetSupersededAt() != nil {
		card.SupersededAt = pc.GetSupersededAt().AsTime()
	}
	if pc.GetRevokedAt() != nil {
		card.RevokedAt = pc.GetRevokedAt().AsTime()
	}
	return card, nil
}

// VerifyEndorsement checks, with this client's own verification, that card's
// predecessor endorsed it (fetching the predecessor, CardByID), and returns a copy of
// card with Endorsed set. A card that names no predecessor, or carries no
// endorsement, or one that does not verify, is an error wrapping ErrBadEndorsement.
func (c *Client) VerifyEndorsement(ctx context.Context, card *Card) (*Card, error) {
	if len(card.PreviousCardID) == 0 {
		return nil, fmt.Errorf("%w: card %s names no previous card", ErrBadEndorsement, card.Fingerprint())
	}
	if card.Endorsement == nil {
		return nil, fmt.Errorf("%w: card %s carries no endorsement by its previous card", ErrBadEndorsement, card.Fingerprint())
	}
	prev, err := c.CardByID(ctx, card.PreviousCardID)
	if err != nil {
		return nil, err
	}
	if err := e2ee.VerifyEndorsement(prev.Card, card.Card, card.Endorsement.Content, card.Endorsement.Signature); err != nil {
		return nil, fmt.Errorf("%w: card %s: %w", ErrBadEndorsement, card.Fingerprint(), err)
	}
	out := *card
	out.Endorsed = true
	return &out, nil
}

// FindCards returns the active card of each identity that has one (E3Kit's findUsers),
// each proved by the key transparency log (LookupCards): the card its map entry names
// at a checkpoint consistent with the last one this client kept. Identities without
// an active card are absent from the map. A card the log does not prove is an error
// (ErrUnprovedCard, ErrLogInconsistent, ErrUnknownLogKey, ErrNotYetInLog), never a
// card. The user's own current card, in the second after this device published it and
// before a checkpoint holds it, is taken from this device's own keys.
func (c *Client) FindCards(ctx context.Context, identities ...string) (map[string]*Card, error) {
	if c.cfg.withoutKT {
		return c.findCardsUnproved(ctx, identities)
	}
	proved, err := c.provedCards(ctx, identities, true)
	if err != nil {
		return nil, err
	}
	out := make(map[string]*Card, len(proved))
	for id, p := range proved {
		if p.Card != nil {
			out[id] = p.Card
		}
	}
	return out, nil
}

// findCardsUnproved is FindCards without key transparency: the pinning tests' way to
// check the pins on their own (WithoutKeyTransparency), as against an operator who
// logged the cards it forged.
func (c *Client) findCardsUnproved(ctx context.Context, identities []string) (map[string]*Card, error) {
	out := map[string]*Card{}
	for len(identities) > 0 {
		batch := identities[:min(len(identities), MaxLookupBatch)]
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

// CardHistory returns every card identity ever published, newest first. A card whose
// predecessor is listed has Endorsed set if, and only if, its endorsement verifies with
// the predecessor's key; an endorsement that does not verify is not an error here
// (TrustedCards reports it as a key change), it is just not Endorsed.
func (c *Client) CardHistory(ctx context.Context, identity string) ([]*Card, error) {
	out, err := allPages(func(token string) ([]*Card, string, error) {
		resp, err := c.cards.ListCardHistory(ctx, &cardv1.ListCardHistoryRequest{Identity: identity, PageToken: token})
		if err != nil {
			return nil, "", err
		}
		var page []*Card
		for _, pc := range resp.GetCards() {
			card, err := c.parseCard(ctx, pc)
			if err != nil {
				return nil, "", err
			}
			if card.Identity != identity {
				return nil, "", fmt.Errorf("%w: the history of %s lists a card of %s", ErrUntrustedCard, identity, card.Identity)
			}
			page = append(page, card)
		}
		return page, resp.GetNextPageToken(), nil
	})
	if err != nil {
		return nil, err
	}
	byID := make(map[string]*Card, len(out))
	for _, card := range out {
		byID[string(card.ID)] = card
	}
	for _, card := range out {
		if prev := byID[string(card.PreviousCardID)]; prev != nil && card.Endorsement != nil {
			card.Endorsed = e2ee.VerifyEndorsement(prev.Card, card.Card, card.Endorsement.Content, card.Endorsement.Signature) == nil
		}
		c.cacheCard(card)
	}
	return out, nil
}
