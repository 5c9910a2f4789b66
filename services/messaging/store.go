package messaging

import (
	"context"
	"errors"
	"time"

	"github.com/umbra-e2ee/umbra/pkg/errs"
	messagingstoragev1 "github.com/umbra-e2ee/umbra/proto/umbra/storage/messaging/v1"
	"github.com/umbra-e2ee/umbra/services/messaging/internal/msgstore"
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
	Sent(appID, sender, clientMessageID string) (*messagingstoragev1.MessagingLogRecord, error)
	// Conversation returns a conversation's record, or an errs.ErrNotFound.
	Conversation(appID, conversationID string) (*messagingstoragev1.ConversationRecord, error)
	// HasMessage reports whether the message at seq is still stored.
	HasMessage(appID, conversationID string, seq uint64) (bool, error)
	// Messages returns a page of a conversation's stored messages, and whether the
	// conversation holds more in the same direction.
	Messages(appID, conversationID string, q MessageQuery) ([]*messagingstoragev1.MessagingLogRecord, bool, error)
	// Inbox returns the stored items of an inbox above after, in order, up to limit
	// items or maxBytes of envelopes and payloads (at least one item), and the inbox's
	// latest sequence.
	Inbox(appID, identity string, after uint64, limit, maxBytes int) ([]InboxItem, uint64, error)
	// InboxHead returns an inbox's latest sequence; 0 for an empty inbox.
	InboxHead(appID, identity string) (uint64, error)
	// Participation returns an identity's part in a conversation, or an
	// errs.ErrNotFound.
	Participation(appID, identity, conversationID string) (*messagingstoragev1.ParticipationRecord, error)
	// Participations returns up to limit of an identity's conversations with an id
	// above after, in id order.
	Participations(appID, identity, after string, limit int) ([]*messagingstoragev1.ParticipationRecord, error)

	// AppSettings returns an app's settings, or an errs.ErrNotFound for an app that
	// has the defaults; PutAppSettings stores them, durable when it returns
	// (appsettings.go).
	AppSettings(appID string) (*messagingstoragev1.MessagingAppSettingsRecord, error)
	PutAppSettings(rec *messagingstoragev1.MessagingAppSettingsRecord) error

	// Watch tells changed, until ctx ends, of the inboxes that other writers over the
	// same storage (other replicas of the service) made grow: their new heads, and
	// optionally their new items (all of them, from the head watching gave to the new
	// one, or none), for the streams to take from memory. watching returns the inboxes
	// to watch, with the heads known already; an engine that may miss a wake-up
	// re-reads those now and then, so that a lost one only delays. An engine whose storage has one writer (bbolt) has nothing to tell:
	// the committer's own wake-ups are all there are. The service runs it from Run.
	Watch(ctx context.Context, watching func() []InboxHead, changed func([]InboxHead))

	Close() error
}

// The types Store's methods take and return. The engine package defines them, as it
// cannot import this one; they hold no engine's types, so that another engine can take
// the same batches and answer the same queries.
type (
	// Batch is what the committer hands to Store.Apply: Ops, each an Op with exactly
	// one of SendOp, EventOp and CursorOp; Apply sets Grown, the InboxHead of every
	// inbox that received items.
	Batch     = msgstore.Batch
	Op        = msgstore.Op
	SendOp    = msgstore.SendOp
	EventOp   = msgstore.EventOp
	CursorOp  = msgstore.CursorOp
	InboxHead = msgstore.InboxHead
	// MessageQuery selects a page of a conversation (Store.Messages).
	MessageQuery = msgstore.MessageQuery
	// InboxItem is one item of an inbox: a message or an event (Store.Inbox).
	InboxItem = msgstore.InboxItem
)

// notFound reports whether err is a missing record.
func notFound(err error) bool { return errors.Is(err, errs.ErrNotFound) }
