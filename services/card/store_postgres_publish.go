package card

import (
	"context"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/umbra-e2ee/umbra/internal/pgdb"
	"github.com/umbra-e2ee/umbra/pkg/errs"
	cardstoragev1 "github.com/umbra-e2ee/umbra/proto/umbra/storage/card/v1"
)

// Publications and revocations in PostgreSQL: pgCardTx, which holds the feed's lock.

// pgSpendGrant records grant as spent by card, or refuses it if it was spent before,
// and forgets grants that expired long enough ago to be refused for their expiry. The
// feed's lock is held, so two replicas spending one grant take turns; the primary key
// would refuse the second anyway.
func pgSpendGrant(ctx context.Context, tx pgx.Tx, card *cardstoragev1.CardRecord, grant *ResetGrantUse) error {
	app := card.GetAppId()
	spent := &cardstoragev1.SpentResetGrantRecord{}
	found, err := records.Get(ctx, tx, "reset_grants", app+"/"+grant.ID, spent, "SELECT record FROM reset_grants WHERE app_id = $1 AND grant_id = $2", app, grant.ID)
	if err != nil {
		return err
	}
	if found {
		return grantSpent(grant, spent)
	}
	now := card.GetPublishedAt().AsTime()
	if _, err := tx.Exec(ctx, "DELETE FROM reset_grants WHERE forget_after_ns < $1", now.UnixNano()); err != nil {
		return err
	}
	b, err := records.Encode(spentGrant(card, grant))
	if err != nil {
		return err
	}
	_, err = tx.Exec(ctx, "INSERT INTO reset_grants (app_id, grant_id, forget_after_ns, record) VALUES ($1, $2, $3, $4)",
		app, grant.ID, grant.ExpiresAt.Add(spentGrantMargin).UnixNano(), b)
	if pgdb.IsUniqueViolation(err) {
		return errs.Permissionf("reset grant %s was already used: a grant authorises one reset; ask the app backend for a new one", grant.ID)
	}
	return err
}

func (s *PostgresStore) Publish(card *cardstoragev1.CardRecord, grant *ResetGrantUse, check PublishCheck) (*cardstoragev1.CardRecord, bool, error) {
	return publishWith(s.updateCards, card, grant, check)
}

func (s *PostgresStore) Revoke(appID, identity string, cardID []byte, at time.Time) (*cardstoragev1.CardRecord, bool, error) {
	return revokeWith(s.updateCards, appID, identity, cardID, at)
}

// updateCards is the store's updateCards: a transaction that holds the feed's lock, and
// saves the feed's counter when f appended events.
func (s *PostgresStore) updateCards(f func(cardTx) error) error {
	return s.db.Update(func(ctx context.Context, tx pgx.Tx) error {
		// Publications, revocations and rotations take turns from here: what f checks
		// sees every change committed before, and the events get their sequences in
		// commit order.
		events, err := lockEvents(ctx, tx)
		if err != nil {
			return err
		}
		last := events.last
		if err := f(pgCardTx{ctx, tx, events}); err != nil || events.last == last {
			return err
		}
		return events.save(ctx, tx)
	})
}

// pgCardTx is a PostgreSQL transaction that holds the feed's lock (events), as publish
// and revoke use it; updateCards saves events when they changed.
type pgCardTx struct {
	ctx    context.Context
	tx     pgx.Tx
	events *eventCounter
}

var _ cardTx = pgCardTx{}

func (t pgCardTx) checkServiceKey(card *cardstoragev1.CardRecord) error {
	key, found, err := currentServiceKey(t.ctx, t.tx, "")
	if err != nil {
		return err
	}
	if !found || key.GetKeyId() != card.GetServiceKeyId() {
		return ErrStaleServiceKey
	}
	return nil
}

func (t pgCardTx) card(appID string, cardID []byte) (*cardstoragev1.CardRecord, error) {
	return pgCard(t.ctx, t.tx, appID, cardID)
}

func (t pgCardTx) activeCard(appID, identity string) (*cardstoragev1.CardRecord, error) {
	return pgActiveCard(t.ctx, t.tx, appID, identity)
}

func (t pgCardTx) hasHistory(appID, identity string) (bool, error) {
	var has bool
	err := t.tx.QueryRow(t.ctx, "SELECT EXISTS (SELECT 1 FROM cards WHERE app_id = $1 AND identity = $2)", appID, identity).Scan(&has)
	return has, err
}

func (t pgCardTx) spendGrant(card *cardstoragev1.CardRecord, grant *ResetGrantUse) error {
	return pgSpendGrant(t.ctx, t.tx, card, grant)
}

func (t pgCardTx) putCard(rec *cardstoragev1.CardRecord) error { return putCard(t.ctx, t.tx, rec) }

func (t pgCardTx) appendEvent(ev *cardstoragev1.CardEventRecord) error {
	return t.events.appendEvent(t.ctx, t.tx, ev)
}

// activate also moves the feed's latest publication time, which rotations check.
func (t pgCardTx) activate(stored *cardstoragev1.CardRecord) error {
	ab, err := records.Encode(activeRecord(stored))
	if err != nil {
		return err
	}
	if _, err := t.tx.Exec(t.ctx, `INSERT INTO active_cards (app_id, identity, card_id, record) VALUES ($1, $2, $3, $4)
		ON CONFLICT (app_id, identity) DO UPDATE SET card_id = EXCLUDED.card_id, record = EXCLUDED.record`,
		stored.GetAppId(), stored.GetIdentity(), stored.GetCardId(), ab); err != nil {
		return err
	}
	t.events.latestPublished = max(t.events.latestPublished, stored.GetPublishedAt().AsTime().UnixNano())
	return nil
}

func (t pgCardTx) deactivate(appID, identity string) error {
	_, err := t.tx.Exec(t.ctx, "DELETE FROM active_cards WHERE app_id = $1 AND identity = $2", appID, identity)
	return err
}
