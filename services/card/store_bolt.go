package card

import (
	"bytes"
	"errors"
	"fmt"
	"math"
	"time"

	bolt "go.etcd.io/bbolt"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/umbra-e2ee/umbra/internal/boltdb"
	"github.com/umbra-e2ee/umbra/pkg/errs"
	cardstoragev1 "github.com/umbra-e2ee/umbra/proto/umbra/storage/card/v1"
)

// PublishState is what a PublishCheck sees of the identity of a new card: its ACTIVE
// card, the stored card with the new card's id, and the stored card that the new
// card's previous_card_id names (each nil if there is none), and whether the identity
// has published any card before.
type PublishState struct {
	Active, Same, Named *cardstoragev1.CardRecord
	HasHistory          bool
}

// PublishCheck decides, inside the transaction of a publication, whether a card may be
// published. It returns an error to refuse (nothing is written), a stored record to
// answer with instead of writing anything (a retry of the active card), or neither to
// publish.
type PublishCheck func(PublishState) (*cardstoragev1.CardRecord, error)

// ResetGrantUse is the reset grant a reset publication spends.
type ResetGrantUse struct {
	// ID is the grant's id (its jti), unique per app.
	ID string
	// ExpiresAt is when the grant stops verifying anyway; the spent record is kept
	// until then (and a margin), then pruned.
	ExpiresAt time.Time
}

// spentGrantMargin is how long after its expiry a spent grant is still remembered: more
// than the clock leeway with which grants are verified.
const spentGrantMargin = time.Minute

// Store is the card service's state. Every method is one transaction: it commits whole
// or changes nothing. Cards are namespaced by app.
type Store interface {
	// ServiceKey returns the counter-signing key. When the file has none yet it stores
	// candidate first.
	ServiceKey(candidate *cardstoragev1.ServiceKeyRecord) (*cardstoragev1.ServiceKeyRecord, error)
	// ServiceKeys returns every service key, oldest first: the retired ones (public
	// key and superseded_at, no seed), then the current one. ErrNotFound if there is
	// none yet.
	ServiceKeys() ([]*cardstoragev1.ServiceKeyRecord, error)
	// RotateServiceKey makes next the current key and retires the current one at at,
	// in one transaction: the retired record keeps the public key and loses the seed.
	// It returns the retired record. ErrNotFound if there is no current key.
	RotateServiceKey(next *cardstoragev1.ServiceKeyRecord, at time.Time) (*cardstoragev1.ServiceKeyRecord, error)

	// Publish stores card, ACTIVE, as its identity's active card if check allows it:
	// the identity's active card (if any) becomes SUPERSEDED by it at its published_at,
	// the card gets the next event sequence, and a PUBLISHED event is appended. It
	// returns the stored card and true, or what check returned instead and false.
	//
	// A reset card (card.reset, with the grant it spends; grant is nil for any other
	// card) revokes the active card instead of superseding it, with a REVOKED event
	// before the PUBLISHED one, and records the grant as spent: a grant already spent
	// is refused with ErrPermission, and nothing is written.
	Publish(card *cardstoragev1.CardRecord, grant *ResetGrantUse, check PublishCheck) (*cardstoragev1.CardRecord, bool, error)
	// Revoke marks the card of appID with id cardID REVOKED at at, and appends a
	// REVOKED event; if it was its identity's active card, the identity is left without
	// one. ErrNotFound if appID has no such card, ErrPermission if it is not identity's.
	// It returns the card and whether it changed: a revoked card is returned unchanged
	// and nothing is written.
	Revoke(appID, identity string, cardID []byte, at time.Time) (*cardstoragev1.CardRecord, bool, error)

	// Card returns the card of appID with id cardID, whatever its status.
	Card(appID string, cardID []byte) (*cardstoragev1.CardRecord, error)
	// ActiveCards returns the active card of each identity of appID that has one, in
	// the order of identities.
	ActiveCards(appID string, identities []string) ([]*cardstoragev1.ActiveCardRecord, error)
	// History returns up to limit cards of identity, newest first, published before
	// the event sequence before (0: from the newest), and whether older ones remain.
	History(appID, identity string, before uint64, limit int) ([]*cardstoragev1.CardRecord, bool, error)
	// Events returns up to limit events with a sequence above after, in order, and the
	// latest sequence assigned.
	Events(after uint64, limit int) ([]*cardstoragev1.CardEventRecord, uint64, error)

	Close() error
}

