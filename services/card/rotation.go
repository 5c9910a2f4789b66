package card

import (
	"bytes"
	"crypto/ed25519"
	"strings"

	"github.com/umbra-e2ee/umbra/pkg/e2ee"
	"github.com/umbra-e2ee/umbra/pkg/errs"
	cardstoragev1 "github.com/umbra-e2ee/umbra/proto/umbra/storage/card/v1"
)

// publishRule is the rotation rule of card.proto for next, a verified card of the
// caller's, as a PublishCheck:
//
//   - the exact card already active (same content, self-signature and endorsement) is
//     a retry: it is answered unchanged;
//   - any other card already stored is refused (ALREADY_EXISTS): a card is published
//     once, so a superseded or revoked card can never become active again;
//   - a reset card (next.reset: the server verified its grant, and that it names no
//     previous card) is published whatever the identity's cards are;
//   - a first card (no previous_card_id, no card ever published) is published;
//   - no previous_card_id while a card is active: ALREADY_EXISTS, telling the client
//     to rotate (or to reset with a grant);
//   - no previous_card_id after the identity's cards were all revoked: PERMISSION_DENIED,
//     naming the reset grant it needs;
//   - a previous_card_id that is not the active card (none, superseded, revoked,
//     another identity's, unknown): ABORTED, naming the active card or "none";
//   - a rotation of the active card must carry its endorsement (PERMISSION_DENIED,
//     naming the reset grant, without one), which must verify with its key.
func publishRule(next *cardstoragev1.CardRecord) PublishCheck {
	return func(st PublishState) (*cardstoragev1.CardRecord, error) {
		id := cardIDString(next.GetCardId())
		if same := st.Same; same != nil {
			if same.GetStatus() != cardstoragev1.CardRecordStatus_CARD_RECORD_STATUS_ACTIVE {
				return nil, errs.Existsf("card %s was published before and is now %s: a card is published once; create a new card", id, statusName(same))
			}
			if !sameSubmission(same, next) {
				return nil, errs.Existsf("card %s is already the active card, with a different self-signature or endorsement: a retry must send the card exactly as first published", id)
			}
			return same, nil
		}
		if next.GetKeyReset() {
			return nil, nil
		}
		prev, active, identity := next.GetPreviousCardId(), st.Active, next.GetIdentity()
		switch {
		case len(prev) == 0 && active == nil && !st.HasHistory:
			return nil, nil
		case len(prev) == 0 && active != nil:
			return nil, errs.Existsf("identity %s already has an active card %s: to rotate, publish a new card whose previous_card_id is %s, endorsed by it; if every key of the identity is lost, publish a reset card with a reset grant from the app backend",
				identity, cardIDString(active.GetCardId()), cardIDString(active.GetCardId()))
		case len(prev) == 0:
			return nil, resetGrantRequired(identity, "it has published cards before and has no active card: its last one was revoked")
		case active == nil || !bytes.Equal(prev, active.GetCardId()):
			return nil, errs.Conflictf("previous_card_id %s is not the active card (%s); the active card is %s%s", cardIDString(prev), describe(st.Named, identity), cardIDString(active.GetCardId()), noActiveHint(active, st.HasHistory))
		case len(next.GetEndorsementContent()) == 0:
			return nil, resetGrantRequired(identity, "the rotation from "+cardIDString(prev)+" carries no endorsement by that card's key")
		}
		err := e2ee.VerifyEndorsement(recordCard(active), recordCard(next), next.GetEndorsementContent(), next.GetEndorsementSignature())
		if err != nil {
			return nil, refused("endorsement", err)
		}
		return nil, nil
	}
}

// resetGrantRequired refuses a card of identity that no earlier card of it endorses,
// published without a reset grant; why says what makes it such a card.
func resetGrantRequired(identity, why string) error {
	return errs.Permissionf("a reset grant is required: no earlier card of %s endorses this card (%s). Publishing it is a reset, which needs reset_grant, a grant only the app backend can obtain (IdentityService.IssueResetGrant); an access token alone cannot replace an identity's keys",
		identity, why)
}

// sameSubmission reports whether next is exactly the stored card a, signatures and
// endorsement included (the content is the same: the ids are).
func sameSubmission(a, next *cardstoragev1.CardRecord) bool {
	return bytes.Equal(a.GetSelfSignature(), next.GetSelfSignature()) &&
		bytes.Equal(a.GetEndorsementContent(), next.GetEndorsementContent()) &&
		bytes.Equal(a.GetEndorsementSignature(), next.GetEndorsementSignature())
}

// describe says what the card named as previous is, for the caller of identity.
func describe(named *cardstoragev1.CardRecord, identity string) string {
	switch {
	case named == nil:
		return "there is no such card"
	case named.GetIdentity() != identity:
		return "it is another identity's card"
	}
	return "it is " + statusName(named)
}

func noActiveHint(active *cardstoragev1.CardRecord, hasHistory bool) string {
	switch {
	case active != nil:
		return ""
	case hasHistory:
		return ": the identity's cards were revoked; a new card is a reset (no previous_card_id) and needs a reset grant from the app backend"
	}
	return ": publish the new card without previous_card_id"
}

func statusName(r *cardstoragev1.CardRecord) string {
	name := strings.TrimPrefix(r.GetStatus().String(), "CARD_RECORD_STATUS_")
	return strings.ToLower(name)
}

// recordCard rebuilds what e2ee.VerifyEndorsement reads of a card from its record. The
// record holds only what was read from content that verified when it was published.
func recordCard(r *cardstoragev1.CardRecord) *e2ee.Card {
	return &e2ee.Card{
		ID:             r.GetCardId(),
		Content:        r.GetContent(),
		SelfSignature:  r.GetSelfSignature(),
		Identity:       r.GetIdentity(),
		SigningKey:     ed25519.PublicKey(r.GetSigningPublicKey()),
		Suite:          r.GetSuite(),
		PreviousCardID: r.GetPreviousCardId(),
	}
}
