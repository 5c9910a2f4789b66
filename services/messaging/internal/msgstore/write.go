package msgstore

import (
	"errors"
	"fmt"
	"time"

	bolt "go.etcd.io/bbolt"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/umbra-e2ee/umbra/internal/boltdb"
	"github.com/umbra-e2ee/umbra/pkg/errs"
	messagingstoragev1 "github.com/umbra-e2ee/umbra/proto/umbra/storage/messaging/v1"
)

// The writes in bbolt: Apply, and the writer that applies a batch's ops in one
// transaction and appends their log entries.

// writer applies one transaction's operations. Each operation first reads and checks,
// then writes, so that a refused operation writes nothing; its changes to the
// conversations' and inboxes' state go to the overlay, which later operations of the
// batch see and which reaches the memIndex only once the transaction has committed.
type writer struct {
	s   *BoltStore
	tx  *bolt.Tx
	ov  *overlay
	now time.Time
	ttl time.Duration

	log, fanout, convs, parts *bolt.Bucket
}

func (s *BoltStore) newWriter(tx *bolt.Tx, now time.Time, ttl time.Duration) *writer {
	w := &writer{
		s: s, tx: tx, ov: newOverlay(), now: now, ttl: ttl,
		log:    tx.Bucket(bucketLog),
		fanout: tx.Bucket(bucketFanout),
		convs:  tx.Bucket(bucketConversations),
		parts:  tx.Bucket(bucketParticipations),
	}
	// Both only ever grow at their end: fill their pages.
	w.log.FillPercent = 1
	w.fanout.FillPercent = 1
	return w
}

// Apply implements messaging.Store.
func (s *BoltStore) Apply(b *Batch) error {
	var ov *overlay
	flushed := false
	err := s.db.Update(func(tx *bolt.Tx) error {
		w := s.newWriter(tx, b.Now, b.Retention)
		ov = w.ov
		for _, op := range b.Ops {
			if err := w.apply(op); err != nil {
				return err
			}
		}
		pending, age := s.mem.entries+ov.entries, time.Duration(0)
		if s.mem.entries > 0 {
			age = time.Since(s.mem.since)
		}
		if pending >= s.flushEntries || age >= s.flushAge {
			flushed = true
			return w.flush()
		}
		return nil
	})
	if err != nil {
		for _, op := range b.Ops {
			op.Err = nil
		}
		return fmt.Errorf("messaging: store: %w", err)
	}
	b.Grown = b.Grown[:0]
	for _, in := range ov.inboxes {
		if in.head > in.base {
			b.Grown = append(b.Grown, InboxHead{AppID: in.id.app, Identity: in.id.identity, Head: in.head, Items: in.items})
		}
		in.items = nil
	}
	s.mem.merge(ov, flushed)
	return nil
}

// refuse makes damaged stored data the refusal of the one op that read it (which has
// written nothing yet), so that the rest of the batch is stored; any other error fails
// the batch.
func refuse(op *Op, err error) error {
	if errors.Is(err, errs.ErrDamaged) {
		op.Err = err
		return nil
	}
	return err
}

func (w *writer) apply(op *Op) error {
	op.Err = nil
	switch {
	case op.Send != nil:
		return w.send(op)
	case op.Event != nil:
		return w.event(op)
	case op.Cursors != nil:
		return w.cursors(op)
	}
	op.Err = ErrEmptyOp
	return nil
}

// conv returns the state of a conversation for this batch, or nil if it does not exist.
func (w *writer) conv(key string) (*memConv, error) {
	if c, ok := w.ov.convs[key]; ok {
		return c, nil
	}
	// The committer is the memIndex's only writer, so it reads it without the lock.
	if c, ok := w.s.mem.convs[key]; ok {
		own := &memConv{state: c.state, first: c.first, pending: c.pending}
		w.ov.convs[key] = own
		return own, nil
	}
	rec := &messagingstoragev1.ConversationRecord{}
	switch err := boltdb.GetProto(w.convs, []byte(key), rec); {
	case notFound(err):
		return nil, nil
	case err != nil:
		return nil, err
	}
	c := &memConv{state: stateOf(rec), first: rec.GetLatestSequence() + 1}
	w.ov.convs[key] = c
	return c, nil
}

// inbox returns the state of an inbox for this batch.
func (w *writer) inbox(app, identity string) (*memInbox, error) {
	key := key2(app, identity)
	if in, ok := w.ov.inboxes[key]; ok {
		return in, nil
	}
	if in, ok := w.s.mem.inboxes[key]; ok {
		own := &memInbox{head: in.head, first: in.first, pending: in.pending, id: in.id, base: in.head}
		w.ov.inboxes[key] = own
		return own, nil
	}
	var head uint64
	if v := w.tx.Bucket(bucketInboxHeads).Get([]byte(key)); v != nil {
		h, err := boltdb.ParseU64(v)
		if err != nil {
			return nil, fmt.Errorf("inbox head of %q: %w", key, err)
		}
		head = h
	}
	in := &memInbox{head: head, first: head + 1, id: inboxID{app, identity}, base: head}
	w.ov.inboxes[key] = in
	return in, nil
}

