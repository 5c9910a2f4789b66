package msgstore

import (
	"bytes"
	"fmt"

	bolt "go.etcd.io/bbolt"
	"google.golang.org/protobuf/proto"

	"github.com/umbra-e2ee/umbra/internal/boltdb"
	"github.com/umbra-e2ee/umbra/internal/storecopy"
	messagingstoragev1 "github.com/umbra-e2ee/umbra/proto/umbra/storage/messaging/v1"
)

// The record kinds of messaging.db as `umbra admin migrate` copies them
// (internal/storecopy). messaging.db's log positions are this engine's own, and its
// index buckets only point at them, so the kinds are read from the log, the source of
// truth, and named by what they are, not where they sit (u64 is 8 bytes big-endian):
//
//	app_settings      app                          -> MessagingAppSettingsRecord
//	conversations     app 0 conversation           -> ConversationRecord
//	participations    app 0 identity 0 conversation -> ParticipationRecord
//	inbox_heads       app 0 identity               -> u64(latest inbox sequence)
//	messages          app 0 conversation 0 u64(seq) -> MessagingLogRecord, without its fan-out
//	events            app 0 u64(expires) event_id  -> MessagingLogRecord, without its fan-out
//	event_recipients  app 0 u64(expires) event_id  -> MessagingFanoutRecord, its recipients only
//	inbox             app 0 identity 0 u64(inbox seq) -> u64(expires) "m" u64(seq) conversation
//	                                                   or u64(expires) "e" event_id
//	idempotency       app 0 sender 0 client_message_id -> u64(seq) u64(expires) conversation
//	event_ids         app 0 event_id               -> u64(expires)
//
// A client_message_id or event_id used again after its first entry expired (and before
// the sweeper deleted it) names the latest entry, as the index does.
var CopyKinds = []string{"app_settings", "conversations", "participations", "inbox_heads", "messages", "events",
	"event_recipients", "inbox", "idempotency", "event_ids"}

// CopySource streams the record kinds of messaging.db at path, read-only
// (boltdb.ViewReadOnly), in one read transaction. A file whose indexes lag its log (a
// process that stopped without closing it) is refused: its conversations' latest
// sequences and inbox heads are written with the indexes. Opening it once with the
// service brings them up to date.
func CopySource(path string) storecopy.Source {
	return func(fn func(kind string, key, value []byte) error) error {
		return boltdb.ViewReadOnly(path, schema, func(tx *bolt.Tx) error { return copyKinds(tx, fn) })
	}
}

// ExpiryRange is the earliest and the latest expiry (Unix ns) of the entries
// CopySource streams; ok is false when there is none.
func ExpiryRange(path string) (lo, hi int64, ok bool, err error) {
	err = boltdb.ViewReadOnly(path, schema, func(tx *bolt.Tx) error {
		k, _ := tx.Bucket(bucketExpiry).Cursor().First()
		l, _ := tx.Bucket(bucketExpiry).Cursor().Last()
		if k == nil {
			return nil
		}
		if len(k) != 16 || len(l) != 16 {
			return fmt.Errorf("messaging: %s: an expiry entry is not 16 bytes", path)
		}
		a, _ := boltdb.ParseU64(k[:8])
		b, _ := boltdb.ParseU64(l[:8])
		lo, hi, ok = int64(a), int64(b), true
		return nil
	})
	return lo, hi, ok, err
}