var (
	bucketCards      = []byte("cards")
	bucketActive     = []byte("active")
	bucketHistory    = []byte("history")
	bucketEvents     = []byte("events")
	bucketServiceKey = []byte("service_key")
	bucketGrants     = []byte("reset_grants")
	currentKey       = []byte("current")
)

// The layout is documented in proto/umbra/storage/card/v1/card.proto.
var schema = boltdb.Schema{
	Version: 1,
	Buckets: [][]byte{bucketCards, bucketActive, bucketHistory, bucketEvents, bucketServiceKey, bucketGrants},
	Records: []boltdb.RecordBucket{
		{Name: bucketCards, New: func() proto.Message { return &cardstoragev1.CardRecord{} }},
		{Name: bucketActive, New: func() proto.Message { return &cardstoragev1.ActiveCardRecord{} }},
		{Name: bucketEvents, New: func() proto.Message { return &cardstoragev1.CardEventRecord{} }},
		{Name: bucketServiceKey, New: func() proto.Message { return &cardstoragev1.ServiceKeyRecord{} }},
		{Name: bucketGrants, New: func() proto.Message { return &cardstoragev1.SpentResetGrantRecord{} }},
	},
}

// Verify checks card.db at path offline (boltdb.Verify): its pages, every record, and
// that each history entry names a stored card of its app.
func Verify(path string) (*boltdb.Report, error) {
	return boltdb.Verify(path, schema, func(tx *bolt.Tx, r *boltdb.Report) {
		cards := tx.Bucket(bucketCards)
		_ = tx.Bucket(bucketHistory).ForEach(func(k, v []byte) error {
			r.Entries++
			app, _, ok := bytes.Cut(k, []byte{0})
			if !ok || cards.Get(cardKey(string(app), v)) == nil {
				r.Problemf("history: entry %q names no stored card", k)
			}
			return nil
		})
	})
}

// BoltStore is the Store in a bbolt file.
type BoltStore struct {
	db *boltdb.DB
}

var _ Store = (*BoltStore)(nil)

// OpenStore opens (or creates) card.db at path.
func OpenStore(path string) (*BoltStore, error) {
	db, err := boltdb.Open(path, schema, boltdb.Options{})
	if err != nil {
		return nil, err
	}
	return &BoltStore{db: db}, nil
}

// Close closes the file.
func (s *BoltStore) Close() error { return s.db.Close() }

// DB exposes the file, for online backups.
func (s *BoltStore) DB() *boltdb.DB { return s.db }

// cardKey is app 0 card id. Ids have a fixed length, so the key is unambiguous even
// though an id may contain zero bytes.
func cardKey(appID string, cardID []byte) []byte {
	return append(boltdb.Key(appID, ""), cardID...)
}

// historyPrefix is app 0 identity 0; a card's history key appends u64(sequence).
func historyPrefix(appID, identity string) []byte { return boltdb.Key(appID, identity, "") }

func (s *BoltStore) ServiceKey(candidate *cardstoragev1.ServiceKeyRecord) (*cardstoragev1.ServiceKeyRecord, error) {
	key := &cardstoragev1.ServiceKeyRecord{}
	err := s.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketServiceKey)
		err := boltdb.GetProto(b, currentKey, key)
		if !errors.Is(err, errs.ErrNotFound) {
			return err
		}
		if candidate == nil {
			return errors.New("card: card.db has no service key")
		}
		key = candidate
		return boltdb.PutProto(b, currentKey, candidate)
	})
	if err != nil {
		return nil, err
	}
	return key, nil
}

