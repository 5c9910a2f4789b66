package card

import (
	"bytes"
	"crypto/ed25519"
	"strings"

	"github.com/umbra-e2ee/umbra/pkg/e2ee"
	"github.com/umbra-e2ee/umbra/pkg/errs"
	storagev1 "github.com/umbra-e2ee/umbra/proto/umbra/storage/v1"
)

// publishRule is the rotation rule of card.proto for next, a verified card of the
// caller's, as a PublishCheck:
//
//   - the exact card already active (same content, self-signature and endorsement) is
//     a retry: it is answered unchanged;
//   - any other card already stored is refused (ALREADY_EXISTS): a card is published
//     once, so a superseded or revoked card can never become active again;
//   - no previous_card_id while a card is active: ALREADY_EXISTS, telling the client
//     to rotate;
//   - a previous_card_id that is not the active card (none, superseded, revoked,
//     another identity's, unknown): ABORTED, naming the active card or "none";
//   - an endorsement must verify with the previous (active) card's key.
func publishRule(next *storagev1.CardRecord) PublishCheck {
	return func(active, same, named *storagev1.CardRecord) (*storagev1.CardRecord, error) {
		id := cardIDString(next.GetCardId())
		if same != nil {
			if same.GetStatus() != storagev1.CardRecordStatus_CARD_RECORD_STATUS_ACTIVE {
				return nil, errs.Existsf("card %s was published before and is now %s: a card is published once; create a new card", id, statusName(same))
			}
			if !sameSubmission(same, next) {
				return nil, errs.Existsf("card %s is already the active card, with a different self-signature or endorsement: a retry must send the card exactly as first published", id)
			}
			return same, nil
		}
		prev := next.GetPreviousCardId()
		switch {
		case len(prev) == 0 && active == nil:
			return nil, nil
		case len(prev) == 0:
			return nil, errs.Existsf("identity %s already has an active card %s: to rotate, publish a new card whose previous_card_id is %s", next.GetIdentity(), cardIDString(active.GetCardId()), cardIDString(active.GetCardId()))
		case active == nil || !bytes.Equal(prev, active.GetCardId()):
			return nil, errs.Conflictf("previous_card_id %s is not the active card (%s); the active card is %s%s", cardIDString(prev), describe(named, next.GetIdentity()), cardIDString(active.GetCardId()), noActiveHint(active))
		}
		if len(next.GetEndorsementContent()) > 0 {
			err := e2ee.VerifyEndorsement(recordCard(active), recordCard(next), next.GetEndorsementContent(), next.GetEndorsementSignature())
			if err != nil {
				return nil, refused("endorsement", err)
			}
		}
		return nil, nil
	}
}

// sameSubmission reports whether next is exactly the stored card a, signatures and
// endorsement included (the content is the same: the ids are).
func sameSubmission(a, next *storagev1.CardRecord) bool {
	return bytes.Equal(a.GetSelfSignature(), next.GetSelfSignature()) &&
		bytes.Equal(a.GetEndorsementContent(), next.GetEndorsementContent()) &&
		bytes.Equal(a.GetEndorsementSignature(), next.GetEndorsementSignature())
}

// describe says what the card named as previous is, for the caller of identity.
func describe(named *storagev1.CardRecord, identity string) string {
	switch {
	case named == nil:
		return "there is no such card"
	case named.GetIdentity() != identity:
		return "it is another identity's card"
	}
	return "it is " + statusName(named)
}

func noActiveHint(active *storagev1.CardRecord) string {
	if active == nil {
		return ": publish the new card without previous_card_id"
	}
	return ""
}

func statusName(r *storagev1.CardRecord) string {
	name := strings.TrimPrefix(r.GetStatus().String(), "CARD_RECORD_STATUS_")
	return strings.ToLower(name)
}

// recordCard rebuilds what e2ee.VerifyEndorsement reads of a card from its record. The
// record holds only what was read from content that verified when it was published.
func recordCard(r *storagev1.CardRecord) *e2ee.Card {
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
