package msgstore

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/umbra-e2ee/umbra/internal/boltdb"
)

// Retention in bbolt: Sweep deletes the expired log entries, each with its fan-out,
// inbox items and index entries.

// Sweep implements messaging.Store. It writes down the pending index entries first, so
// that the expiry index is complete and every entry it deletes is found by its indexes.
func (s *BoltStore) Sweep(now time.Time, limit int) (int, bool, error) {
	deleted, more, flushed := 0, false, false
	err := s.db.Update(func(tx *bolt.Tx) error {
		deleted, more, flushed = 0, false, false
		if n, _ := s.mem.pendingCount(); n > 0 {
			if err := s.newWriter(tx, time.Time{}, 0).flush(); err != nil {
				return err
			}
			flushed = true
		}
		exp := tx.Bucket(bucketExpiry)
		for work := 0; ; {
			k, v := exp.Cursor().First()
			if k == nil || int64(binary.BigEndian.Uint64(k[:8])) > now.UnixNano() {
				return nil
			}
			if work >= limit {
				more = true
				return nil
			}
			if len(k) != 16 || len(v) != 8 {
				return fmt.Errorf("expiry entry of %d and %d bytes", len(k), len(v))
			}
			pos, last := binary.BigEndian.Uint64(k[8:]), binary.BigEndian.Uint64(v)
			for ; pos <= last && work < limit; pos++ {
				n, found, err := deleteEntry(tx, pos)
				if err != nil {
					return err
				}
				work += n
				if found {
					deleted++
				}
			}
			if err := exp.Delete(k); err != nil {
				return err
			}
			if pos <= last { // the rest of the run is for the next transaction
				if err := exp.Put(expiryKey(int64(binary.BigEndian.Uint64(k[:8])), pos), v); err != nil {
					return err
				}
			}
		}
	})
	if err != nil {
		return 0, false, fmt.Errorf("messaging: store: sweep: %w", err)
	}
	if flushed {
		s.mem.merge(nil, true)
	}
	return deleted, more, nil
}

// deleteEntry deletes the log entry at pos, if it is still there, with its fan-out,
// inbox items and index entries, and returns the work it did (1 + its recipients).
func deleteEntry(tx *bolt.Tx, pos uint64) (int, bool, error) {
	log, fanout := tx.Bucket(bucketLog), tx.Bucket(bucketFanout)
	p := boltdb.U64(pos)
	v := log.Get(p)
	if v == nil {
		return 1, false, nil
	}
	rec, fan, err := decodeEntry(log, fanout, p, v)
	if err != nil {
		return 0, false, fmt.Errorf("log entry %d: %w", pos, err)
	}
	app := rec.GetAppId()
	inbox := tx.Bucket(bucketInbox)
	for i, r := range fan.GetRecipients() {
		if err := inbox.Delete(seqKey(key2(app, r), fan.GetInboxSequences()[i])); err != nil {
			return 0, false, err
		}
	}
	// An index entry is deleted only if it still points here.
	deleteIfAt := func(bucket []byte, key string) error {
		b := tx.Bucket(bucket)
		if bytes.Equal(b.Get([]byte(key)), p) {
			return b.Delete([]byte(key))
		}
		return nil
	}
	if ev := rec.GetEvent(); ev != nil {
		err = deleteIfAt(bucketEvents, key2(app, ev.GetEventId()))
	} else {
		m := rec.GetMessage()
		if err = tx.Bucket(bucketMessages).Delete(seqKey(key2(app, m.GetConversationId()), m.GetSequence())); err == nil {
			err = deleteIfAt(bucketIdempotency, key3(app, m.GetSender(), m.GetClientMessageId()))
		}
	}
	if err != nil {
		return 0, false, err
	}
	if rec.GetFanout() == nil {
		if err := fanout.Delete(p); err != nil {
			return 0, false, err
		}
	}
	return 1 + len(fan.GetRecipients()), true, log.Delete(p)
}
