package msgstore

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"time"

	bolt "go.etcd.io/bbolt"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/umbra-e2ee/umbra/internal/boltdb"
	"github.com/umbra-e2ee/umbra/pkg/errs"
	messagingstoragev1 "github.com/umbra-e2ee/umbra/proto/umbra/storage/messaging/v1"
)

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

// Flush implements messaging.Store: it writes the pending index entries down once the
// oldest has waited FlushAge.
func (s *BoltStore) Flush() (bool, error) {
	switch n, age := s.mem.pendingCount(); {
	case n == 0:
		return false, nil
	case age < s.flushAge:
		return true, nil
	}
	return false, s.FlushAll()
}

// FlushAll writes every pending index entry down, whatever its age. It is a write:
// like Apply, it must not run concurrently with the other writes.
func (s *BoltStore) FlushAll() error {
	if n, _ := s.mem.pendingCount(); n == 0 {
		return nil
	}
	err := s.db.Update(func(tx *bolt.Tx) error {
		return s.newWriter(tx, time.Time{}, 0).flush()
	})
	if err != nil {
		return fmt.Errorf("messaging: store: flush: %w", err)
	}
	s.mem.merge(nil, true)
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

// flush writes every pending index entry, the memIndex's and the batch's, and records
// that the indexes now cover the whole log. Each bucket's entries are put in key order,
// so that bbolt walks each tree once from left to right instead of jumping about it in
// the maps' order.
func (w *writer) flush() error {
	mem := w.s.mem
	var msgs, inbox, heads, convs, idem, events sortedPuts
	for i, cs := range []map[string]*memConv{mem.convs, w.ov.convs} {
		for k, c := range cs {
			if i == 0 && w.ov.convs[k] != nil || len(c.pending) == 0 {
				continue // the batch's copy supersedes it
			}
			for i, pos := range c.pending {
				msgs.add(seqKey(k, c.first+uint64(i)), boltdb.U64(pos))
			}
			v, err := proto.Marshal(c.state.record())
			if err != nil {
				return err
			}
			convs.add([]byte(k), boltdb.Seal([]byte(k), v))
		}
	}
	for i, inboxes := range []map[string]*memInbox{mem.inboxes, w.ov.inboxes} {
		for k, in := range inboxes {
			if i == 0 && w.ov.inboxes[k] != nil || len(in.pending) == 0 {
				continue
			}
			for i, pos := range in.pending {
				inbox.add(seqKey(k, in.first+uint64(i)), boltdb.U64(pos))
			}
			heads.add([]byte(k), boltdb.U64(in.head))
		}
	}
	for _, p := range []struct {
		puts       *sortedPuts
		mem, batch map[string]uint64
	}{{&idem, mem.idem, w.ov.idem}, {&events, mem.events, w.ov.events}} {
		for _, m := range []map[string]uint64{p.mem, p.batch} {
			for k, pos := range m {
				p.puts.add([]byte(k), boltdb.U64(pos))
			}
		}
	}
	for _, p := range []struct {
		bucket []byte
		puts   *sortedPuts
		fill   float64
	}{
		// Mostly appends at the end of each conversation's or inbox's range.
		{bucketMessages, &msgs, 0.9}, {bucketInbox, &inbox, 0.9}, {bucketInboxHeads, &heads, 0.9},
		{bucketConversations, &convs, bolt.DefaultFillPercent},
		{bucketIdempotency, &idem, bolt.DefaultFillPercent}, {bucketEvents, &events, bolt.DefaultFillPercent},
	} {
		b := w.tx.Bucket(p.bucket)
		b.FillPercent = p.fill
		if err := p.puts.put(b); err != nil {
			return err
		}
	}
	exp := w.tx.Bucket(bucketExpiry)
	exp.FillPercent = 0.9
	// One entry per run of consecutive positions expiring at the same time.
	var run *expiryEntry
	var last uint64
	for _, list := range [][]expiryEntry{mem.expiry, w.ov.expiry} {
		for _, e := range list {
			if run != nil && e.at == run.at && e.pos == last+1 {
				last = e.pos
				continue
			}
			if run != nil {
				if err := exp.Put(expiryKey(run.at, run.pos), boltdb.U64(last)); err != nil {
					return err
				}
			}
			run, last = &e, e.pos
		}
	}
	if run != nil {
		if err := exp.Put(expiryKey(run.at, run.pos), boltdb.U64(last)); err != nil {
			return err
		}
	}
	return w.tx.Bucket(bucketIndexState).Put(keyIndexedThrough, boltdb.U64(w.log.Sequence()))
}

// indexEntry writes the index entries of one log entry, as a flush would have: opening
// the store calls it for the entries the indexes did not cover yet. It is idempotent.
func indexEntry(tx *bolt.Tx, pos uint64, rec *messagingstoragev1.MessagingLogRecord, fan *messagingstoragev1.MessagingFanoutRecord) error {
	app, p := rec.GetAppId(), boltdb.U64(pos)
	heads := tx.Bucket(bucketInboxHeads)
	for i, r := range fan.GetRecipients() {
		seq := fan.GetInboxSequences()[i]
		k := key2(app, r)
		if err := tx.Bucket(bucketInbox).Put(seqKey(k, seq), p); err != nil {
			return err
		}
		if v := heads.Get([]byte(k)); v != nil {
			if head, err := boltdb.ParseU64(v); err != nil || head >= seq {
				if err != nil {
					return err
				}
				continue
			}
		}
		if err := heads.Put([]byte(k), boltdb.U64(seq)); err != nil {
			return err
		}
	}
	if err := tx.Bucket(bucketExpiry).Put(expiryKey(rec.GetExpiresAt().AsTime().UnixNano(), pos), p); err != nil {
		return err
	}
	if ev := rec.GetEvent(); ev != nil {
		return tx.Bucket(bucketEvents).Put([]byte(key2(app, ev.GetEventId())), p)
	}
	m := rec.GetMessage()
	ck := key2(app, m.GetConversationId())
	if err := tx.Bucket(bucketMessages).Put(seqKey(ck, m.GetSequence()), p); err != nil {
		return err
	}
	if err := tx.Bucket(bucketIdempotency).Put([]byte(key3(app, m.GetSender(), m.GetClientMessageId())), p); err != nil {
		return err
	}
	convs := tx.Bucket(bucketConversations)
	conv := &messagingstoragev1.ConversationRecord{}
	if err := boltdb.GetProto(convs, []byte(ck), conv); err != nil {
		// The record is written in the transaction that appends the first message.
		return fmt.Errorf("conversation %s of message %d: %w", m.GetConversationId(), m.GetSequence(), err)
	}
	if conv.GetLatestSequence() >= m.GetSequence() {
		return nil
	}
	conv.LatestSequence, conv.LatestMessageAt = m.GetSequence(), m.GetServerTime()
	return boltdb.PutProto(convs, []byte(ck), conv)
}

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

// sortedPuts collects a bucket's puts to make them in key order.
type sortedPuts []struct{ k, v []byte }

func (p *sortedPuts) add(k, v []byte) { *p = append(*p, struct{ k, v []byte }{k, v}) }

func (p sortedPuts) put(b *bolt.Bucket) error {
	slices.SortFunc(p, func(x, y struct{ k, v []byte }) int { return bytes.Compare(x.k, y.k) })
	for _, kv := range p {
		if err := b.Put(kv.k, kv.v); err != nil {
			return err
		}
	}
	return nil
}
