package card

import (
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/umbra-e2ee/umbra/internal/boltdb"
	cardstoragev1 "github.com/umbra-e2ee/umbra/proto/umbra/storage/card/v1"
)

// The key transparency log's keys in card.db. The log's first key stays where it
// always was (kt_log_key, "current"); the keys that rotations add are in kt_log_keys by
// id. A retired key keeps its place.

func (s *BoltStore) LogKey(candidate *cardstoragev1.LogKeyRecord) (*cardstoragev1.LogKeyRecord, error) {
	return boltFirstKey(s, bucketKTLogKey, candidate, "log key")
}

func (s *BoltStore) LogKeys() ([]*cardstoragev1.LogKeyRecord, error) {
	out, err := boltdb.ViewValue(s.db, boltLogKeys)
	if err == nil && len(out) == 0 {
		err = noLogKey()
	}
	return out, err
}

// boltLogKeys reads every log key, oldest first; none before the first.
func boltLogKeys(tx *bolt.Tx) ([]*cardstoragev1.LogKeyRecord, error) {
	first, err := boltdb.GetOptional(tx.Bucket(bucketKTLogKey), currentKey, &cardstoragev1.LogKeyRecord{})
	if err != nil || first == nil {
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
	return logKeysInOrder(first, added), nil
}

func (s *BoltStore) AddLogKey(next *cardstoragev1.LogKeyRecord, sign CheckpointSigner) (*cardstoragev1.CheckpointRecord, error) {
	return addLogKeyWith(s.updateLogKeys, next, sign)
}

func (s *BoltStore) RetireLogKey(keyID string, at time.Time, sign CheckpointSigner) (*cardstoragev1.LogKeyRecord, *cardstoragev1.CheckpointRecord, error) {
	return retireLogKeyWith(s.updateLogKeys, keyID, at, sign)
}

// updateLogKeys is the store's updateLogKeys: a bbolt read-write transaction.
func (s *BoltStore) updateLogKeys(f func(logKeyTx) error) error {
	return s.db.Update(func(tx *bolt.Tx) error { return f(boltLogKeyTx{tx}) })
}

// boltLogKeyTx is a bbolt transaction as the log key rotations use it.
type boltLogKeyTx struct{ tx *bolt.Tx }

var _ logKeyTx = boltLogKeyTx{}

func (t boltLogKeyTx) logKeys() ([]*cardstoragev1.LogKeyRecord, error) { return boltLogKeys(t.tx) }

func (t boltLogKeyTx) insertLogKey(next *cardstoragev1.LogKeyRecord) error {
	return boltdb.PutProto(t.tx.Bucket(bucketKTLogKeys), []byte(next.GetKeyId()), next)
}

func (t boltLogKeyTx) updateLogKey(rec *cardstoragev1.LogKeyRecord, first bool) error {
	b, key := t.tx.Bucket(bucketKTLogKeys), []byte(rec.GetKeyId())
	if first {
		b, key = t.tx.Bucket(bucketKTLogKey), currentKey
	}
	return boltdb.PutProto(b, key, rec)
}

func (t boltLogKeyTx) latest() (*cardstoragev1.CheckpointRecord, error) {
	return newKTTx(t.tx).latest()
}

func (t boltLogKeyTx) replaceCheckpoint(rec *cardstoragev1.CheckpointRecord) error {
	return boltdb.PutProto(t.tx.Bucket(bucketKTCheckpoints), boltdb.U64(rec.GetSize()), rec)
}
