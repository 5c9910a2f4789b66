package card

import (
	"fmt"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/umbra-e2ee/umbra/pkg/errs"
	cardstoragev1 "github.com/umbra-e2ee/umbra/proto/umbra/storage/card/v1"
)

// Publications and revocations as every engine makes them: the records, their checks
// and the steps of Publish and Revoke; an engine reads and writes the records, in its
// transaction and its layout (cardTx).

// checkGrantUse is Publish's first check: a reset card, and only a reset card, spends a
// grant.
func checkGrantUse(card *cardstoragev1.CardRecord, grant *ResetGrantUse) error {
	if card.GetKeyReset() != (grant != nil) {
		return fmt.Errorf("card: publish of card %x: reset %v with grant %v: a reset card and only a reset card spends a grant", card.GetCardId(), card.GetKeyReset(), grant)
	}
	return nil
}

// grantSpent is the refusal of a grant that spent records as used before.
func grantSpent(grant *ResetGrantUse, spent *cardstoragev1.SpentResetGrantRecord) error {
	return errs.Permissionf("reset grant %s was already used at %s, to publish card %s: a grant authorises one reset; ask the app backend for a new one",
		grant.ID, spent.GetSpentAt().AsTime().Format(time.RFC3339), cardIDString(spent.GetCardId()))
}

// spentGrant is the record of grant, spent to publish card.
func spentGrant(card *cardstoragev1.CardRecord, grant *ResetGrantUse) *cardstoragev1.SpentResetGrantRecord {
	return &cardstoragev1.SpentResetGrantRecord{
		Identity:  card.GetIdentity(),
		ExpiresAt: timestamppb.New(grant.ExpiresAt),
		SpentAt:   card.GetPublishedAt(),
		CardId:    card.GetCardId(),
	}
}

// revokeCard marks rec, identity's card in appID, revoked at at, and returns the event
// that says so, for the engine to number and store with rec.
func revokeCard(rec *cardstoragev1.CardRecord, appID, identity string, at *timestamppb.Timestamp) *cardstoragev1.CardEventRecord {
	rec.Status = cardstoragev1.CardRecordStatus_CARD_RECORD_STATUS_REVOKED
	rec.RevokedAt = at
	return &cardstoragev1.CardEventRecord{
		AppId:      appID,
		Identity:   identity,
		CardId:     rec.GetCardId(),
		Kind:       cardstoragev1.CardEventRecordKind_CARD_EVENT_RECORD_KIND_REVOKED,
		OccurredAt: at,
	}
}

// publishCard returns the event of card's publication and, when its identity has an
// active card, marks that card superseded by card and names it in the event: for the
// engine to number the event and store both.
func publishCard(card, active *cardstoragev1.CardRecord) *cardstoragev1.CardEventRecord {
	event := &cardstoragev1.CardEventRecord{
		AppId:      card.GetAppId(),
		Identity:   card.GetIdentity(),
		CardId:     card.GetCardId(),
		Kind:       cardstoragev1.CardEventRecordKind_CARD_EVENT_RECORD_KIND_PUBLISHED,
		OccurredAt: card.GetPublishedAt(),
		KeyReset:   card.GetKeyReset(),
	}
	if active != nil {
		active.Status = cardstoragev1.CardRecordStatus_CARD_RECORD_STATUS_SUPERSEDED
		active.SupersededBy = card.GetCardId()
		active.SupersededAt = card.GetPublishedAt()
		event.PreviousCardId = active.GetCardId()
	}
	return event
}

// storedCard is card as stored once published: ACTIVE, with its event's sequence.
func storedCard(card *cardstoragev1.CardRecord, seq uint64) *cardstoragev1.CardRecord {
	stored := proto.CloneOf(card)
	stored.Status = cardstoragev1.CardRecordStatus_CARD_RECORD_STATUS_ACTIVE
	stored.Sequence = seq
	return stored
}

// activeRecord is the copy of an active card's record that searches read.
func activeRecord(r *cardstoragev1.CardRecord) *cardstoragev1.ActiveCardRecord {
	return &cardstoragev1.ActiveCardRecord{
		CardId:               r.GetCardId(),
		Identity:             r.GetIdentity(),
		Content:              r.GetContent(),
		SelfSignature:        r.GetSelfSignature(),
		EndorsementContent:   r.GetEndorsementContent(),
		EndorsementSignature: r.GetEndorsementSignature(),
		ServiceSignature:     r.GetServiceSignature(),
		ServiceKeyId:         r.GetServiceKeyId(),
		PublishedAt:          r.GetPublishedAt(),
		SigningPublicKey:     r.GetSigningPublicKey(),
		Suite:                r.GetSuite(),
		KeyReset:             r.GetKeyReset(),
	}
}

// checkRevocable is Revoke's check of rec, the stored card cardID (nil when there is
// none): it exists, and is identity's.
func checkRevocable(rec *cardstoragev1.CardRecord, identity string, cardID []byte) error {
	switch {
	case rec == nil:
		return noCard(cardID)
	case rec.GetIdentity() != identity:
		return errs.Permissionf("card %s is another identity's: only its owner may revoke it", cardIDString(cardID))
	}
	return nil
}

