package msgstore

import (
	"errors"
	"fmt"
	"time"

	bolt "go.etcd.io/bbolt"
	"google.golang.org/protobuf/proto"

	"github.com/umbra-e2ee/umbra/internal/boltdb"
	"github.com/umbra-e2ee/umbra/pkg/errs"
	messagingstoragev1 "github.com/umbra-e2ee/umbra/proto/umbra/storage/messaging/v1"
)

var (
	bucketLog            = []byte("log")
	bucketFanout         = []byte("fanout")
	bucketIndexState     = []byte("index_state")
	bucketConversations  = []byte("conversations")
	bucketParticipations = []byte("participations")
	bucketMessages       = []byte("messages")
	bucketInbox          = []byte("inbox")
	bucketInboxHeads     = []byte("inbox_heads")
	bucketIdempotency    = []byte("idempotency")
	bucketEvents         = []byte("events")
	bucketExpiry         = []byte("expiry")
	bucketAppSettings    = []byte("app_settings")

	keyIndexedThrough = []byte("indexed_through")
)

// The records (log entries, fan-outs, conversations, participations) are sealed with a
// checksum (boltdb.Seal). The index entries are not: each points at a log entry, whose
// record names what it is (app, conversation and sequence, sender and client message
// id, event id, recipients), and every read checks that it is what the index said, so
// that a damaged index entry is refused too rather than serving another conversation's
// message.
var schema = boltdb.Schema{
	Version: 1,
	Buckets: [][]byte{
		bucketLog, bucketFanout, bucketIndexState, bucketConversations, bucketParticipations,
		bucketMessages, bucketInbox, bucketInboxHeads, bucketIdempotency, bucketEvents, bucketExpiry,
		bucketAppSettings,
	},
	Records: []boltdb.RecordBucket{
		{Name: bucketLog, New: func() proto.Message { return &messagingstoragev1.MessagingLogRecord{} }},
		{Name: bucketFanout, New: func() proto.Message { return &messagingstoragev1.MessagingFanoutRecord{} }},
		{Name: bucketConversations, New: func() proto.Message { return &messagingstoragev1.ConversationRecord{} }},
		{Name: bucketParticipations, New: func() proto.Message { return &messagingstoragev1.ParticipationRecord{} }},
	},
}

// Defaults of Options.
const (
	DefaultFlushEntries = 32768
	DefaultFlushAge     = 250 * time.Millisecond
)

// Options tune a BoltStore. The zero value is right for the service.
type Options struct {
	// FlushEntries is how many index entries may wait in memory before Apply writes
	// them down with its batch, and FlushAge how long the oldest may wait; 0 means
	// the defaults. A flush touches one page per conversation and inbox that changed,
	// whatever the number of messages, so rarer flushes cost less in all; their
	// transactions take longer.
	FlushEntries int
	FlushAge     time.Duration
	// NoSync skips fsync: for benchmarks that measure its cost, never for service.
	NoSync bool
}

// BoltStore is the messaging service's Store in a bbolt file. Every message and event is appended to the
// log, with its fan-out, in the transaction that acknowledges it; the indexes that
// find it by conversation, inbox, idempotency key and expiry are kept in memory
// (memIndex) and written in bulk with a later batch. After a crash, opening the store
// rebuilds them from the log.
type BoltStore struct {
	db           *boltdb.DB
	mem          *memIndex
	flushEntries int
	flushAge     time.Duration
}

// Open opens (or creates) messaging.db at path and brings its indexes up to date with
// its log.
func Open(path string, opts Options) (*BoltStore, error) {
	if opts.FlushEntries == 0 {
		opts.FlushEntries = DefaultFlushEntries
	}
	if opts.FlushAge == 0 {
		opts.FlushAge = DefaultFlushAge
	}
	db, err := boltdb.Open(path, schema, boltdb.Options{
		NoSync:          opts.NoSync,
		NoFreelistSync:  true,
		FreelistType:    bolt.FreelistMapType,
		InitialMmapSize: 1 << 30,
	})
	if err != nil {
		return nil, err
	}
	s := &BoltStore{db: db, mem: newMemIndex(), flushEntries: opts.FlushEntries, flushAge: opts.FlushAge}
	// A damaged log entry fails the rebuild, as a *boltdb.DamagedError naming the file.
	if err := boltdb.Protect(path, s.replay); err != nil {
		db.Close()
		return nil, fmt.Errorf("messaging: rebuild indexes from the log of %s: %w", path, err)
	}
	return s, nil
}

