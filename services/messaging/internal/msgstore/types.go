package msgstore

import (
	"time"

	messagingstoragev1 "github.com/umbra-e2ee/umbra/proto/umbra/storage/messaging/v1"
)

// The types of the store's API. They are engine-neutral (no bbolt in them), so that
// another engine can take the same batches and answer the same queries.

// Batch is what the messaging service's committer hands to Apply.
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
	Kind            messagingstoragev1.ConversationRecordKind
	ClientMessageID string
	MessageKind     messagingstoragev1.StoredMessageKind
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
	Kind                            messagingstoragev1.ConversationRecordKind
	Peer                            string // direct conversations
	Delivered, Read                 uint64

	// Set by Apply: the cursors after the update.
	Cursor *messagingstoragev1.ParticipationRecord
}

// Cost is what an op adds to a batch, for the committer's bounds: the index entries it
// makes and the bytes it stores.
func (op *Op) Cost() (entries, bytes int) {
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
	Record   *messagingstoragev1.MessagingLogRecord
}

// Size is the item's envelope or payload size, in bytes.
func (it InboxItem) Size() int { return recordSize(it.Record) }

// recordSize is a log record's envelope or payload size, in bytes.
func recordSize(r *messagingstoragev1.MessagingLogRecord) int {
	return len(r.GetMessage().GetEnvelope()) + len(r.GetEvent().GetPayload())
}
