package card

import (
	"bytes"
	"fmt"
	"math"

	bolt "go.etcd.io/bbolt"
	"google.golang.org/protobuf/proto"

	"github.com/umbra-e2ee/umbra/internal/boltdb"
	cardstoragev1 "github.com/umbra-e2ee/umbra/proto/umbra/storage/card/v1"
)

var (
	bucketCards      = []byte("cards")
	bucketActive     = []byte("active")
	bucketHistory    = []byte("history")
	bucketEvents     = []byte("events")
	bucketServiceKey = []byte("service_key")
	bucketGrants     = []byte("reset_grants")
	currentKey       = []byte("current")
)

// The key transparency buckets (store_bolt_kt.go).
var (
	bucketKTLeaves      = []byte("kt_leaves")
	bucketKTLogTiles    = []byte("kt_log_tiles")
	bucketKTMapTiles    = []byte("kt_map_tiles")
	bucketKTMapValues   = []byte("kt_map_values")
	bucketKTCheckpoints = []byte("kt_checkpoints")
	bucketKTLogKey      = []byte("kt_log_key")
	bucketKTLogKeys     = []byte("kt_log_keys")
)

// The layout is documented in proto/umbra/storage/card/v1/card.proto.
var schema = boltdb.Schema{
	Version: 1,
	Buckets: [][]byte{bucketCards, bucketActive, bucketHistory, bucketEvents, bucketServiceKey, bucketGrants,
		bucketKTLeaves, bucketKTLogTiles, bucketKTMapTiles, bucketKTMapValues, bucketKTCheckpoints, bucketKTLogKey, bucketKTLogKeys},
	Records: []boltdb.RecordBucket{
		{Name: bucketCards, New: func() proto.Message { return &cardstoragev1.CardRecord{} }},
		{Name: bucketActive, New: func() proto.Message { return &cardstoragev1.ActiveCardRecord{} }},
		{Name: bucketEvents, New: func() proto.Message { return &cardstoragev1.CardEventRecord{} }},
		{Name: bucketServiceKey, New: func() proto.Message { return &cardstoragev1.ServiceKeyRecord{} }},
		{Name: bucketGrants, New: func() proto.Message { return &cardstoragev1.SpentResetGrantRecord{} }},
		{Name: bucketKTLeaves},
		{Name: bucketKTLogTiles},
		{Name: bucketKTMapTiles},
		{Name: bucketKTMapValues},
		{Name: bucketKTCheckpoints, New: func() proto.Message { return &cardstoragev1.CheckpointRecord{} }},
		{Name: bucketKTLogKey, New: func() proto.Message { return &cardstoragev1.LogKeyRecord{} }},
		{Name: bucketKTLogKeys, New: func() proto.Message { return &cardstoragev1.LogKeyRecord{} }},
	},
}

// Verify checks card.db at path offline (boltdb.Verify): its pages, every record, that
// each history entry names a stored card of its app, and that the key transparency log
// holds exactly the entries its latest checkpoint counts, no more than the feed's events.
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
		var size uint64
		if k, _ := tx.Bucket(bucketKTCheckpoints).Cursor().Last(); k != nil {
			size, _ = boltdb.ParseU64(k)
		}
		leaves := uint64(tx.Bucket(bucketKTLeaves).Stats().KeyN)
		if leaves != size {
			r.Problemf("kt_leaves: %d log entries, but the latest checkpoint counts %d", leaves, size)
		}
		if events := tx.Bucket(bucketEvents).Sequence(); size > events {
			r.Problemf("kt_checkpoints: a checkpoint of %d entries, but the card event feed has %d events", size, events)
		}
	})
}

// BoltStore is the Store in a bbolt file.
type BoltStore struct {
	db *boltdb.DB
	// tiles is the key transparency trees' top tiles at the latest checkpoint.
	tiles tileCaches
}

var _ Store = (*BoltStore)(nil)

// OpenBoltStore opens (or creates) card.db at path.
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

// cardKey is app 0 card id. Ids have a fixed length, so the key is unambiguous even
// though an id may contain zero bytes.
func cardKey(appID string, cardID []byte) []byte {
	return append(boltdb.Key(appID, ""), cardID...)
}

// historyPrefix is app 0 identity 0; a card's history key appends u64(sequence).
func historyPrefix(appID, identity string) []byte { return boltdb.Key(appID, identity, "") }

// getCard reads a card into a new record; a missing card is (nil, nil).
func getCard(tx *bolt.Tx, appID string, cardID []byte) (*cardstoragev1.CardRecord, error) {
	return cardIn(tx.Bucket(bucketCards), appID, cardID)
}

// cardIn reads a card from the cards bucket; none is (nil, nil).
func cardIn(cards *bolt.Bucket, appID string, cardID []byte) (*cardstoragev1.CardRecord, error) {
	return boltdb.GetOptional(cards, cardKey(appID, cardID), &cardstoragev1.CardRecord{})
}

func (s *BoltStore) Card(appID string, cardID []byte) (*cardstoragev1.CardRecord, error) {
	return boltdb.ViewValue(s.db, func(tx *bolt.Tx) (*cardstoragev1.CardRecord, error) {
		out, err := getCard(tx, appID, cardID)
		if err == nil && out == nil {
			return nil, noCard(cardID)
		}
		return out, err
	})
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
		k, _ := c.Seek(append(bytes.Clone(prefix), boltdb.U64(before)...))
		var v []byte
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
		var err error
		out, err = boltEvents(b, after, limit)
		return err
	})
	return out, latest, err
}

// boltEvents reads up to limit events of the feed (the events bucket) with a sequence
// above after, in order.
func boltEvents(events *bolt.Bucket, after uint64, limit int) ([]*cardstoragev1.CardEventRecord, error) {
	var out []*cardstoragev1.CardEventRecord
	c := events.Cursor()
	for k, v := c.Seek(boltdb.U64(after + 1)); k != nil && len(out) < limit; k, v = c.Next() {
		ev := &cardstoragev1.CardEventRecord{}
		if err := boltdb.DecodeProto(events, k, v, ev); err != nil {
			return nil, fmt.Errorf("card event %x: %w", k, err)
		}
		out = append(out, ev)
	}
	return out, nil
}
