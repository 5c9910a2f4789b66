package messaging

import (
	"errors"
	"fmt"
	"time"

	bolt "go.etcd.io/bbolt"
	"google.golang.org/protobuf/proto"

	"github.com/umbra-e2ee/umbra/internal/boltdb"
	"github.com/umbra-e2ee/umbra/pkg/errs"
	storagev1 "github.com/umbra-e2ee/umbra/proto/umbra/storage/v1"
)

// Store is the messaging service's state.
//
// Apply, Flush and Sweep write; one goroutine calls them (the committer), never two at
// once. The read methods may run concurrently with them and with each other, and see
// every write that Apply has returned from.
type Store interface {
	// Apply checks and applies every op of b in one transaction, durable when it
	// returns. An op that the stored state refuses (a reused idempotency key, a cursor
	// beyond the conversation) gets its Err and writes nothing; the others are applied.
	// An error from Apply is a storage failure: nothing was written, for any op.
	Apply(b *Batch) error
	// Flush writes down what Apply deferred and has waited long enough, and reports
	// whether deferred work remains. Apply's writes are durable without it; the
	// committer calls it when idle, so that deferred work does not wait for the next
	// write.
	Flush() (pending bool, err error)
	// Sweep deletes up to limit expired log entries (each with its inbox items, index
	// entries and idempotency key) and reports how many it deleted and whether expired
	// ones remain.
	Sweep(now time.Time, limit int) (deleted int, more bool, err error)

	// Sent returns the message a sender stored under a client_message_id, or an
	// errs.ErrNotFound.
	Sent(appID, sender, clientMessageID string) (*storagev1.MessagingLogRecord, error)
	// Conversation returns a conversation's record, or an errs.ErrNotFound.
	Conversation(appID, conversationID string) (*storagev1.ConversationRecord, error)
	// HasMessage reports whether the message at seq is still stored.
	HasMessage(appID, conversationID string, seq uint64) (bool, error)
	// Messages returns a page of a conversation's stored messages, and whether the
	// conversation holds more in the same direction.
	Messages(appID, conversationID string, q MessageQuery) ([]*storagev1.MessagingLogRecord, bool, error)
	// Inbox returns the stored items of an inbox above after, in order, up to limit
	// items or maxBytes of envelopes and payloads (at least one item), and the inbox's
	// latest sequence.
	Inbox(appID, identity string, after uint64, limit, maxBytes int) ([]InboxItem, uint64, error)
	// InboxHead returns an inbox's latest sequence; 0 for an empty inbox.
	InboxHead(appID, identity string) (uint64, error)
	// Participation returns an identity's part in a conversation, or an
	// errs.ErrNotFound.
	Participation(appID, identity, conversationID string) (*storagev1.ParticipationRecord, error)
	// Participations returns up to limit of an identity's conversations with an id
	// above after, in id order.
	Participations(appID, identity, after string, limit int) ([]*storagev1.ParticipationRecord, error)

	// AppSettings returns an app's settings, or an errs.ErrNotFound for an app that
	// has the defaults; PutAppSettings stores them, durable when it returns
	// (appsettings.go).
	AppSettings(appID string) (*storagev1.MessagingAppSettingsRecord, error)
	PutAppSettings(rec *storagev1.MessagingAppSettingsRecord) error

	Close() error
}

// Batch is what the committer hands to Store.Apply.
type Batch struct {
	// Now is the server time of the batch's messages (never earlier than a
	// conversation's previous message), and Retention how long they are kept.
	Now       time.Time
	Retention time.Duration
	Ops       []*Op
	// Grown is set by Apply: the inboxes that received items, with their new latest
	// sequence.
	Grown []InboxHead
}

// InboxHead is an inbox's latest sequence. Items, when set, are the items the batch
// added to the inbox, in order, the last one at Head; the records are shared and must
// not be modified.
type InboxHead struct {
	AppID, Identity string
	Head            uint64
	Items           []InboxItem
}

