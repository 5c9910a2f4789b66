package card

import (
	"errors"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/umbra-e2ee/umbra/internal/boltdb"
	"github.com/umbra-e2ee/umbra/pkg/errs"
	cardstoragev1 "github.com/umbra-e2ee/umbra/proto/umbra/storage/card/v1"
)

// The key transparency log's keys in card.db. The log's first key stays where it
// always was (kt_log_key, "current"); the keys that rotations add are in kt_log_keys by
// id. A retired key keeps its place.

func (s *BoltStore) LogKey(candidate *cardstoragev1.LogKeyRecord) (*cardstoragev1.LogKeyRecord, error) {
	return boltFirstKey(s, bucketKTLogKey, candidate, "log key")
}

func (s *BoltStore) LogKeys() ([]*cardstoragev1.LogKeyRecord, error) {
	var out []*cardstoragev1.LogKeyRecord
	err := s.db.View(func(tx *bolt.Tx) error {
		var err error
		out, err = boltLogKeys(tx)
		return err
	})
	if err == nil && len(out) == 0 {
		err = noLogKey()
	}
	return out, err
}

// boltLogKeys reads every log key, oldest first; none before the first.
func boltLogKeys(tx *bolt.Tx) ([]*cardstoragev1.LogKeyRecord, error) {
	first := &cardstoragev1.LogKeyRecord{}
	err := boltdb.GetProto(tx.Bucket(bucketKTLogKey), currentKey, first)
	if errors.Is(err, errs.ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var added []*cardstoragev1.LogKeyRecord
	b := tx.Bucket(bucketKTLogKeys)
	err = b.ForEach(func(k, v []byte) error {
		rec := &cardstoragev1.LogKeyRecord{}
		if err := boltdb.DecodeProto(b, k, v, rec); err != nil {
			return err
		}
		added = append(added, rec)
		return nil
	})
	if err != nil {
		return nil, err
	}
	sortLogKeys(added)
	return append([]*cardstoragev1.LogKeyRecord{first}, added...), nil
}

func (s *BoltStore) AddLogKey(next *cardstoragev1.LogKeyRecord, sign CheckpointSigner) (*cardstoragev1.CheckpointRecord, error) {
	var out *cardstoragev1.CheckpointRecord
	err := s.db.Update(func(tx *bolt.Tx) error {
		all, err := boltLogKeys(tx)
		if err != nil {
			return err
		}
		if err := checkAddLogKey(all, next); err != nil {
			return err
		}
		if err := boltdb.PutProto(tx.Bucket(bucketKTLogKeys), []byte(next.GetKeyId()), next); err != nil {
			return err
		}
		out, err = boltResignLatest(tx, signingLogKeys(append(all, next)), sign)
		return err
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

func (s *BoltStore) RetireLogKey(keyID string, at time.Time, sign CheckpointSigner) (*cardstoragev1.LogKeyRecord, *cardstoragev1.CheckpointRecord, error) {
	var retired *cardstoragev1.LogKeyRecord
	var out *cardstoragev1.CheckpointRecord
	err := s.db.Update(func(tx *bolt.Tx) error {
		all, err := boltLogKeys(tx)
		if err != nil {
			return err
		}
		var remaining []*cardstoragev1.LogKeyRecord
		if retired, remaining, err = retireLogKey(all, keyID, at); err != nil {
			return err
		}
		b, key := tx.Bucket(bucketKTLogKeys), []byte(keyID)
		if keyID == all[0].GetKeyId() {
			b, key = tx.Bucket(bucketKTLogKey), currentKey
		}
		if err := boltdb.PutProto(b, key, retired); err != nil {
			return err
		}
		out, err = boltResignLatest(tx, remaining, sign)
		return err
	})
	if err != nil {
		return nil, nil, err
	}
	return retired, out, nil
}

// boltResignLatest signs the latest checkpoint again with keys and stores it in its
// place; nil before the first checkpoint.
func boltResignLatest(tx *bolt.Tx, keys []*cardstoragev1.LogKeyRecord, sign CheckpointSigner) (*cardstoragev1.CheckpointRecord, error) {
	t := newKTTx(tx)
	latest, err := t.latest()
	if err != nil || latest == nil {
		return nil, err
	}
	rec, err := resignCheckpoint(latest, keys, sign)
	if err != nil {
		return nil, err
	}
	return rec, boltdb.PutProto(t.checkpoints, boltdb.U64(rec.GetSize()), rec)
}