// cardTx is one transaction of an engine as publish and revoke use it: the cards, the
// active index, the feed and the spent grants, in the engine's layout.
type cardTx interface {
	// checkServiceKey refuses a card counter-signed by another key than the current
	// one (ErrStaleServiceKey).
	checkServiceKey(card *cardstoragev1.CardRecord) error
	// card reads a card; a missing card is (nil, nil).
	card(appID string, cardID []byte) (*cardstoragev1.CardRecord, error)
	// activeCard reads identity's active card; none is (nil, nil).
	activeCard(appID, identity string) (*cardstoragev1.CardRecord, error)
	// hasHistory reports whether identity has published any card.
	hasHistory(appID, identity string) (bool, error)
	// spendGrant records grant as spent by card, or refuses it if it was spent before;
	// it also forgets grants that expired long enough ago to be refused for their
	// expiry.
	spendGrant(card *cardstoragev1.CardRecord, grant *ResetGrantUse) error
	// putCard writes a card's record, new or changed.
	putCard(rec *cardstoragev1.CardRecord) error
	// appendEvent stores ev with the feed's next sequence, which it sets.
	appendEvent(ev *cardstoragev1.CardEventRecord) error
	// activate makes stored, just published, its identity's active card and the
	// newest of its history.
	activate(stored *cardstoragev1.CardRecord) error
	// deactivate leaves identity without an active card.
	deactivate(appID, identity string) error
}

// updateCards runs f in one read-write transaction of an engine, as publish and revoke
// use it: the transaction commits what f wrote, or nothing if f fails.
type updateCards func(f func(tx cardTx) error) error

// publishWith is Publish, the same in every engine, in a transaction of update.
func publishWith(update updateCards, card *cardstoragev1.CardRecord, grant *ResetGrantUse, check PublishCheck) (*cardstoragev1.CardRecord, bool, error) {
	if err := checkGrantUse(card, grant); err != nil {
		return nil, false, err
	}
	var out *cardstoragev1.CardRecord
	written := false
	err := update(func(tx cardTx) error {
		var err error
		out, written, err = publish(tx, card, grant, check)
		return err
	})
	if err != nil {
		return nil, false, err
	}
	return out, written, nil
}

// revokeWith is Revoke, the same in every engine, in a transaction of update.
func revokeWith(update updateCards, appID, identity string, cardID []byte, at time.Time) (*cardstoragev1.CardRecord, bool, error) {
	var out *cardstoragev1.CardRecord
	changed := false
	err := update(func(tx cardTx) error {
		var err error
		out, changed, err = revoke(tx, appID, identity, cardID, at)
		return err
	})
	if err != nil {
		return nil, false, err
	}
	return out, changed, nil
}

// publish is Publish in the transaction tx: it returns the stored card and true, or
// what check returned instead and false.
func publish(tx cardTx, card *cardstoragev1.CardRecord, grant *ResetGrantUse, check PublishCheck) (*cardstoragev1.CardRecord, bool, error) {
	if err := tx.checkServiceKey(card); err != nil {
		return nil, false, err
	}
	app, identity := card.GetAppId(), card.GetIdentity()
	active, err := tx.activeCard(app, identity)
	if err != nil {
		return nil, false, err
	}
	same, err := tx.card(app, card.GetCardId())
	if err != nil {
		return nil, false, err
	}
	var named *cardstoragev1.CardRecord
	if prev := card.GetPreviousCardId(); len(prev) > 0 {
		if named, err = tx.card(app, prev); err != nil {
			return nil, false, err
		}
	}
	hasHistory, err := tx.hasHistory(app, identity)
	if err != nil {
		return nil, false, err
	}
	state := PublishState{Active: active, Same: same, Named: named, HasHistory: hasHistory}
	if out, err := check(state); err != nil || out != nil {
		return out, false, err
	}
	if same != nil {
		return nil, false, fmt.Errorf("card: publish check let card %x be stored twice", card.GetCardId())
	}
	if grant != nil {
		if err := tx.spendGrant(card, grant); err != nil {
			return nil, false, err
		}
	}
	if active != nil && card.GetKeyReset() {
		// No key of the identity vouches for the reset card, so the card it replaces is
		// revoked, not superseded: nothing signed with its key after now is trusted
		// (whoever holds that key, the user no longer does).
		revoked := revokeCard(active, app, identity, card.GetPublishedAt())
		if err := tx.putCard(active); err != nil {
			return nil, false, err
		}
		if err := tx.appendEvent(revoked); err != nil {
			return nil, false, err
		}
		active = nil
	}
	event := publishCard(card, active)
	if active != nil {
		if err := tx.putCard(active); err != nil {
			return nil, false, err
		}
	}
	if err := tx.appendEvent(event); err != nil {
		return nil, false, err
	}
	stored := storedCard(card, event.GetSequence())
	if err := tx.putCard(stored); err != nil {
		return nil, false, err
	}
	if err := tx.activate(stored); err != nil {
		return nil, false, err
	}
	return stored, true, nil
}

// revoke is Revoke in the transaction tx.
func revoke(tx cardTx, appID, identity string, cardID []byte, at time.Time) (*cardstoragev1.CardRecord, bool, error) {
	rec, err := tx.card(appID, cardID)
	if err != nil {
		return nil, false, err
	}
	if err := checkRevocable(rec, identity, cardID); err != nil {
		return nil, false, err
	}
	if rec.GetStatus() == cardstoragev1.CardRecordStatus_CARD_RECORD_STATUS_REVOKED {
		return rec, false, nil
	}
	if rec.GetStatus() == cardstoragev1.CardRecordStatus_CARD_RECORD_STATUS_ACTIVE {
		if err := tx.deactivate(appID, identity); err != nil {
			return nil, false, err
		}
	}
	revoked := revokeCard(rec, appID, identity, timestamppb.New(at))
	if err := tx.putCard(rec); err != nil {
		return nil, false, err
	}
	if err := tx.appendEvent(revoked); err != nil {
		return nil, false, err
	}
	return rec, true, nil
}