// DB exposes the file, for online backups and tests.
func (s *BoltStore) DB() *boltdb.DB { return s.db }

// Close writes down the pending index entries and closes the file. The committer must
// have stopped.
func (s *BoltStore) Close() error {
	return errors.Join(s.FlushAll(), s.db.Close())
}

// PendingIdempotencyKeys returns how many idempotency keys wait in memory to be written
// down.
func (s *BoltStore) PendingIdempotencyKeys() int {
	s.mem.mu.RLock()
	defer s.mem.mu.RUnlock()
	return len(s.mem.idem)
}

// replayChunk bounds the log entries indexed in one transaction when opening.
const replayChunk = 2048

// replay indexes the log entries above indexed_through: those whose index entries were
// still in memory when the process stopped. Indexing is idempotent, so an entry indexed
// twice (a crash between a flush's commit and nothing) changes nothing.
func (s *BoltStore) replay() error {
	for {
		done := false
		err := s.db.Update(func(tx *bolt.Tx) error {
			through, err := indexedThrough(tx)
			if err != nil {
				return err
			}
			log, fan := tx.Bucket(bucketLog), tx.Bucket(bucketFanout)
			if log.Sequence() <= through {
				done = true
				return nil
			}
			c := log.Cursor()
			n := 0
			last := through
			for k, v := c.Seek(boltdb.U64(through + 1)); k != nil && n < replayChunk; k, v = c.Next() {
				pos, err := boltdb.ParseU64(k)
				if err != nil {
					return err
				}
				rec, fr, err := decodeEntry(log, fan, k, v)
				if err != nil {
					return fmt.Errorf("log entry %d: %w", pos, err)
				}
				if err := indexEntry(tx, pos, rec, fr); err != nil {
					return fmt.Errorf("log entry %d: %w", pos, err)
				}
				last = pos
				n++
			}
			if n < replayChunk {
				last = log.Sequence() // entries above the last one were swept
			}
			return tx.Bucket(bucketIndexState).Put(keyIndexedThrough, boltdb.U64(last))
		})
		if err != nil || done {
			return err
		}
	}
}

func indexedThrough(tx *bolt.Tx) (uint64, error) {
	v := tx.Bucket(bucketIndexState).Get(keyIndexedThrough)
	if v == nil {
		return 0, nil
	}
	return boltdb.ParseU64(v)
}

// Keys. Composite keys join validated ids (which hold no zero byte) with a zero byte;
// client_message_id and event_id, which may, always come last.

func key2(a, b string) string { return a + "\x00" + b }

func key3(a, b, c string) string { return a + "\x00" + b + "\x00" + c }

// seqKey appends "\x00" and u64(seq) to prefix.
func seqKey(prefix string, seq uint64) []byte {
	k := make([]byte, 0, len(prefix)+9)
	k = append(k, prefix...)
	k = append(k, 0)
	return append(k, boltdb.U64(seq)...)
}

func expiryKey(at int64, pos uint64) []byte {
	return append(boltdb.U64(uint64(at)), boltdb.U64(pos)...)
}

// notFound reports whether err is a missing record.
func notFound(err error) bool { return errors.Is(err, errs.ErrNotFound) }

// get reads the record at key of bucket into rec, in a read transaction of its own; a
// missing one is errs.ErrNotFound with the message format and args make.
func (s *BoltStore) get(bucket []byte, key string, rec proto.Message, format string, args ...any) error {
	err := s.db.View(func(tx *bolt.Tx) error {
		return boltdb.GetProto(tx.Bucket(bucket), []byte(key), rec)
	})
	if notFound(err) {
		return errs.NotFoundf(format, args...)
	}
	return err
}

const (
	kindDirect = messagingstoragev1.ConversationRecordKind_CONVERSATION_RECORD_KIND_DIRECT
	kindGroup  = messagingstoragev1.ConversationRecordKind_CONVERSATION_RECORD_KIND_GROUP
)
