package msgstore

import (
	"bytes"
	"errors"
	"slices"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/umbra-e2ee/umbra/internal/refusal"
	"github.com/umbra-e2ee/umbra/pkg/errs"
	messagingstoragev1 "github.com/umbra-e2ee/umbra/proto/umbra/storage/messaging/v1"
)

// The checks, numbering and records of a batch's ops that do not depend on the engine:
// this engine and the service's PostgreSQL engine apply every op the same way through
// them, and only read and write the state differently.

var (
	// ErrEmptyOp refuses an Op with none of Send, Event and Cursors set.
	ErrEmptyOp = errors.New("messaging: empty operation")
	// ErrNotDirect refuses a direct message whose recipients are not its two
	// participants, sorted (DirectOK).
	ErrNotDirect = errors.New("messaging: a direct message's recipients must be its two participants, sorted")
)

// DirectOK reports whether m is a group message, or a direct one whose recipients are
// its two participants, sorted.
func DirectOK(m *SendOp) bool {
	return m.Kind != kindDirect || len(m.Recipients) == 2 && m.Recipients[0] < m.Recipients[1]
}

// SameMessage reports whether a retry carries the stored message's header and envelope.
func SameMessage(prev *messagingstoragev1.StoredMessage, m *SendOp) bool {
	return prev.GetKind() == m.MessageKind && prev.GetEpoch() == m.Epoch &&
		bytes.Equal(prev.GetSenderCardId(), m.SenderCardID) && bytes.Equal(prev.GetEnvelope(), m.Envelope)
}

// CheckRetry checks a send whose sender's client_message_id is taken by prev, the
// stored message: a retry must repeat its conversation, header and envelope. It
// returns the refusal of a send that does not, nil for a retry.
func CheckRetry(prev *messagingstoragev1.StoredMessage, m *SendOp) error {
	if prev.GetConversationId() != m.ConversationID || !SameMessage(prev, m) {
		return errs.Existsf("client_message_id %q was already used for another message (in %s); a retry must repeat the conversation, header and envelope exactly, and a new message needs a new id",
			refusal.Truncate(m.ClientMessageID), prev.GetConversationId())
	}
	return nil
}

// NewMessage numbers m as the message after latest, the latest sequence of its
// conversation, whose latest message was stored at latestAt, and returns its log
// record, with its sequence, server time and expiry. The server time is now, or
// latestAt if the clock stepped backwards: a conversation is never reordered. The
// message expires ttl after it.
func NewMessage(m *SendOp, latest uint64, latestAt, now time.Time, ttl time.Duration) (rec *messagingstoragev1.MessagingLogRecord, seq uint64, at, expires time.Time) {
	at = now
	if latestAt.After(at) {
		at = latestAt // a clock step backwards must not reorder the conversation
	}
	seq = latest + 1
	expires = at.Add(ttl)
	rec = &messagingstoragev1.MessagingLogRecord{
		AppId:     m.AppID,
		ExpiresAt: timestamppb.New(expires),
		Entry: &messagingstoragev1.MessagingLogRecord_Message{Message: &messagingstoragev1.StoredMessage{
			ConversationId:  m.ConversationID,
			Sequence:        seq,
			Sender:          m.Sender,
			Kind:            m.MessageKind,
			Epoch:           m.Epoch,
			SenderCardId:    m.SenderCardID,
			ClientMessageId: m.ClientMessageID,
			ServerTime:      timestamppb.New(at),
			Envelope:        m.Envelope,
		}},
	}
	return rec, seq, at, expires
}

// CheckEventRetry checks an event whose id is taken by prev, the stored event, stored
// for recipients: a retry must repeat it exactly. It returns the refusal of an event
// that does not, nil for a retry.
func CheckEventRetry(prev *messagingstoragev1.StoredEvent, recipients []string, e *EventOp) error {
	if prev.GetType() != e.Type || prev.GetGroupId() != e.GroupID || !bytes.Equal(prev.GetPayload(), e.Payload) ||
		!slices.Equal(recipients, e.Recipients) {
		return errs.Existsf("event_id %q was already used for another event (type, group, payload or recipients differ); a retry must repeat the event exactly", refusal.Truncate(e.EventID))
	}
	return nil
}

// NewEvent returns e's log record, created at now, and its expiry, ttl after.
func NewEvent(e *EventOp, now time.Time, ttl time.Duration) (*messagingstoragev1.MessagingLogRecord, time.Time) {
	expires := now.Add(ttl)
	return &messagingstoragev1.MessagingLogRecord{
		AppId:     e.AppID,
		ExpiresAt: timestamppb.New(expires),
		Entry: &messagingstoragev1.MessagingLogRecord_Event{Event: &messagingstoragev1.StoredEvent{
			EventId:   e.EventID,
			Type:      e.Type,
			GroupId:   e.GroupID,
			Payload:   e.Payload,
			CreatedAt: timestamppb.New(now),
		}},
	}, expires
}

// CheckCursors refuses cursors above latest, their conversation's latest sequence.
func CheckCursors(u *CursorOp, latest uint64) error {
	for _, v := range []struct {
		field string
		seq   uint64
	}{{"delivered_sequence", u.Delivered}, {"read_sequence", u.Read}} {
		if v.seq > latest {
			return errs.Invalidf("%s %d is above the conversation's latest sequence %d", v.field, v.seq, latest)
		}
	}
	return nil
}

// NewParticipation is the participation of u's identity in u's conversation before any
// cursor of it moved.
func NewParticipation(u *CursorOp) *messagingstoragev1.ParticipationRecord {
	return &messagingstoragev1.ParticipationRecord{ConversationId: u.ConversationID, Kind: u.Kind, Peer: u.Peer}
}

// MoveCursors returns a copy of part with u's cursors moved forwards (never back, and
// delivered never behind read), updated at now; nil if neither moves.
func MoveCursors(part *messagingstoragev1.ParticipationRecord, u *CursorOp, now time.Time) *messagingstoragev1.ParticipationRecord {
	read := max(part.GetReadSequence(), u.Read)
	delivered := max(part.GetDeliveredSequence(), u.Delivered, read)
	if read == part.GetReadSequence() && delivered == part.GetDeliveredSequence() {
		return nil
	}
	rec := proto.CloneOf(part) // an earlier op's result may hold part
	rec.ReadSequence, rec.DeliveredSequence = read, delivered
	rec.CursorUpdatedAt = timestamppb.New(now)
	return rec
}