// getCard reads a card into a new record; a missing card is (nil, nil).
func getCard(tx *bolt.Tx, appID string, cardID []byte) (*cardstoragev1.CardRecord, error) {
	rec := &cardstoragev1.CardRecord{}
	err := boltdb.GetProto(tx.Bucket(bucketCards), cardKey(appID, cardID), rec)
	if errors.Is(err, errs.ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	return rec, nil
}

// activeCard reads identity's active card; none is (nil, nil).
func activeCard(tx *bolt.Tx, appID, identity string) (*cardstoragev1.CardRecord, error) {
	active := &cardstoragev1.ActiveCardRecord{}
	err := boltdb.GetProto(tx.Bucket(bucketActive), boltdb.Key(appID, identity), active)
	if errors.Is(err, errs.ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	rec, err := getCard(tx, appID, active.GetCardId())
	if err == nil && rec == nil {
		err = fmt.Errorf("card: active index of %s names a missing card %x", identity, active.GetCardId())
	}
	return rec, err
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

// hasHistory reports whether identity has published any card.
func hasHistory(tx *bolt.Tx, appID, identity string) bool {
	prefix := historyPrefix(appID, identity)
	k, _ := tx.Bucket(bucketHistory).Cursor().Seek(prefix)
	return k != nil && bytes.HasPrefix(k, prefix)
}

// spendGrant records grant as spent by card, or refuses it if it was spent before. It
// also forgets grants that expired long enough ago to be refused for their expiry.
func spendGrant(tx *bolt.Tx, card *cardstoragev1.CardRecord, grant *ResetGrantUse) error {
	b := tx.Bucket(bucketGrants)
	now := card.GetPublishedAt().AsTime()
	key := boltdb.Key(card.GetAppId(), grant.ID)
	spent := &cardstoragev1.SpentResetGrantRecord{}
	err := boltdb.GetProto(b, key, spent)
	switch {
	case err == nil:
		return errs.Permissionf("reset grant %s was already used at %s, to publish card %s: a grant authorises one reset; ask the app backend for a new one",
			grant.ID, spent.GetSpentAt().AsTime().Format(time.RFC3339), cardIDString(spent.GetCardId()))
	case !errors.Is(err, errs.ErrNotFound):
		return err
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
	return boltdb.PutProto(b, key, &cardstoragev1.SpentResetGrantRecord{
		Identity:  card.GetIdentity(),
		ExpiresAt: timestamppb.New(grant.ExpiresAt),
		SpentAt:   card.GetPublishedAt(),
		CardId:    card.GetCardId(),
	})
}

func (s *BoltStore) Publish(card *cardstoragev1.CardRecord, grant *ResetGrantUse, check PublishCheck) (*cardstoragev1.CardRecord, bool, error) {
	if card.GetKeyReset() != (grant != nil) {
		return nil, false, fmt.Errorf("card: publish of card %x: reset %v with grant %v: a reset card and only a reset card spends a grant", card.GetCardId(), card.GetKeyReset(), grant)
	}
	var out *cardstoragev1.CardRecord
	written := false
	err := s.db.Update(func(tx *bolt.Tx) error {
		app, identity := card.GetAppId(), card.GetIdentity()
		active, err := activeCard(tx, app, identity)
		if err != nil {
			return err
		}
		same, err := getCard(tx, app, card.GetCardId())
		if err != nil {
			return err
		}
		var named *cardstoragev1.CardRecord
		if prev := card.GetPreviousCardId(); len(prev) > 0 {
			if named, err = getCard(tx, app, prev); err != nil {
				return err
			}
		}
		state := PublishState{Active: active, Same: same, Named: named, HasHistory: hasHistory(tx, app, identity)}
		if out, err = check(state); err != nil || out != nil {
			return err
		}
		if same != nil {
			return fmt.Errorf("card: publish check let card %x be stored twice", card.GetCardId())
		}
		if grant != nil {
			if err := spendGrant(tx, card, grant); err != nil {
				return err
			}
		}

		events := tx.Bucket(bucketEvents)
		cards := tx.Bucket(bucketCards)
		if active != nil && card.GetKeyReset() {
			// No key of the identity vouches for the reset card, so the card it
			// replaces is revoked, not superseded: nothing signed with its key after
			// now is trusted (whoever holds that key, the user no longer does).
			revSeq, err := events.NextSequence()
			if err != nil {
				return err
			}
			active.Status = cardstoragev1.CardRecordStatus_CARD_RECORD_STATUS_REVOKED
			active.RevokedAt = card.GetPublishedAt()
			if err := boltdb.PutProto(cards, cardKey(app, active.GetCardId()), active); err != nil {
				return err
			}
			if err := boltdb.PutProto(events, boltdb.U64(revSeq), &cardstoragev1.CardEventRecord{
				Sequence:   revSeq,
				AppId:      app,
				Identity:   identity,
				CardId:     active.GetCardId(),
				Kind:       cardstoragev1.CardEventRecordKind_CARD_EVENT_RECORD_KIND_REVOKED,
				OccurredAt: active.GetRevokedAt(),
			}); err != nil {
				return err
			}
			active = nil
		}
		seq, err := events.NextSequence()
		if err != nil {
			return err
		}
		event := &cardstoragev1.CardEventRecord{
			Sequence:   seq,
			AppId:      app,
			Identity:   identity,
			CardId:     card.GetCardId(),
			Kind:       cardstoragev1.CardEventRecordKind_CARD_EVENT_RECORD_KIND_PUBLISHED,
			OccurredAt: card.GetPublishedAt(),
			KeyReset:   card.GetKeyReset(),
		}
		if active != nil {
			active.Status = cardstoragev1.CardRecordStatus_CARD_RECORD_STATUS_SUPERSEDED
			active.SupersededBy = card.GetCardId()
			active.SupersededAt = card.GetPublishedAt()
			if err := boltdb.PutProto(cards, cardKey(app, active.GetCardId()), active); err != nil {
				return err
			}
			event.PreviousCardId = active.GetCardId()
		}
		stored := proto.CloneOf(card)
		stored.Status = cardstoragev1.CardRecordStatus_CARD_RECORD_STATUS_ACTIVE
		stored.Sequence = seq
		if err := boltdb.PutProto(cards, cardKey(app, stored.GetCardId()), stored); err != nil {
			return err
		}
		if err := boltdb.PutProto(tx.Bucket(bucketActive), boltdb.Key(app, identity), activeRecord(stored)); err != nil {
			return err
		}
		if err := tx.Bucket(bucketHistory).Put(append(historyPrefix(app, identity), boltdb.U64(seq)...), stored.GetCardId()); err != nil {
			return err
		}
		if err := boltdb.PutProto(events, boltdb.U64(seq), event); err != nil {
			return err
		}
		out, written = stored, true
		return nil
	})
	if err != nil {
		return nil, false, err
	}
	return out, written, nil
}

func (s *BoltStore) Revoke(appID, identity string, cardID []byte, at time.Time) (*cardstoragev1.CardRecord, bool, error) {
	var out *cardstoragev1.CardRecord
	changed := false
	err := s.db.Update(func(tx *bolt.Tx) error {
		rec, err := getCard(tx, appID, cardID)
		switch {
		case err != nil:
			return err
		case rec == nil:
			return errs.NotFoundf("no card %s in this app", cardIDString(cardID))
		case rec.GetIdentity() != identity:
			return errs.Permissionf("card %s is another identity's: only its owner may revoke it", cardIDString(cardID))
		}
		out = rec
		if rec.GetStatus() == cardstoragev1.CardRecordStatus_CARD_RECORD_STATUS_REVOKED {
			return nil
		}
		if rec.GetStatus() == cardstoragev1.CardRecordStatus_CARD_RECORD_STATUS_ACTIVE {
			if err := tx.Bucket(bucketActive).Delete(boltdb.Key(appID, identity)); err != nil {
				return err
			}
		}
		rec.Status = cardstoragev1.CardRecordStatus_CARD_RECORD_STATUS_REVOKED
		rec.RevokedAt = timestamppb.New(at)
		if err := boltdb.PutProto(tx.Bucket(bucketCards), cardKey(appID, cardID), rec); err != nil {
			return err
		}
		events := tx.Bucket(bucketEvents)
		seq, err := events.NextSequence()
		if err != nil {
			return err
		}
		changed = true
		return boltdb.PutProto(events, boltdb.U64(seq), &cardstoragev1.CardEventRecord{
			Sequence:   seq,
			AppId:      appID,
			Identity:   identity,
			CardId:     rec.GetCardId(),
			Kind:       cardstoragev1.CardEventRecordKind_CARD_EVENT_RECORD_KIND_REVOKED,
			OccurredAt: rec.GetRevokedAt(),
		})
	})
	if err != nil {
		return nil, false, err
	}
	return out, changed, nil
}

func (s *BoltStore) Card(appID string, cardID []byte) (*cardstoragev1.CardRecord, error) {
	var out *cardstoragev1.CardRecord
	err := s.db.View(func(tx *bolt.Tx) error {
		var err error
		out, err = getCard(tx, appID, cardID)
		if err == nil && out == nil {
			return errs.NotFoundf("no card %s in this app", cardIDString(cardID))
		}
		return err
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

func (s *BoltStore) ActiveCards(appID string, identities []string) ([]*cardstoragev1.ActiveCardRecord, error) {
	out := make([]*cardstoragev1.ActiveCardRecord, 0, len(identities))
	err := s.db.View(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketActive)
		prefix := boltdb.Key(appID, "")
		key := prefix
		for _, identity := range identities {
			key = append(key[:len(prefix)], identity...)
			v := b.Get(key)
			if v == nil {
				continue
			}
			rec := &cardstoragev1.ActiveCardRecord{}
			if err := boltdb.DecodeProto(b, key, v, rec); err != nil {
				return fmt.Errorf("card: active card of %s: %w", identity, err)
			}
			out = append(out, rec)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

func (s *BoltStore) History(appID, identity string, before uint64, limit int) ([]*cardstoragev1.CardRecord, bool, error) {
	if before == 0 {
		before = math.MaxUint64 // no sequence reaches it
	}
	var out []*cardstoragev1.CardRecord
	more := false
	err := s.db.View(func(tx *bolt.Tx) error {
		prefix := historyPrefix(appID, identity)
		c := tx.Bucket(bucketHistory).Cursor()
		// Seek finds the first key at or after the bound; the one before it is the
		// newest card published before the bound.
		k, v := c.Seek(append(bytes.Clone(prefix), boltdb.U64(before)...))
		if k == nil {
			k, v = c.Last()
		} else {
			k, v = c.Prev()
		}
		for ; k != nil && bytes.HasPrefix(k, prefix); k, v = c.Prev() {
			if len(out) == limit {
				more = true
				return nil
			}
			rec, err := getCard(tx, appID, v)
			if err == nil && rec == nil {
				err = fmt.Errorf("card: history of %s names a missing card %x", identity, v)
			}
			if err != nil {
				return err
			}
			out = append(out, rec)
		}
		return nil
	})
	if err != nil {
		return nil, false, err
	}
	return out, more, nil
}

func (s *BoltStore) Events(after uint64, limit int) ([]*cardstoragev1.CardEventRecord, uint64, error) {
	var out []*cardstoragev1.CardEventRecord
	var latest uint64
	err := s.db.View(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketEvents)
		latest = b.Sequence()
		if after == math.MaxUint64 {
			return nil
		}
		c := b.Cursor()
		for k, _ := c.Seek(boltdb.U64(after + 1)); k != nil && len(out) < limit; k, _ = c.Next() {
			ev := &cardstoragev1.CardEventRecord{}
			if err := boltdb.GetProto(b, k, ev); err != nil {
				return fmt.Errorf("card event %x: %w", k, err)
			}
			out = append(out, ev)
		}
		return nil
	})
	return out, latest, err
}