func copyKinds(tx *bolt.Tx, fn func(kind string, key, value []byte) error) error {
	path := tx.DB().Path()
	known := [][]byte{bucketLog, bucketFanout, bucketIndexState, bucketConversations, bucketParticipations,
		bucketMessages, bucketInbox, bucketInboxHeads, bucketIdempotency, bucketEvents, bucketExpiry, bucketAppSettings, []byte("_meta")}
	if err := tx.ForEach(func(name []byte, _ *bolt.Bucket) error {
		for _, k := range known {
			if bytes.Equal(k, name) {
				return nil
			}
		}
		return fmt.Errorf("messaging: %s holds a bucket %q that the copier does not know; nothing was copied", path, name)
	}); err != nil {
		return err
	}
	log := tx.Bucket(bucketLog)
	through, err := indexedThrough(tx)
	if err != nil {
		return err
	}
	if through < log.Sequence() {
		return fmt.Errorf("messaging: %s was not closed cleanly (its indexes cover the log up to entry %d of %d): start the messaging service on it once and stop it (it brings them up to date), then copy again",
			path, through, log.Sequence())
	}
	// Sealed records, without their checksum (app_settings is written sealed too).
	for _, b := range [][]byte{bucketAppSettings, bucketConversations, bucketParticipations} {
		bucket := tx.Bucket(b)
		if err := bucket.ForEach(func(k, v []byte) error {
			if v == nil {
				return fmt.Errorf("messaging: %s: bucket %s holds a nested bucket %q", path, b, k)
			}
			rec, err := boltdb.Unseal(bucket, k, v)
			if err != nil {
				return err
			}
			return fn(string(b), k, rec)
		}); err != nil {
			return err
		}
	}
	if err := tx.Bucket(bucketInboxHeads).ForEach(func(k, v []byte) error {
		return fn("inbox_heads", k, v)
	}); err != nil {
		return err
	}
	type latest struct {
		pos   uint64
		value []byte
	}
	idem, eventIDs := map[string]latest{}, map[string]latest{}
	fanout := tx.Bucket(bucketFanout)
	c := log.Cursor()
	for k, v := c.First(); k != nil; k, v = c.Next() {
		pos, err := boltdb.ParseU64(k)
		if err != nil {
			return err
		}
		rec, fan, err := decodeEntry(log, fanout, k, v)
		if err != nil {
			return fmt.Errorf("log entry %d: %w", pos, err)
		}
		app, expires := rec.GetAppId(), boltdb.U64(uint64(rec.GetExpiresAt().AsTime().UnixNano()))
		bare := proto.Clone(rec).(*messagingstoragev1.MessagingLogRecord)
		bare.Fanout = nil
		raw, err := proto.MarshalOptions{Deterministic: true}.Marshal(bare)
		if err != nil {
			return err
		}
		var item []byte
		if m := rec.GetMessage(); m != nil {
			seq := boltdb.U64(m.GetSequence())
			if err := fn("messages", seqKey(key2(app, m.GetConversationId()), m.GetSequence()), raw); err != nil {
				return err
			}
			idem[key3(app, m.GetSender(), m.GetClientMessageId())] = latest{pos, concat(seq, expires, []byte(m.GetConversationId()))}
			item = concat(expires, []byte("m"), seq, []byte(m.GetConversationId()))
		} else {
			ev := rec.GetEvent()
			key := concat([]byte(app), []byte{0}, expires, []byte(ev.GetEventId()))
			if err := fn("events", key, raw); err != nil {
				return err
			}
			recipients, err := proto.MarshalOptions{Deterministic: true}.Marshal(&messagingstoragev1.MessagingFanoutRecord{Recipients: fan.GetRecipients()})
			if err != nil {
				return err
			}
			if err := fn("event_recipients", key, recipients); err != nil {
				return err
			}
			eventIDs[key2(app, ev.GetEventId())] = latest{pos, expires}
			item = concat(expires, []byte("e"), []byte(ev.GetEventId()))
		}
		for i, r := range fan.GetRecipients() {
			if err := fn("inbox", seqKey(key2(app, r), fan.GetInboxSequences()[i]), item); err != nil {
				return err
			}
		}
	}
	for _, m := range []struct {
		kind string
		m    map[string]latest
	}{{"idempotency", idem}, {"event_ids", eventIDs}} {
		for k, l := range m.m {
			if err := fn(m.kind, []byte(k), l.value); err != nil {
				return err
			}
		}
	}
	return nil
}

func concat(parts ...[]byte) []byte {
	return bytes.Join(parts, nil)
}