// lookup finds a key in the batch, then in the memIndex, then in an index bucket.
func (w *writer) lookup(key string, batch, mem map[string]uint64, bucket []byte) (uint64, bool, error) {
	if pos, ok := batch[key]; ok {
		return pos, true, nil
	}
	if pos, ok := mem[key]; ok {
		return pos, true, nil
	}
	v := w.tx.Bucket(bucket).Get([]byte(key))
	if v == nil {
		return 0, false, nil
	}
	pos, err := boltdb.ParseU64(v)
	return pos, err == nil, err
}

// entry reads the log entry at pos; nil if it was swept.
func (w *writer) entry(pos uint64) (*messagingstoragev1.MessagingLogRecord, *messagingstoragev1.MessagingFanoutRecord, error) {
	k := boltdb.U64(pos)
	v := w.log.Get(k)
	if v == nil {
		return nil, nil, nil
	}
	return decodeEntry(w.log, w.fanout, k, v)
}

// maxInlineFanout is the largest fan-out kept in its log record rather than in the
// fanout bucket: a direct message's, and small groups'.
const maxInlineFanout = 16

// putLog writes a log record, sealed. Log records are not compared byte for byte, so
// they skip deterministic marshalling.
func putLog(b *bolt.Bucket, k []byte, rec *messagingstoragev1.MessagingLogRecord) error {
	v, err := proto.MarshalOptions{}.MarshalAppend(make([]byte, 0, proto.Size(rec)+boltdb.ChecksumSize), rec)
	if err != nil {
		return fmt.Errorf("encode log entry: %w", err)
	}
	return boltdb.PutRecord(b, k, v)
}

// appendEntry appends rec and its fan-out to the log, and the items to the recipients'
// inboxes in the overlay. It returns the entry's position.
func (w *writer) appendEntry(rec *messagingstoragev1.MessagingLogRecord, app string, recipients []string) (uint64, error) {
	inboxes := make([]*memInbox, len(recipients))
	fan := &messagingstoragev1.MessagingFanoutRecord{Recipients: recipients, InboxSequences: make([]uint64, len(recipients))}
	for i, r := range recipients {
		in, err := w.inbox(app, r)
		if err != nil {
			return 0, err
		}
		inboxes[i] = in
		fan.InboxSequences[i] = in.head + 1
	}
	pos, err := w.log.NextSequence()
	if err != nil {
		return 0, err
	}
	k := boltdb.U64(pos)
	if len(recipients) <= maxInlineFanout {
		rec.Fanout = fan
	} else if err := boltdb.PutProto(w.fanout, k, fan); err != nil {
		return 0, err
	}
	if err := putLog(w.log, k, rec); err != nil {
		return 0, err
	}
	for _, in := range inboxes {
		in.head++
		in.pending = append(in.pending, pos)
		in.items = append(in.items, InboxItem{Sequence: in.head, Record: rec})
	}
	w.ov.expiry = append(w.ov.expiry, expiryEntry{at: rec.GetExpiresAt().AsTime().UnixNano(), pos: pos})
	w.ov.entries += 2 + len(recipients)
	return pos, nil
}

func (w *writer) send(op *Op) error {
	m := op.Send
	if !DirectOK(m) {
		op.Err = ErrNotDirect
		return nil
	}
	ik := key3(m.AppID, m.Sender, m.ClientMessageID)
	pos, found, err := w.lookup(ik, w.ov.idem, w.s.mem.idem, bucketIdempotency)
	if err != nil {
		return err
	}
	if found {
		rec, _, err := w.entry(pos)
		if err == nil && rec != nil && (rec.GetAppId() != m.AppID || rec.GetMessage().GetSender() != m.Sender || rec.GetMessage().GetClientMessageId() != m.ClientMessageID) {
			err = w.s.indexDamaged(bucketIdempotency, ik, pos, "is not this sender's message with this client_message_id")
		}
		if err != nil {
			return refuse(op, err)
		}
		if prev := rec.GetMessage(); prev != nil {
			if op.Err = CheckRetry(prev, m); op.Err != nil {
				return nil
			}
			m.Sequence, m.Duplicate = prev.GetSequence(), true
			m.ServerTime, m.ExpiresAt = prev.GetServerTime().AsTime(), rec.GetExpiresAt().AsTime()
			return nil
		}
	}

	ck := key2(m.AppID, m.ConversationID)
	c, err := w.conv(ck)
	if err != nil {
		return refuse(op, err)
	}
	created := c == nil
	if created {
		c = &memConv{state: convState{id: m.ConversationID, kind: m.Kind, createdAt: timestamppb.New(w.now)}, first: 1}
		if m.Kind == kindDirect {
			c.state.participants = m.Recipients
		}
		w.ov.convs[ck] = c
	}
	rec, seq, at, expires := NewMessage(m, c.state.latest, c.state.latestAt, w.now, w.ttl)
	pos, err = w.appendEntry(rec, m.AppID, m.Recipients)
	if err != nil {
		return err
	}
	c.state.latest, c.state.latestAt = seq, at
	c.pending = append(c.pending, pos)
	m.Sequence, m.ServerTime, m.ExpiresAt, m.Duplicate = seq, at, expires, false
	w.ov.idem[ik] = pos
	w.ov.entries++

	switch {
	case created && m.Kind == kindDirect:
		for i, p := range m.Recipients {
			part := &messagingstoragev1.ParticipationRecord{ConversationId: m.ConversationID, Kind: m.Kind, Peer: m.Recipients[1-i]}
			if err := boltdb.PutProto(w.parts, []byte(key3(m.AppID, p, m.ConversationID)), part); err != nil {
				return err
			}
		}
	case m.Kind == kindGroup && c.state.participantsVersion != m.MembershipVersion:
		if err := w.ensureParticipations(m.AppID, m.ConversationID, m.Recipients); err != nil {
			return err
		}
		c.state.participantsVersion = m.MembershipVersion
		created = true // write the record now, with its new version
	}
	if created {
		return boltdb.PutProto(w.convs, []byte(ck), c.state.record())
	}
	return nil
}

