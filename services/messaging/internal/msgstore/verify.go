package msgstore

import (
	"bytes"
	"encoding/binary"

	bolt "go.etcd.io/bbolt"

	"github.com/umbra-e2ee/umbra/internal/boltdb"
	messagingstoragev1 "github.com/umbra-e2ee/umbra/proto/umbra/storage/messaging/v1"
)

// Verify checks messaging.db at path offline (boltdb.Verify): its pages and every
// record, then what only this store knows. Every log entry is a message or an event
// with a consistent fan-out, and each of its recipients' inbox items points at it;
// every index entry (messages, idempotency, events) points at a log entry that is what
// the index says, and every inbox item at a stored one; inbox heads, expiry runs and
// the indexed_through mark are well-formed. Log entries above indexed_through have no
// index entries yet (they are indexed when the store opens), which is not a problem.
func Verify(path string) (*boltdb.Report, error) {
	return boltdb.Verify(path, schema, verifyIndexes)
}

func verifyIndexes(tx *bolt.Tx, r *boltdb.Report) {
	log, fanout, inbox := tx.Bucket(bucketLog), tx.Bucket(bucketFanout), tx.Bucket(bucketInbox)
	var through uint64
	if v := tx.Bucket(bucketIndexState).Get(keyIndexedThrough); v != nil {
		n, err := boltdb.ParseU64(v)
		if err != nil || n > log.Sequence() {
			r.Problemf("index_state: indexed_through %x is beyond the log's last position %d", v, log.Sequence())
		}
		through = n
	}
	_ = log.ForEach(func(k, v []byte) error {
		if _, err := boltdb.Unseal(log, k, v); err != nil {
			return nil // reported with the records already
		}
		rec, fan, err := decodeEntry(log, fanout, k, v)
		if err != nil {
			r.Problemf("log entry %x: %v", k, err)
			return nil
		}
		if pos := binary.BigEndian.Uint64(k); pos > through {
			return nil // not indexed yet: the store indexes it when it opens
		}
		// Each recipient's inbox item points here. (Checked from this side, once per
		// recipient, rather than decoding the entry again for each of its inbox items.)
		for i, id := range fan.GetRecipients() {
			if ik := seqKey(key2(rec.GetAppId(), id), fan.GetInboxSequences()[i]); !bytes.Equal(inbox.Get(ik), k) {
				r.Problemf("inbox: entry %q does not point at log entry %x, its item", ik, k)
			}
		}
		return nil
	})
	// at returns the log entry an index entry points at, with its fan-out, or records
	// why it has none. Entries are decoded again for each index entry rather than held
	// (the log may be larger than memory); each has at most one entry in each of the
	// buckets checked this way.
	at := func(bucket, k, v []byte) (*messagingstoragev1.MessagingLogRecord, *messagingstoragev1.MessagingFanoutRecord, uint64, bool) {
		r.Entries++
		if len(v) != 8 {
			r.Problemf("%s: entry %q holds %d bytes, not a log position", bucket, k, len(v))
			return nil, nil, 0, false
		}
		pos := binary.BigEndian.Uint64(v)
		lv := log.Get(v)
		if lv == nil {
			r.Problemf("%s: entry %q points at log entry %d, which is not stored", bucket, k, pos)
			return nil, nil, pos, false
		}
		rec, fan, err := decodeEntry(log, fanout, v, lv)
		return rec, fan, pos, err == nil // a damaged entry is reported already
	}
	// seqEntryKey splits prefix 0 u64(seq) into the two parts of prefix and seq.
	seqEntryKey := func(k []byte) (string, string, uint64, bool) {
		if len(k) < 9 || k[len(k)-9] != 0 {
			return "", "", 0, false
		}
		a, b, ok := bytes.Cut(k[:len(k)-9], []byte{0})
		return string(a), string(b), binary.BigEndian.Uint64(k[len(k)-8:]), ok
	}
	_ = tx.Bucket(bucketMessages).ForEach(func(k, v []byte) error {
		app, conv, seq, ok := seqEntryKey(k)
		if !ok {
			r.Problemf("messages: key %q is not app 0 conversation 0 sequence", k)
			return nil
		}
		if rec, _, pos, ok := at(bucketMessages, k, v); ok && !isMessage(rec, app, conv, seq) {
			r.Problemf("messages: entry %q points at log entry %d, which is not that message", k, pos)
		}
		return nil
	})
	_ = inbox.ForEach(func(k, v []byte) error {
		r.Entries++
		if _, _, _, ok := seqEntryKey(k); !ok || len(v) != 8 || log.Get(v) == nil {
			r.Problemf("inbox: entry %q -> %x does not point at a stored log entry", k, v)
		}
		return nil
	})
	_ = tx.Bucket(bucketIdempotency).ForEach(func(k, v []byte) error {
		parts := bytes.SplitN(k, []byte{0}, 3)
		rec, _, pos, ok := at(bucketIdempotency, k, v)
		if ok && (len(parts) != 3 || rec.GetAppId() != string(parts[0]) ||
			rec.GetMessage().GetSender() != string(parts[1]) || rec.GetMessage().GetClientMessageId() != string(parts[2])) {
			r.Problemf("idempotency: entry %q points at log entry %d, which is not that sender's message", k, pos)
		}
		return nil
	})
	_ = tx.Bucket(bucketEvents).ForEach(func(k, v []byte) error {
		app, id, _ := bytes.Cut(k, []byte{0})
		if rec, _, pos, ok := at(bucketEvents, k, v); ok && (rec.GetAppId() != string(app) || rec.GetEvent().GetEventId() != string(id)) {
			r.Problemf("events: entry %q points at log entry %d, which is not that event", k, pos)
		}
		return nil
	})
	_ = tx.Bucket(bucketInboxHeads).ForEach(func(k, v []byte) error {
		r.Entries++
		if len(v) != 8 {
			r.Problemf("inbox_heads: entry %q holds %d bytes, not a sequence", k, len(v))
		}
		return nil
	})
	_ = tx.Bucket(bucketExpiry).ForEach(func(k, v []byte) error {
		r.Entries++
		if len(k) != 16 || len(v) != 8 || binary.BigEndian.Uint64(v) < binary.BigEndian.Uint64(k[8:]) {
			r.Problemf("expiry: entry %x -> %x is not a run of log positions", k, v)
		}
		return nil
	})
}
