package card

import (
	"bytes"
	"errors"
	"fmt"
	"slices"
	"time"

	bolt "go.etcd.io/bbolt"
	"google.golang.org/protobuf/proto"

	"github.com/umbra-e2ee/umbra/internal/boltdb"
	cardstoragev1 "github.com/umbra-e2ee/umbra/proto/umbra/storage/card/v1"
)

// The service keys in card.db: the current one, the retired ones and their rotation.

func (s *BoltStore) ServiceKey(candidate *cardstoragev1.ServiceKeyRecord) (*cardstoragev1.ServiceKeyRecord, error) {
	return boltFirstKey(s, bucketServiceKey, candidate, "service key")
}

// boltFirstKey returns the key stored at "current" of bucket, the service key or the
// log's first key (what names it). When there is none yet it stores candidate first.
func boltFirstKey[T any, M interface {
	*T
	proto.Message
}](s *BoltStore, bucket []byte, candidate M, what string) (M, error) {
	return boltdb.UpdateValue(s.db, func(tx *bolt.Tx) (M, error) {
		b := tx.Bucket(bucket)
		key, err := boltdb.GetOptional(b, currentKey, M(new(T)))
		if key != nil || err != nil {
			return key, err
		}
		if candidate == nil {
			return nil, errors.New("card: card.db has no " + what)
		}
		return candidate, boltdb.PutProto(b, currentKey, candidate)
	})
}

// retiredPrefix starts the keys of retired service keys: "retired" 0 key_id.
var retiredPrefix = boltdb.Key("retired", "")

func (s *BoltStore) ServiceKeys() ([]*cardstoragev1.ServiceKeyRecord, error) {
	var out []*cardstoragev1.ServiceKeyRecord
	err := s.db.View(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketServiceKey)
		c := b.Cursor()
		for k, _ := c.Seek(retiredPrefix); k != nil && bytes.HasPrefix(k, retiredPrefix); k, _ = c.Next() {
			rec := &cardstoragev1.ServiceKeyRecord{}
			if err := boltdb.GetProto(b, k, rec); err != nil {
				return err
			}
			out = append(out, rec)
		}
		slices.SortStableFunc(out, func(a, b *cardstoragev1.ServiceKeyRecord) int {
			return a.GetSupersededAt().AsTime().Compare(b.GetSupersededAt().AsTime())
		})
		current := &cardstoragev1.ServiceKeyRecord{}
		if err := boltdb.GetProto(b, currentKey, current); err != nil {
			return err
		}
		out = append(out, current)
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

func (s *BoltStore) RotateServiceKey(next *cardstoragev1.ServiceKeyRecord, at time.Time) (*cardstoragev1.ServiceKeyRecord, error) {
	var retired *cardstoragev1.ServiceKeyRecord
	err := s.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketServiceKey)
		current := &cardstoragev1.ServiceKeyRecord{}
		if err := boltdb.GetProto(b, currentKey, current); err != nil {
			return err
		}
		latest, err := latestPublished(tx)
		if err != nil {
			return err
		}
		if retired, err = rotateServiceKey(current, next, at, latest); err != nil {
			return err
		}
		if err := boltdb.PutProto(b, boltdb.Key("retired", current.GetKeyId()), retired); err != nil {
			return err
		}
		return boltdb.PutProto(b, currentKey, next)
	})
	if err != nil {
		return nil, err
	}
	return retired, nil
}

// latestPublished is when the latest card was published: its event's time (one
// process writes card.db, so that is the latest of all).
func latestPublished(tx *bolt.Tx) (time.Time, error) {
	b := tx.Bucket(bucketEvents)
	c := b.Cursor()
	for k, v := c.Last(); k != nil; k, v = c.Prev() {
		ev := &cardstoragev1.CardEventRecord{}
		if err := boltdb.DecodeProto(b, k, v, ev); err != nil {
			return time.Time{}, fmt.Errorf("card event %x: %w", k, err)
		}
		if ev.GetKind() == cardstoragev1.CardEventRecordKind_CARD_EVENT_RECORD_KIND_PUBLISHED {
			return ev.GetOccurredAt().AsTime(), nil
		}
	}
	return time.Time{}, nil
}
