package card

import (
	"bytes"
	"fmt"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/umbra-e2ee/umbra/internal/boltdb"
	cardstoragev1 "github.com/umbra-e2ee/umbra/proto/umbra/storage/card/v1"
)

// Publications and revocations in card.db: boltCardTx, a bbolt transaction.

func (s *BoltStore) Publish(card *cardstoragev1.CardRecord, grant *ResetGrantUse, check PublishCheck) (*cardstoragev1.CardRecord, bool, error) {
	return publishWith(s.updateCards, card, grant, check)
}

func (s *BoltStore) Revoke(appID, identity string, cardID []byte, at time.Time) (*cardstoragev1.CardRecord, bool, error) {
	return revokeWith(s.updateCards, appID, identity, cardID, at)
}

// updateCards is the store's updateCards: a bbolt read-write transaction.
func (s *BoltStore) updateCards(f func(cardTx) error) error {
	return s.db.Update(func(tx *bolt.Tx) error { return f(boltCardTx{tx}) })
}

// boltCardTx is a bbolt transaction as publish and revoke use it.
type boltCardTx struct{ tx *bolt.Tx }

var _ cardTx = boltCardTx{}

func (t boltCardTx) checkServiceKey(card *cardstoragev1.CardRecord) error {
	current := &cardstoragev1.ServiceKeyRecord{}
	if err := boltdb.GetProto(t.tx.Bucket(bucketServiceKey), currentKey, current); err != nil {
		return err
	}
	if current.GetKeyId() != card.GetServiceKeyId() {
		return ErrStaleServiceKey
	}
	return nil
}

func (t boltCardTx) card(appID string, cardID []byte) (*cardstoragev1.CardRecord, error) {
	return getCard(t.tx, appID, cardID)
}

func (t boltCardTx) activeCard(appID, identity string) (*cardstoragev1.CardRecord, error) {
	active, err := boltdb.GetOptional(t.tx.Bucket(bucketActive), boltdb.Key(appID, identity), &cardstoragev1.ActiveCardRecord{})
	if err != nil || active == nil {
		return nil, err
	}
	rec, err := getCard(t.tx, appID, active.GetCardId())
	if err == nil && rec == nil {
		err = fmt.Errorf("card: active index of %s names a missing card %x", identity, active.GetCardId())
	}
	return rec, err
}

func (t boltCardTx) hasHistory(appID, identity string) (bool, error) {
	prefix := historyPrefix(appID, identity)
	k, _ := t.tx.Bucket(bucketHistory).Cursor().Seek(prefix)
	return k != nil && bytes.HasPrefix(k, prefix), nil
}

func (t boltCardTx) spendGrant(card *cardstoragev1.CardRecord, grant *ResetGrantUse) error {
	b := t.tx.Bucket(bucketGrants)
	now := card.GetPublishedAt().AsTime()
	key := boltdb.Key(card.GetAppId(), grant.ID)
	spent, err := boltdb.GetOptional(b, key, &cardstoragev1.SpentResetGrantRecord{})
	switch {
	case err != nil:
		return err
	case spent != nil:
		return grantSpent(grant, spent)
	}
	// Grants live an hour at most and resets are rare, so the bucket stays small and a
	// scan of it costs nothing next to the publication.
	var expired [][]byte
	err = b.ForEach(func(k, v []byte) error {
		rec := &cardstoragev1.SpentResetGrantRecord{}
		if err := boltdb.DecodeProto(b, k, v, rec); err != nil {
			return fmt.Errorf("card: spent reset grant %q: %w", k, err)
		}
		if now.After(rec.GetExpiresAt().AsTime().Add(spentGrantMargin)) {
			expired = append(expired, bytes.Clone(k))
		}
		return nil
	})
	if err != nil {
		return err
	}
	for _, k := range expired {
		if err := b.Delete(k); err != nil {
			return err
		}
	}
	return boltdb.PutProto(b, key, spentGrant(card, grant))
}

func (t boltCardTx) putCard(rec *cardstoragev1.CardRecord) error {
	return boltdb.PutProto(t.tx.Bucket(bucketCards), cardKey(rec.GetAppId(), rec.GetCardId()), rec)
}

func (t boltCardTx) appendEvent(ev *cardstoragev1.CardEventRecord) error {
	events := t.tx.Bucket(bucketEvents)
	seq, err := events.NextSequence()
	if err != nil {
		return err
	}
	ev.Sequence = seq
	return boltdb.PutProto(events, boltdb.U64(seq), ev)
}

func (t boltCardTx) activate(stored *cardstoragev1.CardRecord) error {
	app, identity := stored.GetAppId(), stored.GetIdentity()
	if err := boltdb.PutProto(t.tx.Bucket(bucketActive), boltdb.Key(app, identity), activeRecord(stored)); err != nil {
		return err
	}
	return t.tx.Bucket(bucketHistory).Put(append(historyPrefix(app, identity), boltdb.U64(stored.GetSequence())...), stored.GetCardId())
}

func (t boltCardTx) deactivate(appID, identity string) error {
	return t.tx.Bucket(bucketActive).Delete(boltdb.Key(appID, identity))
}