// Op is one write of a batch: exactly one of Send, Event and Cursors is set.
type Op struct {
	Send    *SendOp
	Event   *EventOp
	Cursors *CursorOp
	// Err is set by Apply when the stored state refuses the op.
	Err error
}

// SendOp stores a message, checked and authorised already, unless the sender's
// client_message_id is taken.
type SendOp struct {
	AppID, Sender   string
	ConversationID  string // canonical: "d_..." or "g_..."
	Kind            storagev1.ConversationRecordKind
	ClientMessageID string
	MessageKind     storagev1.StoredMessageKind
	Epoch           uint64
	SenderCardID    []byte
	Envelope        []byte
	// Recipients get the message in their inboxes, sorted and without duplicates: a
	// direct conversation's two participants, the sender included, or a group's
	// members.
	Recipients []string
	// MembershipVersion is the group member list's version that Recipients belong to.
	MembershipVersion uint64

	// Set by Apply.
	Sequence   uint64
	ServerTime time.Time
	ExpiresAt  time.Time
	Duplicate  bool
}

// EventOp publishes an event into its recipients' inboxes, unless its id is taken.
type EventOp struct {
	AppID, EventID, Type, GroupID string
	Payload                       []byte
	// Recipients are sorted and without duplicates.
	Recipients []string

	// Set by Apply.
	Duplicate      bool
	RecipientCount int
}

// CursorOp moves an identity's cursors in a conversation forwards.
type CursorOp struct {
	AppID, Identity, ConversationID string
	Kind                            storagev1.ConversationRecordKind
	Peer                            string // direct conversations
	Delivered, Read                 uint64

	// Set by Apply: the cursors after the update.
	Cursor *storagev1.ParticipationRecord
}

// cost is what an op adds to a batch, for the committer's bounds: the index entries it
// makes and the bytes it stores.
func (op *Op) cost() (entries, bytes int) {
	switch {
	case op.Send != nil:
		return 3 + len(op.Send.Recipients), len(op.Send.Envelope)
	case op.Event != nil:
		return 3 + len(op.Event.Recipients), len(op.Event.Payload)
	}
	return 1, 0
}

// MessageQuery selects a page of a conversation.
type MessageQuery struct {
	// Forward pages up from After (messages above it, oldest first); otherwise down
	// from Before (messages below it, newest first).
	Forward       bool
	After, Before uint64
	// Limit bounds the page, and MaxBytes its envelopes (a page holds at least one
	// message).
	Limit, MaxBytes int
	// NotBefore, when set, hides messages stored before it.
	NotBefore time.Time
}

// InboxItem is one item of an inbox: a message or an event.
type InboxItem struct {
	Sequence uint64
	Record   *storagev1.MessagingLogRecord
}

// size is the item's envelope or payload size, in bytes.
func (it InboxItem) size() int { return recordSize(it.Record) }

// recordSize is a log record's envelope or payload size, in bytes.
func recordSize(r *storagev1.MessagingLogRecord) int {
	return len(r.GetMessage().GetEnvelope()) + len(r.GetEvent().GetPayload())
}

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
		{Name: bucketLog, New: func() proto.Message { return &storagev1.MessagingLogRecord{} }},
		{Name: bucketFanout, New: func() proto.Message { return &storagev1.MessagingFanoutRecord{} }},
		{Name: bucketConversations, New: func() proto.Message { return &storagev1.ConversationRecord{} }},
		{Name: bucketParticipations, New: func() proto.Message { return &storagev1.ParticipationRecord{} }},
	},
}

// Defaults of StoreOptions.
const (
	DefaultFlushEntries = 32768
	DefaultFlushAge     = 250 * time.Millisecond
)

// StoreOptions tune a BoltStore. The zero value is right for the service.
type StoreOptions struct {
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

// BoltStore is the Store in a bbolt file. Every message and event is appended to the
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

var _ Store = (*BoltStore)(nil)

// OpenStore opens (or creates) messaging.db at path and brings its indexes up to date
// with its log.
func OpenStore(path string, opts StoreOptions) (*BoltStore, error) {
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
	return errors.Join(s.flushAll(), s.db.Close())
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
