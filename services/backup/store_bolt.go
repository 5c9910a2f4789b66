package backup

import (
	"bytes"
	"errors"
	"fmt"

	bolt "go.etcd.io/bbolt"
	"google.golang.org/protobuf/proto"

	"github.com/umbra-e2ee/umbra/internal/boltdb"
	"github.com/umbra-e2ee/umbra/pkg/errs"
	backupstoragev1 "github.com/umbra-e2ee/umbra/proto/umbra/storage/backup/v1"
)

var (
	bucketSlots    = []byte("backup_slots")
	bucketOutbox   = []byte("backup_outbox")
	bucketServer   = []byte("backup_server")
	secretCheckKey = []byte("secret_check")
)

// The layout is documented in proto/umbra/storage/backup/v1/backup.proto.
var schema = boltdb.Schema{
	Version: 1,
	Buckets: [][]byte{bucketSlots, bucketOutbox, bucketServer},
	Records: []boltdb.RecordBucket{
		{Name: bucketSlots, New: func() proto.Message { return &backupstoragev1.BackupSlotRecord{} }},
		{Name: bucketOutbox, New: func() proto.Message { return &backupstoragev1.BackupOutboxRecord{} }},
		// The secret's check value: damaged, it would read as a changed server secret.
		{Name: bucketServer},
	},
}

// Verify checks backup.db at path offline (boltdb.Verify): its pages and every record.
func Verify(path string) (*boltdb.Report, error) {
	return boltdb.Verify(path, schema, nil)
}

// BoltStore is the Store in a bbolt file.
type BoltStore struct {
	db *boltdb.DB
}

var _ Store = (*BoltStore)(nil)

// OpenBoltStore opens (or creates) backup.db at path.
func OpenBoltStore(path string) (*BoltStore, error) {
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

// slotKey is app 0 identity 0 u8(slot).
func slotKey(appID, identity string, slot uint32) []byte {
	return append(boltdb.Key(appID, identity, ""), byte(slot))
}

func (s *BoltStore) SecretCheck(candidate []byte) ([]byte, error) {
	var out []byte
	err := s.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketServer)
		if v := b.Get(secretCheckKey); v != nil {
			check, err := boltdb.Unseal(b, secretCheckKey, v)
			out = bytes.Clone(check)
			return err
		}
		if len(candidate) == 0 {
			return errNoSecretHere
		}
		out = bytes.Clone(candidate)
		return boltdb.PutRecord(b, secretCheckKey, bytes.Clone(out))
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// getSlot reads a slot; a missing one is a fresh record.
func getSlot(b *bolt.Bucket, appID, identity string, slot uint32) (*backupstoragev1.BackupSlotRecord, error) {
	rec := &backupstoragev1.BackupSlotRecord{}
	err := boltdb.GetProto(b, slotKey(appID, identity, slot), rec)
	if errors.Is(err, errs.ErrNotFound) {
		return &backupstoragev1.BackupSlotRecord{AppId: appID, Identity: identity, Slot: slot}, nil
	}
	if err != nil {
		return nil, err
	}
	return rec, nil
}

func (s *BoltStore) Slot(appID, identity string, slot uint32) (*backupstoragev1.BackupSlotRecord, error) {
	return boltdb.ViewValue(s.db, func(tx *bolt.Tx) (*backupstoragev1.BackupSlotRecord, error) {
		return getSlot(tx.Bucket(bucketSlots), appID, identity, slot)
	})
}

func (s *BoltStore) Slots(appID, identity string) ([]*backupstoragev1.BackupSlotRecord, error) {
	prefix := boltdb.Key(appID, identity, "")
	return scan[backupstoragev1.BackupSlotRecord](s.db, bucketSlots, "slot", prefix, func(k []byte, _ int) bool { return bytes.HasPrefix(k, prefix) })
}

func (s *BoltStore) UpdateSlot(appID, identity string, slot uint32, update SlotUpdate) (*backupstoragev1.BackupSlotRecord, error) {
	var (
		out    *backupstoragev1.BackupSlotRecord
		answer error
	)
	err := s.db.Update(func(tx *bolt.Tx) error {
		slots := tx.Bucket(bucketSlots)
		rec, err := getSlot(slots, appID, identity, slot)
		if err != nil {
			return err
		}
		if rec.GetAppId() != appID || rec.GetIdentity() != identity || rec.GetSlot() != slot {
			return fmt.Errorf("backup: slot record at %x names %s/%s/%d", slotKey(appID, identity, slot), rec.GetAppId(), rec.GetIdentity(), rec.GetSlot())
		}
		change, answerErr := update(rec)
		out, answer = rec, answerErr
		if change.Write {
			if rec.GetAppId() != appID || rec.GetIdentity() != identity || rec.GetSlot() != slot {
				return fmt.Errorf("backup: slot update moved the record to %s/%s/%d", rec.GetAppId(), rec.GetIdentity(), rec.GetSlot())
			}
			if err := boltdb.PutProto(slots, slotKey(appID, identity, slot), rec); err != nil {
				return err
			}
		}
		if ev := change.Event; ev != nil {
			outbox := tx.Bucket(bucketOutbox)
			seq, err := outbox.NextSequence()
			if err != nil {
				return err
			}
			ev.Sequence = seq
			if err := boltdb.PutProto(outbox, boltdb.U64(seq), ev); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, answer
}

func (s *BoltStore) Outbox(limit int) ([]*backupstoragev1.BackupOutboxRecord, error) {
	return scan[backupstoragev1.BackupOutboxRecord](s.db, bucketOutbox, "outbox", nil, func(_ []byte, n int) bool { return n < limit })
}

// scan reads the records of bucket, in key order from the first key at or after from
// (nil: from the first), for as long as more holds of the next key and the number
// read before it. what names a record that does not decode.
func scan[T any, P interface {
	*T
	proto.Message
}](db *boltdb.DB, bucket []byte, what string, from []byte, more func(k []byte, n int) bool) ([]P, error) {
	var out []P
	err := db.View(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucket)
		c := b.Cursor()
		for k, v := c.Seek(from); k != nil && more(k, len(out)); k, v = c.Next() {
			rec := P(new(T))
			if err := boltdb.DecodeProto(b, k, v, rec); err != nil {
				return fmt.Errorf("backup: %s record %x: %w", what, k, err)
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

// ClaimOutbox is Outbox: a bbolt file has one process, which delivers alone.
func (s *BoltStore) ClaimOutbox(limit int) ([]*backupstoragev1.BackupOutboxRecord, error) {
	return s.Outbox(limit)
}

func (s *BoltStore) DeleteOutbox(sequence uint64) error {
	return s.db.Update(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketOutbox).Delete(boltdb.U64(sequence))
	})
}