// ensureParticipations gives every member of a group a participation in its
// conversation, so that ListConversations lists it.
func (w *writer) ensureParticipations(app, conv string, members []string) error {
	for _, id := range members {
		k := []byte(key3(app, id, conv))
		if w.parts.Get(k) != nil {
			continue
		}
		part := &messagingstoragev1.ParticipationRecord{ConversationId: conv, Kind: kindGroup}
		if err := boltdb.PutProto(w.parts, k, part); err != nil {
			return err
		}
	}
	return nil
}

func (w *writer) event(op *Op) error {
	e := op.Event
	ek := key2(e.AppID, e.EventID)
	pos, found, err := w.lookup(ek, w.ov.events, w.s.mem.events, bucketEvents)
	if err != nil {
		return err
	}
	if found {
		rec, fan, err := w.entry(pos)
		if err == nil && rec != nil && (rec.GetAppId() != e.AppID || rec.GetEvent().GetEventId() != e.EventID) {
			err = w.s.indexDamaged(bucketEvents, ek, pos, "is not the event with this id")
		}
		if err != nil {
			return refuse(op, err)
		}
		if prev := rec.GetEvent(); prev != nil {
			if op.Err = CheckEventRetry(prev, fan.GetRecipients(), e); op.Err != nil {
				return nil
			}
			e.Duplicate, e.RecipientCount = true, len(fan.GetRecipients())
			return nil
		}
	}
	rec, _ := NewEvent(e, w.now, w.ttl)
	pos, err = w.appendEntry(rec, e.AppID, e.Recipients)
	if err != nil {
		return err
	}
	w.ov.events[ek] = pos
	w.ov.entries++
	e.RecipientCount = len(e.Recipients)
	return nil
}

func (w *writer) cursors(op *Op) error {
	u := op.Cursors
	c, err := w.conv(key2(u.AppID, u.ConversationID))
	if err != nil {
		return refuse(op, err)
	}
	var latest uint64 // a direct conversation not started yet has none
	if c != nil {
		latest = c.state.latest
	}
	if op.Err = CheckCursors(u, latest); op.Err != nil {
		return nil
	}
	k := []byte(key3(u.AppID, u.Identity, u.ConversationID))
	part := &messagingstoragev1.ParticipationRecord{}
	switch err := boltdb.GetProto(w.parts, k, part); {
	case notFound(err):
		part = NewParticipation(u)
	case err != nil:
		return refuse(op, err)
	}
	if moved := MoveCursors(part, u, w.now); moved != nil {
		part = moved
		if err := boltdb.PutProto(w.parts, k, part); err != nil {
			return err
		}
	}
	u.Cursor = part
	return nil
}

// decodeEntry checks and decodes the log record v at k, and finds its fan-out, inline
// or in the fanout bucket.
func decodeEntry(log, fanout *bolt.Bucket, k, v []byte) (*messagingstoragev1.MessagingLogRecord, *messagingstoragev1.MessagingFanoutRecord, error) {
	rec := &messagingstoragev1.MessagingLogRecord{}
	if err := boltdb.DecodeProto(log, k, v, rec); err != nil {
		return nil, nil, err
	}
	if rec.GetMessage() == nil && rec.GetEvent() == nil {
		return nil, nil, errs.Damagedf("%s: log entry %x is neither a message nor an event", log.Tx().DB().Path(), k)
	}
	fan := rec.GetFanout()
	if fan == nil {
		fan = &messagingstoragev1.MessagingFanoutRecord{}
		if err := boltdb.GetProto(fanout, k, fan); err != nil && !notFound(err) {
			return nil, nil, err
		}
	}
	if len(fan.GetRecipients()) != len(fan.GetInboxSequences()) {
		return nil, nil, errs.Damagedf("%s: the fan-out of log entry %x lists %d recipients and %d inbox sequences",
			log.Tx().DB().Path(), k, len(fan.GetRecipients()), len(fan.GetInboxSequences()))
	}
	return rec, fan, nil
}
