package messaging

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"go.uber.org/zap"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/umbra-e2ee/umbra/internal/pgdb"
	"github.com/umbra-e2ee/umbra/internal/refusal"
	"github.com/umbra-e2ee/umbra/pkg/errs"
	messagingstoragev1 "github.com/umbra-e2ee/umbra/proto/umbra/storage/messaging/v1"
	"github.com/umbra-e2ee/umbra/services/messaging/internal/msgstore"
)

// Apply in PostgreSQL: one transaction per batch, as the bbolt engine's, whichever
// replica runs it. In one round trip (a pipeline) it
//
//  1. locks the rows of the batch's conversations (FOR UPDATE, in key order; a
//     conversation's first message inserts its row first), so that replicas take
//     turns per conversation and each numbers from the sequence the previous one
//     committed;
//  2. looks the batch's idempotency keys and event ids up, under those locks;
//  3. locks the inbox heads of the recipients (in key order, after the
//     conversations: no two batches wait for each other in a cycle), and reads the
//     participations the ops may change;
//
// then it checks and numbers every op in order, in memory, as the bbolt engine does,
// and in a second round trip writes every table with one multi-row statement each.
//
// Two sends with one idempotency key into different conversations hold different
// locks; the key's primary key then stores it once: the batch that finds it taken
// by a commit of another replica's runs again from the start, and finds the message
// stored. Nothing of a batch is written unless all of it is.

// applyAttempts bounds the runs of one batch that find their keys taken by other
// replicas, or partitions missing.
const applyAttempts = 8

// errKeyTaken is a batch that found an idempotency key or event id it stores taken by
// another replica's commit since it looked: it runs again.
var errKeyTaken = errors.New("an idempotency key or event id was stored by another replica meanwhile")

// needPartitions is a batch whose expiry times need partitions this store does not
// know: it makes them and runs again.
type needPartitions struct{ lo, hi int64 }

func (e *needPartitions) Error() string { return "time partitions missing" }

// Apply implements Store.
func (s *PostgresStore) Apply(b *Batch) error {
	if b.Retention > 0 {
		s.retention.Store(int64(b.Retention))
	}
	ctx, cancel := s.ctx()
	defer cancel()
	var err error
	for attempt := 1; attempt <= applyAttempts; attempt++ {
		run := newPgBatch(b)
		err = s.inPipelinedTx(ctx, func(conn *pgx.Conn) error { return run.apply(ctx, conn, s) })
		if err == nil {
			run.publish(b)
			return nil
		}
		var need *needPartitions
		var pg *pgconn.PgError
		switch {
		case errors.As(err, &need):
			err = s.ensurePartitions(ctx, need.lo, need.hi)
		case errors.As(err, &pg) && pg.Code == "23514" && strings.Contains(pg.Message, "no partition"):
			// Another replica dropped a partition this store still knew (clocks apart):
			// read them again.
			s.parts.set(nil)
			err = nil
		case errors.Is(err, errKeyTaken) || pgdb.IsUniqueViolation(err):
			// A key, a participation or an inbox item stored by another replica since
			// the batch looked: the next run finds it.
			err = nil
		case errors.As(err, &pg) && (pg.Code == "40001" || pg.Code == "40P01"):
			// Aborted for a concurrent transaction (a deadlock): run again after a
			// moment, as pgdb.DB.InTx does.
			backoff := min(time.Duration(1<<attempt)*time.Millisecond, 100*time.Millisecond)
			select {
			case <-ctx.Done():
			case <-time.After(backoff + rand.N(backoff)):
				err = nil
			}
		}
		if err != nil {
			break
		}
	}
	if err == nil {
		err = errors.New("the batch found its keys taken or its partitions missing at every attempt")
	}
	for _, op := range b.Ops {
		op.Err = nil
	}
	return fmt.Errorf("messaging: store: %w", s.db.Err(err))
}

// inPipelinedTx runs fn on a connection of the pool, which fn uses as one transaction
// it begins and commits itself, in its pipelines (BEGIN before its reads, COMMIT after
// its writes: two round trips for a batch instead of four). Whatever fn leaves
// unfinished is rolled back.
func (s *PostgresStore) inPipelinedTx(ctx context.Context, fn func(*pgx.Conn) error) error {
	conn, err := s.db.Pool.Acquire(ctx)
	if err != nil {
		return err
	}
	defer conn.Release() // a connection still in a transaction is closed, not reused
	err = fn(conn.Conn())
	if err != nil && conn.Conn().PgConn().TxStatus() != 'I' {
		_, _ = conn.Conn().Exec(ctx, "ROLLBACK")
	}
	return err
}

// pgBatch is one run of a batch: what it read and locked, and what it will write.
// Nothing reaches the batch's ops before the transaction has committed (publish).
type pgBatch struct {
	b    *Batch
	from string // the store's id, in its wake-ups
	log  *zap.Logger
	now  time.Time
	ttl  time.Duration

	results []opResult
	convs   map[string]*pgConv  // app 0 conversation_id
	created map[string]bool     // conversations whose row this run inserted
	sent    map[string]*pgEntry // app 0 sender 0 client_message_id
	events  map[string]*pgEntry // app 0 event_id
	// The keys whose stored message or event has expired: stored again over the row.
	expiredKeys, expiredEvents map[string]bool
	inboxes                    map[string]*pgInbox // app 0 identity
	parts                      map[string]*pgPart  // app 0 identity 0 conversation_id
	grown                      []*pgInbox          // in the order they first grew

	msgRows   msgRows
	eventRows eventRows
	inboxRows inboxRows
}

// opResult is what Apply tells an op, once committed.
type opResult struct {
	err                 error
	seq                 uint64
	serverTime, expires time.Time
	duplicate           bool
	recipients          int
	cursor              *messagingstoragev1.ParticipationRecord
}

type pgConv struct {
	app, id  string
	rec      *messagingstoragev1.ConversationRecord // nil while it has no message
	latestAt time.Time
	err      error // its stored record is damaged
	dirty    bool  // its latest sequence and time moved
	recDirty bool  // its record changed too (made, or its member list)
}

// pgEntry is a stored message or event, found by its key: in the database or earlier
// in the batch.
type pgEntry struct {
	rec *messagingstoragev1.MessagingLogRecord
	fan []string // an event's recipients
	err error    // the entry is damaged
}

type pgInbox struct {
	app, identity string
	base, head    uint64
	planned       uint64 // the head the batch moved it to before numbering its items
	items         []InboxItem
}

type pgPart struct {
	rec    *messagingstoragev1.ParticipationRecord
	err    error
	stored bool // the row exists: update it, else insert it
	dirty  bool
	unread bool // made by ensurePart without reading: inserted unless there is one
}

func newPgBatch(b *Batch) *pgBatch {
	return &pgBatch{
		b: b, now: b.Now, ttl: b.Retention,
		results: make([]opResult, len(b.Ops)),
		convs:   map[string]*pgConv{},
		created: map[string]bool{},
		sent:    map[string]*pgEntry{},
		events:  map[string]*pgEntry{},

		expiredKeys: map[string]bool{}, expiredEvents: map[string]bool{},
		inboxes: map[string]*pgInbox{},
		parts:   map[string]*pgPart{},
	}
}

func key3(a, b, c string) string { return a + "\x00" + b + "\x00" + c }

// pairs is a set of (a, b) keys, given to SQL as two arrays in byte order: the order in
// which every batch takes its locks.
type pairs map[[2]string]bool

func (p pairs) arrays() ([]string, []string) {
	keys := make([][2]string, 0, len(p))
	for k := range p {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, func(x, y [2]string) int {
		if c := strings.Compare(x[0], y[0]); c != 0 {
			return c
		}
		return strings.Compare(x[1], y[1])
	})
	a, b := make([]string, len(keys)), make([]string, len(keys))
	for i, k := range keys {
		a[i], b[i] = k[0], k[1]
	}
	return a, b
}

func (p *pgBatch) apply(ctx context.Context, tx *pgx.Conn, s *PostgresStore) error {
	p.from, p.log = s.id, s.log
	// 1. The transaction's start and everything the ops read, in one round trip (a
	// pipeline: the statements run one after the other, each seeing what the ones
	// before it committed or locked).
	var q pgx.Batch
	q.Queue("BEGIN")
	p.queueConversations(&q)
	p.queueLookups(&q)
	heads := p.queueInboxes(&q)
	p.queueParticipations(&q, p.partKeys(false))
	if err := tx.SendBatch(ctx, &q).Close(); err != nil {
		return err
	}
	if len(p.inboxes) != len(heads) {
		return fmt.Errorf("locked %d inbox heads of %d", len(p.inboxes), len(heads))
	}
	// 2. The participations of the groups whose member list changed: rare, so read
	// apart rather than every member's with every batch.
	if keys := p.partKeys(true); len(keys) > 0 {
		var q pgx.Batch
		p.queueParticipations(&q, keys)
		if err := tx.SendBatch(ctx, &q).Close(); err != nil {
			return err
		}
	}

	// 3. Every op in order.
	for i, op := range p.b.Ops {
		switch {
		case op.Send != nil:
			p.send(i, op.Send)
		case op.Event != nil:
			p.event(i, op.Event)
		case op.Cursors != nil:
			p.cursors(i, op.Cursors)
		default:
			p.results[i].err = msgstore.ErrEmptyOp
		}
	}
	if lo, hi, ok := p.expiries(); ok && !s.parts.covers(lo, hi) {
		return &needPartitions{lo, hi}
	}

	// 4. The writes and the commit, in one round trip.
	return p.write(ctx, tx)
}

// conversationRecord reads a conversations row: its record, with the latest sequence
// and time of the row's columns (a row from before migration 00002 has its time in
// the record only: at is NULL).
func conversationRecord(key string, raw []byte, seq int64, at *int64) (*messagingstoragev1.ConversationRecord, error) {
	rec := &messagingstoragev1.ConversationRecord{}
	if err := decodeRecord("conversations", key, raw, rec); err != nil {
		return nil, err
	}
	rec.LatestSequence = uint64(seq)
	if at != nil {
		rec.LatestMessageAt = timestamppb.New(time.Unix(0, *at))
	}
	return rec, nil
}

func latestAt(rec *messagingstoragev1.ConversationRecord) time.Time {
	if rec.GetLatestMessageAt() == nil {
		return time.Time{}
	}
	return rec.GetLatestMessageAt().AsTime()
}

// queueConversations inserts the rows of the conversations that may get their first
// message, then locks the rows of every conversation of the batch, in key order.
func (p *pgBatch) queueConversations(q *pgx.Batch) {
	sendConvs, allConvs := pairs{}, pairs{}
	for _, op := range p.b.Ops {
		switch {
		case op.Send != nil && msgstore.DirectOK(op.Send):
			sendConvs[[2]string{op.Send.AppID, op.Send.ConversationID}] = true
			allConvs[[2]string{op.Send.AppID, op.Send.ConversationID}] = true
		case op.Cursors != nil:
			allConvs[[2]string{op.Cursors.AppID, op.Cursors.ConversationID}] = true
		}
	}
	for k := range allConvs { // a cursor's conversation without messages has no row
		p.convs[key2(k[0], k[1])] = &pgConv{app: k[0], id: k[1]}
	}
	if len(sendConvs) > 0 {
		apps, ids := sendConvs.arrays()
		q.Queue(`
			INSERT INTO conversations (app_id, conversation_id, latest_sequence, record)
			SELECT a, c, 0, '' FROM unnest($1::text[], $2::text[]) WITH ORDINALITY AS t(a, c, n) ORDER BY n
			ON CONFLICT DO NOTHING RETURNING app_id, conversation_id`, apps, ids).Query(func(rows pgx.Rows) error {
			var app, id string
			_, err := pgx.ForEachRow(rows, []any{&app, &id}, func() error {
				p.created[key2(app, id)] = true
				return nil
			})
			return err
		})
	}
	if len(allConvs) > 0 {
		apps, ids := allConvs.arrays()
		q.Queue(`
			SELECT c.app_id, c.conversation_id, c.record, c.latest_sequence, c.latest_at FROM conversations c
			JOIN unnest($1::text[], $2::text[]) AS t(a, id) ON c.app_id = t.a AND c.conversation_id = t.id
			ORDER BY c.app_id, c.conversation_id FOR UPDATE OF c`, apps, ids).Query(func(rows pgx.Rows) error {
			var app, id string
			var raw []byte
			var seq int64
			var at *int64
			_, err := pgx.ForEachRow(rows, []any{&app, &id, &raw, &seq, &at}, func() error {
				k := key2(app, id)
				if p.created[k] {
					return nil
				}
				c := p.convs[k]
				if c.rec, c.err = conversationRecord(app+"/"+id, raw, seq, at); c.err == nil {
					c.latestAt = latestAt(c.rec)
				}
				return nil
			})
			return err
		})
	}
}

// queueLookups finds the stored, unexpired messages and events of the batch's keys.
func (p *pgBatch) queueLookups(q *pgx.Batch) {
	var apps, senders []string
	var cmids [][]byte
	var eapps []string
	var eids [][]byte
	for _, op := range p.b.Ops {
		switch {
		case op.Send != nil:
			apps, senders, cmids = append(apps, op.Send.AppID), append(senders, op.Send.Sender), append(cmids, []byte(op.Send.ClientMessageID))
		case op.Event != nil:
			eapps, eids = append(eapps, op.Event.AppID), append(eids, []byte(op.Event.EventID))
		}
	}
	if len(apps) > 0 {
		// One index lookup per key (LATERAL ... LIMIT 1 keeps the planner from joining
		// the whole table, whatever its statistics say). A key whose message has
		// expired is reported apart: the batch may store it again, over the old row.
		q.Queue(`
			SELECT k.a, k.s, k.c, l.live, l.record
			FROM unnest($1::text[], $2::text[], $3::bytea[]) AS k(a, s, c)
			CROSS JOIN LATERAL (
				SELECT i.expires_at > `+horizon+` AS live, m.record FROM idempotency i
				LEFT JOIN messages m ON i.expires_at > `+horizon+` AND m.app_id = i.app_id AND m.conversation_id = i.conversation_id
					AND m.sequence = i.sequence AND m.expires_at = i.expires_at
				WHERE i.app_id = k.a AND i.sender = k.s AND i.client_message_id = k.c
				LIMIT 1) AS l`, apps, senders, cmids).Query(func(rows pgx.Rows) error {
			var app, sender string
			var cmid, raw []byte
			var live bool
			_, err := pgx.ForEachRow(rows, []any{&app, &sender, &cmid, &live, &raw}, func() error {
				k := key3(app, sender, string(cmid))
				if !live {
					p.expiredKeys[k] = true
					return nil
				}
				e := &pgEntry{rec: &messagingstoragev1.MessagingLogRecord{}}
				if raw == nil {
					e.err = errs.Damagedf("messaging store: %s.idempotency: the key of %s's client_message_id %q points at a message that is not stored", Schema, sender, refusal.Truncate(string(cmid)))
				} else {
					e.err = decodeRecord("messages", k, raw, e.rec)
				}
				if e.err == nil && (e.rec.GetAppId() != app || e.rec.GetMessage().GetSender() != sender || e.rec.GetMessage().GetClientMessageId() != string(cmid)) {
					e.err = errs.Damagedf("messaging store: %s.idempotency: the key of %s's client_message_id %q points at another message", Schema, sender, refusal.Truncate(string(cmid)))
				}
				p.sent[k] = e
				return nil
			})
			return err
		})
	}
	if len(eapps) > 0 {
		q.Queue(`
			SELECT k.a, k.e, l.live, l.record, l.fanout
			FROM unnest($1::text[], $2::bytea[]) AS k(a, e)
			CROSS JOIN LATERAL (
				SELECT i.expires_at > `+horizon+` AS live, ev.record, ev.fanout FROM event_ids i
				LEFT JOIN events ev ON i.expires_at > `+horizon+` AND ev.app_id = i.app_id AND ev.event_id = i.event_id AND ev.expires_at = i.expires_at
				WHERE i.app_id = k.a AND i.event_id = k.e
				LIMIT 1) AS l`, eapps, eids).Query(func(rows pgx.Rows) error {
			var app string
			var id, raw, fan []byte
			var live bool
			_, err := pgx.ForEachRow(rows, []any{&app, &id, &live, &raw, &fan}, func() error {
				k := key2(app, string(id))
				if !live {
					p.expiredEvents[k] = true
					return nil
				}
				e := &pgEntry{rec: &messagingstoragev1.MessagingLogRecord{}}
				f := &messagingstoragev1.MessagingFanoutRecord{}
				if raw == nil {
					e.err = errs.Damagedf("messaging store: %s.event_ids: event %q points at an event that is not stored", Schema, refusal.Truncate(string(id)))
				} else if e.err = decodeRecord("events", k, raw, e.rec); e.err == nil {
					e.err = decodeRecord("events", k, fan, f)
				}
				if e.err == nil && (e.rec.GetAppId() != app || e.rec.GetEvent().GetEventId() != string(id)) {
					e.err = errs.Damagedf("messaging store: %s.event_ids: event %q points at another event", Schema, refusal.Truncate(string(id)))
				}
				e.fan = f.GetRecipients()
				p.events[k] = e
				return nil
			})
			return err
		})
	}
}

// queueInboxes moves the inbox head of every recipient of the batch forward by the
// items the batch would add to it if every op stored (inserting the heads of new
// inboxes), in key order, in one statement: that locks the heads, as conversations
// are locked, and returns where each inbox's new items start. An op that stores less
// (a retry, a refused op) is known only once the lookups have answered, and waiting
// for them would take a round trip more: the writes then put the heads it did not
// use back, in the same transaction (write), so that no other batch ever sees them.
func (p *pgBatch) queueInboxes(q *pgx.Batch) pairs {
	heads := pairs{}
	planned := map[[2]string]int64{}
	for _, op := range p.b.Ops {
		switch {
		case op.Send != nil && msgstore.DirectOK(op.Send):
			for _, r := range op.Send.Recipients {
				heads[[2]string{op.Send.AppID, r}] = true
				planned[[2]string{op.Send.AppID, r}]++
			}
		case op.Event != nil:
			for _, r := range op.Event.Recipients {
				heads[[2]string{op.Event.AppID, r}] = true
				planned[[2]string{op.Event.AppID, r}]++
			}
		}
	}
	if len(heads) == 0 {
		return heads
	}
	apps, ids := heads.arrays()
	counts := make([]int64, len(apps))
	for i := range apps {
		counts[i] = planned[[2]string{apps[i], ids[i]}]
	}
	q.Queue(`
		INSERT INTO inbox_heads AS h (app_id, identity, head)
		SELECT a, i, c FROM unnest($1::text[], $2::text[], $3::bigint[]) WITH ORDINALITY AS t(a, i, c, n) ORDER BY n
		ON CONFLICT (app_id, identity) DO UPDATE SET head = h.head + EXCLUDED.head
		RETURNING h.app_id, h.identity, h.head`, apps, ids, counts).Query(func(rows pgx.Rows) error {
		var app, id string
		var head int64
		_, err := pgx.ForEachRow(rows, []any{&app, &id, &head}, func() error {
			n := planned[[2]string{app, id}]
			base := uint64(head - n)
			p.inboxes[key2(app, id)] = &pgInbox{app: app, identity: id, base: base, head: base, planned: uint64(head)}
			return nil
		})
		return err
	})
	return heads
}

// partKeys returns the participations the ops may change: the cursors' (false); or
// those of the groups whose member list changed since their last message (true), once
// the conversations are read. Each conversation's participations change only under its
// row's lock, which the batch holds, so they are read without a lock of their own. A
// direct conversation's two are made with its first message, by the batch that
// inserted its row (ensurePart), and are not read: a cursor writes none before the
// conversation has a message.
func (p *pgBatch) partKeys(groups bool) map[[3]string]bool {
	keys := map[[3]string]bool{}
	for _, op := range p.b.Ops {
		switch m := op.Send; {
		case m != nil && msgstore.DirectOK(m) && groups && m.Kind == kindGroup:
			c := p.convs[key2(m.AppID, m.ConversationID)]
			if c.err == nil && c.rec.GetParticipantsVersion() != m.MembershipVersion {
				for _, r := range m.Recipients {
					if p.parts[key3(m.AppID, r, m.ConversationID)] == nil {
						keys[[3]string{m.AppID, r, m.ConversationID}] = true
					}
				}
			}
		case op.Cursors != nil && !groups:
			keys[[3]string{op.Cursors.AppID, op.Cursors.Identity, op.Cursors.ConversationID}] = true
		}
	}
	return keys
}

// queueParticipations reads the participations of keys.
func (p *pgBatch) queueParticipations(q *pgx.Batch, keys map[[3]string]bool) {
	if len(keys) == 0 {
		return
	}
	var apps, ids, convs []string
	for k := range keys {
		apps, ids, convs = append(apps, k[0]), append(ids, k[1]), append(convs, k[2])
	}
	q.Queue(`
		SELECT p.app_id, p.identity, p.conversation_id, p.record FROM participations p
		JOIN unnest($1::text[], $2::text[], $3::text[]) AS t(a, i, c) ON p.app_id = t.a AND p.identity = t.i AND p.conversation_id = t.c`,
		apps, ids, convs).Query(func(rows pgx.Rows) error {
		var app, id, conv string
		var raw []byte
		_, err := pgx.ForEachRow(rows, []any{&app, &id, &conv, &raw}, func() error {
			k := key3(app, id, conv)
			part := &pgPart{rec: &messagingstoragev1.ParticipationRecord{}, stored: true}
			part.err = decodeRecord("participations", k, raw, part.rec)
			p.parts[k] = part
			return nil
		})
		return err
	})
}

// appendEntry adds rec's items to the recipients' inboxes.
func (p *pgBatch) appendEntry(rec *messagingstoragev1.MessagingLogRecord, app string, recipients []string, expires int64, conv *string, seq *int64, event []byte) {
	for _, r := range recipients {
		in := p.inboxes[key2(app, r)] // locked: every recipient of an op that stores
		if in.head == in.base {
			p.grown = append(p.grown, in)
		}
		in.head++
		in.items = append(in.items, InboxItem{Sequence: in.head, Record: rec})
		p.inboxRows.add(app, r, int64(in.head), expires, conv, seq, event)
	}
}

func (p *pgBatch) send(i int, m *SendOp) {
	r := &p.results[i]
	if !msgstore.DirectOK(m) {
		r.err = msgstore.ErrNotDirect
		return
	}
	ik := key3(m.AppID, m.Sender, m.ClientMessageID)
	if prev := p.sent[ik]; prev != nil {
		if prev.err != nil {
			r.err = prev.err
			return
		}
		pm := prev.rec.GetMessage()
		if r.err = msgstore.CheckRetry(pm, m); r.err != nil {
			return
		}
		r.seq, r.duplicate = pm.GetSequence(), true
		r.serverTime, r.expires = pm.GetServerTime().AsTime(), prev.rec.GetExpiresAt().AsTime()
		return
	}
	c := p.convs[key2(m.AppID, m.ConversationID)]
	if c.err != nil {
		r.err = c.err
		return
	}
	created := c.rec == nil
	if created {
		c.recDirty = true
		c.rec = &messagingstoragev1.ConversationRecord{ConversationId: m.ConversationID, Kind: m.Kind, CreatedAt: timestamppb.New(p.now)}
		if m.Kind == kindDirect {
			c.rec.Participants = m.Recipients
		}
	}
	rec, seq, at, expires := msgstore.NewMessage(m, c.rec.GetLatestSequence(), c.latestAt, p.now, p.ttl)
	conv, sq := m.ConversationID, int64(seq)
	p.appendEntry(rec, m.AppID, m.Recipients, expires.UnixNano(), &conv, &sq, nil)
	p.msgRows.add(m, seq, expires.UnixNano(), at.UnixNano(), rec)
	c.rec.LatestSequence, c.rec.LatestMessageAt, c.latestAt, c.dirty = seq, timestamppb.New(at), at, true
	p.sent[ik] = &pgEntry{rec: rec}
	r.seq, r.serverTime, r.expires = seq, at, expires

	switch {
	case created && m.Kind == kindDirect:
		for j, id := range m.Recipients {
			p.ensurePart(m.AppID, id, &messagingstoragev1.ParticipationRecord{ConversationId: m.ConversationID, Kind: m.Kind, Peer: m.Recipients[1-j]})
		}
	case m.Kind == kindGroup && c.rec.GetParticipantsVersion() != m.MembershipVersion:
		for _, id := range m.Recipients {
			p.ensurePart(m.AppID, id, &messagingstoragev1.ParticipationRecord{ConversationId: m.ConversationID, Kind: kindGroup})
		}
		c.rec.ParticipantsVersion, c.recDirty = m.MembershipVersion, true
	}
}

// ensurePart gives identity a participation in rec's conversation unless it has one.
func (p *pgBatch) ensurePart(app, identity string, rec *messagingstoragev1.ParticipationRecord) {
	k := key3(app, identity, rec.GetConversationId())
	if p.parts[k] == nil {
		p.parts[k] = &pgPart{rec: rec, dirty: true, unread: true}
	}
}

func (p *pgBatch) event(i int, e *EventOp) {
	r := &p.results[i]
	ek := key2(e.AppID, e.EventID)
	if prev := p.events[ek]; prev != nil {
		if prev.err != nil {
			r.err = prev.err
			return
		}
		if r.err = msgstore.CheckEventRetry(prev.rec.GetEvent(), prev.fan, e); r.err != nil {
			return
		}
		r.duplicate, r.recipients = true, len(prev.fan)
		return
	}
	rec, expires := msgstore.NewEvent(e, p.now, p.ttl)
	p.appendEntry(rec, e.AppID, e.Recipients, expires.UnixNano(), nil, nil, []byte(e.EventID))
	p.eventRows.add(e, expires.UnixNano(), rec)
	p.events[ek] = &pgEntry{rec: rec, fan: e.Recipients}
	r.recipients = len(e.Recipients)
}

func (p *pgBatch) cursors(i int, u *CursorOp) {
	r := &p.results[i]
	c := p.convs[key2(u.AppID, u.ConversationID)]
	if c.err != nil {
		r.err = c.err
		return
	}
	// A direct conversation not started yet has no latest sequence: 0.
	if r.err = msgstore.CheckCursors(u, c.rec.GetLatestSequence()); r.err != nil {
		return
	}
	k := key3(u.AppID, u.Identity, u.ConversationID)
	part := p.parts[k]
	switch {
	case part == nil:
		part = &pgPart{rec: msgstore.NewParticipation(u)}
	case part.err != nil:
		r.err = part.err
		return
	}
	// A copy: the earlier op's result keeps its record.
	if rec := msgstore.MoveCursors(part.rec, u, p.now); rec != nil {
		part = &pgPart{rec: rec, stored: part.stored, dirty: true}
		p.parts[k] = part
	}
	r.cursor = part.rec
}

// expiries returns the range of the expiry times the batch writes.
func (p *pgBatch) expiries() (lo, hi int64, ok bool) {
	all := slices.Concat(p.msgRows.expires, p.eventRows.expires)
	if len(all) == 0 {
		return 0, 0, false
	}
	return slices.Min(all), slices.Max(all), true
}

// write sends every write of the batch at once, one multi-row statement per table,
// and the COMMIT after them in the same pipeline: a statement that fails (a key
// stored by another replica meanwhile breaks a primary key) makes the server skip the
// rest of the pipeline, COMMIT included. Only a batch with a statement whose row count
// must be checked (a key whose stored message has expired, updated in place) sends
// its COMMIT after the check, in a round trip of its own.
func (p *pgBatch) write(ctx context.Context, tx *pgx.Conn) error {
	if err := errors.Join(p.msgRows.err, p.eventRows.err); err != nil {
		return err
	}
	var q pgx.Batch
	// checks[i], when set, is how many rows the i-th statement must return.
	var checks []int
	queue := func(want int, sql string, args ...any) {
		q.Queue(sql, args...)
		checks = append(checks, want)
	}
	if m := &p.msgRows; len(m.apps) > 0 {
		queue(-1, `INSERT INTO messages (app_id, conversation_id, sequence, expires_at, server_time, size, record)
			SELECT * FROM unnest($1::text[], $2::text[], $3::bigint[], $4::bigint[], $5::bigint[], $6::integer[], $7::bytea[])`,
			m.apps, m.convs, m.seqs, m.expires, m.times, m.sizes, m.records)
		// The keys in byte order, as every batch inserts them: two batches inserting the
		// same keys wait for each other in the same order, never in a cycle. A new key
		// is inserted; one whose message has expired is taken over, only if it is
		// still expired (checked before committing).
		idx := make([]int, len(m.apps))
		for i := range idx {
			idx[i] = i
		}
		slices.SortFunc(idx, func(a, b int) int {
			return strings.Compare(key3(m.apps[a], m.senders[a], string(m.cmids[a])), key3(m.apps[b], m.senders[b], string(m.cmids[b])))
		})
		fresh, taken := split(idx, func(i int) bool { return p.expiredKeys[key3(m.apps[i], m.senders[i], string(m.cmids[i]))] })
		if len(fresh) > 0 {
			queue(-1, `INSERT INTO idempotency (app_id, sender, client_message_id, conversation_id, sequence, expires_at)
				SELECT a, s, c, v, q, e FROM unnest($1::text[], $2::text[], $3::bytea[], $4::text[], $5::bigint[], $6::bigint[]) WITH ORDINALITY AS t(a, s, c, v, q, e, n)
				ORDER BY n`,
				pick(m.apps, fresh), pick(m.senders, fresh), pick(m.cmids, fresh), pick(m.convs, fresh), pick(m.seqs, fresh), pick(m.expires, fresh))
		}
		if len(taken) > 0 {
			queue(len(taken), `UPDATE idempotency i SET conversation_id = t.v, sequence = t.q, expires_at = t.e
				FROM unnest($1::text[], $2::text[], $3::bytea[], $4::text[], $5::bigint[], $6::bigint[]) AS t(a, s, c, v, q, e)
				WHERE i.app_id = t.a AND i.sender = t.s AND i.client_message_id = t.c AND i.expires_at <= `+horizon+`
				RETURNING 1`,
				pick(m.apps, taken), pick(m.senders, taken), pick(m.cmids, taken), pick(m.convs, taken), pick(m.seqs, taken), pick(m.expires, taken))
		}
	}
	if e := &p.eventRows; len(e.apps) > 0 {
		queue(-1, `INSERT INTO events (app_id, event_id, expires_at, size, record, fanout)
			SELECT * FROM unnest($1::text[], $2::bytea[], $3::bigint[], $4::integer[], $5::bytea[], $6::bytea[])`,
			e.apps, e.ids, e.expires, e.sizes, e.records, e.fanouts)
		idx := make([]int, len(e.apps))
		for i := range idx {
			idx[i] = i
		}
		slices.SortFunc(idx, func(a, b int) int {
			return strings.Compare(key2(e.apps[a], string(e.ids[a])), key2(e.apps[b], string(e.ids[b])))
		})
		fresh, taken := split(idx, func(i int) bool { return p.expiredEvents[key2(e.apps[i], string(e.ids[i]))] })
		if len(fresh) > 0 {
			queue(-1, `INSERT INTO event_ids (app_id, event_id, expires_at)
				SELECT a, i, e FROM unnest($1::text[], $2::bytea[], $3::bigint[]) WITH ORDINALITY AS t(a, i, e, n) ORDER BY n`,
				pick(e.apps, fresh), pick(e.ids, fresh), pick(e.expires, fresh))
		}
		if len(taken) > 0 {
			queue(len(taken), `UPDATE event_ids i SET expires_at = t.e FROM unnest($1::text[], $2::bytea[], $3::bigint[]) AS t(a, i, e)
				WHERE i.app_id = t.a AND i.event_id = t.i AND i.expires_at <= `+horizon+`
				RETURNING 1`,
				pick(e.apps, taken), pick(e.ids, taken), pick(e.expires, taken))
		}
	}
	if in := &p.inboxRows; len(in.apps) > 0 {
		queue(-1, `INSERT INTO inbox (app_id, identity, inbox_sequence, expires_at, conversation_id, sequence, event_id)
			SELECT * FROM unnest($1::text[], $2::text[], $3::bigint[], $4::bigint[], $5::text[], $6::bigint[], $7::bytea[])`,
			in.apps, in.ids, in.seqs, in.expires, in.convs, in.convSeqs, in.events)
	}
	// The heads moved further than the items the batch stored (queueInboxes), put back.
	var happs, hids []string
	var heads []int64
	for _, in := range p.inboxes {
		if in.head != in.planned {
			happs, hids, heads = append(happs, in.app), append(hids, in.identity), append(heads, int64(in.head))
		}
	}
	if len(happs) > 0 {
		queue(-1, `UPDATE inbox_heads h SET head = t.head FROM unnest($1::text[], $2::text[], $3::bigint[]) AS t(a, i, head)
			WHERE h.app_id = t.a AND h.identity = t.i`, happs, hids, heads)
	}
	var capps, cids []string
	var cseqs, cats []int64
	var crecs [][]byte
	var unused []string
	for k, c := range p.convs {
		switch {
		case c.dirty:
			var raw []byte // NULL: the stored record stays as it is
			if c.recDirty {
				var err error
				if raw, err = encodeRecord(c.rec); err != nil {
					return err
				}
			}
			capps, cids, crecs = append(capps, c.app), append(cids, c.id), append(crecs, raw)
			cseqs, cats = append(cseqs, int64(c.rec.GetLatestSequence())), append(cats, c.latestAt.UnixNano())
		case p.created[k]:
			unused = append(unused, k)
		}
	}
	if len(capps) > 0 {
		queue(-1, `UPDATE conversations c SET latest_sequence = t.seq, latest_at = t.at, record = coalesce(t.rec, c.record)
			FROM unnest($1::text[], $2::text[], $3::bigint[], $4::bigint[], $5::bytea[]) AS t(a, id, seq, at, rec)
			WHERE c.app_id = t.a AND c.conversation_id = t.id`, capps, cids, cseqs, cats, crecs)
	}
	if len(unused) > 0 {
		// A conversation whose first message the batch did not store after all (a
		// refused op) keeps no row, as with bbolt.
		var apps, ids []string
		for _, k := range unused {
			a, id, _ := strings.Cut(k, "\x00")
			apps, ids = append(apps, a), append(ids, id)
		}
		queue(-1, `DELETE FROM conversations c USING unnest($1::text[], $2::text[]) AS t(a, id)
			WHERE c.app_id = t.a AND c.conversation_id = t.id`, apps, ids)
	}
	var ins, ensure, upd partRows
	for k, part := range p.parts {
		if !part.dirty {
			continue
		}
		raw, err := encodeRecord(part.rec)
		if err != nil {
			return err
		}
		switch {
		case part.stored:
			upd.add(k, raw)
		case part.unread:
			ensure.add(k, raw)
		default:
			ins.add(k, raw)
		}
	}
	ins.sort()
	ensure.sort()
	if len(ensure.apps) > 0 {
		queue(-1, `INSERT INTO participations (app_id, identity, conversation_id, record)
			SELECT a, i, c, r FROM unnest($1::text[], $2::text[], $3::text[], $4::bytea[]) WITH ORDINALITY AS t(a, i, c, r, n) ORDER BY n
			ON CONFLICT DO NOTHING`,
			ensure.apps, ensure.ids, ensure.convs, ensure.records)
	}
	upd.fill()
	if len(ins.apps) > 0 {
		// One stored meanwhile by another replica breaks the primary key: the batch runs
		// again and reads it.
		queue(-1, `INSERT INTO participations (app_id, identity, conversation_id, record)
			SELECT a, i, c, r FROM unnest($1::text[], $2::text[], $3::text[], $4::bytea[]) WITH ORDINALITY AS t(a, i, c, r, n) ORDER BY n`,
			ins.apps, ins.ids, ins.convs, ins.records)
	}
	if len(upd.apps) > 0 {
		queue(-1, `UPDATE participations p SET record = t.r FROM unnest($1::text[], $2::text[], $3::text[], $4::bytea[]) AS t(a, i, c, r)
			WHERE p.app_id = t.a AND p.identity = t.i AND p.conversation_id = t.c`, upd.apps, upd.ids, upd.convs, upd.records)
	}
	checked := slices.ContainsFunc(checks, func(want int) bool { return want >= 0 })
	// The wake-up of the other replicas' streams of the inboxes that grew, sent once
	// the batch has committed, in a transaction of its own (notify), so that the
	// batches of several replicas flush their commits together.
	var notify string
	if len(p.grown) > 0 {
		notify = notifyPayload(p.from, p.grown)
	}
	if !checked {
		queue(-1, "COMMIT")
		if notify != "" {
			q.Queue("SELECT pg_notify($1, $2)", inboxChannel, notify)
		}
	}
	res := tx.SendBatch(ctx, &q)
	for _, want := range checks {
		if want < 0 {
			if _, err := res.Exec(); err != nil {
				res.Close()
				return err
			}
			continue
		}
		rows, err := res.Query()
		if err != nil {
			res.Close()
			return err
		}
		n := 0
		for rows.Next() {
			n++
		}
		if err := rows.Err(); err != nil {
			res.Close()
			return err
		}
		if n != want {
			res.Close()
			return errKeyTaken
		}
	}
	if err := res.Close(); err != nil {
		if !checked { // committed: only the wake-up failed
			p.notifyFailed(err)
			return nil
		}
		return err
	}
	if checked {
		if _, err := tx.Exec(ctx, "COMMIT"); err != nil {
			return err
		}
		if notify != "" {
			if _, err := tx.Exec(ctx, "SELECT pg_notify($1, $2)", inboxChannel, notify); err != nil {
				p.notifyFailed(err)
			}
		}
	}
	return nil
}

// notifyFailed logs a wake-up that a committed batch could not send: the other
// replicas learn of its inboxes by their polls (Watch).
func (p *pgBatch) notifyFailed(err error) {
	if p.log != nil {
		p.log.Warn("a committed batch could not wake the other replicas' streams; they learn of its messages by polling", zap.Error(err))
	}
}

// split divides idx into the indexes for which pred is false and those for which it is
// true, each in idx's order.
func split(idx []int, pred func(int) bool) (no, yes []int) {
	for _, i := range idx {
		if pred(i) {
			yes = append(yes, i)
		} else {
			no = append(no, i)
		}
	}
	return no, yes
}

func pick[T any](s []T, idx []int) []T {
	out := make([]T, len(idx))
	for i, j := range idx {
		out[i] = s[j]
	}
	return out
}

// publish gives the committed batch's results to its ops, and the inboxes that grew.
func (p *pgBatch) publish(b *Batch) {
	for i, op := range b.Ops {
		r := &p.results[i]
		op.Err = r.err
		switch {
		case r.err != nil:
		case op.Send != nil:
			m := op.Send
			m.Sequence, m.ServerTime, m.ExpiresAt, m.Duplicate = r.seq, r.serverTime, r.expires, r.duplicate
		case op.Event != nil:
			op.Event.Duplicate, op.Event.RecipientCount = r.duplicate, r.recipients
		case op.Cursors != nil:
			op.Cursors.Cursor = r.cursor
		}
	}
	b.Grown = b.Grown[:0]
	for _, in := range p.grown {
		b.Grown = append(b.Grown, InboxHead{AppID: in.app, Identity: in.identity, Head: in.head, Items: in.items})
	}
}

// The rows of a batch, column by column, for unnest.

type msgRows struct {
	apps, convs, senders []string
	cmids                [][]byte
	seqs, expires, times []int64
	sizes                []int32
	records              [][]byte
	err                  error
}

func (r *msgRows) add(m *SendOp, seq uint64, expires, at int64, rec *messagingstoragev1.MessagingLogRecord) {
	raw, err := encodeRecord(rec)
	if err != nil {
		r.err = err
	}
	r.apps, r.convs, r.senders = append(r.apps, m.AppID), append(r.convs, m.ConversationID), append(r.senders, m.Sender)
	r.cmids = append(r.cmids, []byte(m.ClientMessageID))
	r.seqs, r.expires, r.times = append(r.seqs, int64(seq)), append(r.expires, expires), append(r.times, at)
	r.sizes, r.records = append(r.sizes, int32(len(m.Envelope))), append(r.records, raw)
}

type eventRows struct {
	apps             []string
	ids              [][]byte
	expires          []int64
	sizes            []int32
	records, fanouts [][]byte
	err              error
}

func (r *eventRows) add(e *EventOp, expires int64, rec *messagingstoragev1.MessagingLogRecord) {
	raw, err := encodeRecord(rec)
	if err != nil {
		r.err = err
	}
	fan, err := encodeRecord(&messagingstoragev1.MessagingFanoutRecord{Recipients: e.Recipients})
	if err != nil {
		r.err = err
	}
	r.apps, r.ids, r.expires = append(r.apps, e.AppID), append(r.ids, []byte(e.EventID)), append(r.expires, expires)
	r.sizes, r.records, r.fanouts = append(r.sizes, int32(len(e.Payload))), append(r.records, raw), append(r.fanouts, fan)
}

type inboxRows struct {
	apps, ids     []string
	seqs, expires []int64
	convs         []*string
	convSeqs      []*int64
	events        [][]byte
}

func (r *inboxRows) add(app, identity string, seq, expires int64, conv *string, convSeq *int64, event []byte) {
	r.apps, r.ids, r.seqs, r.expires = append(r.apps, app), append(r.ids, identity), append(r.seqs, seq), append(r.expires, expires)
	r.convs, r.convSeqs, r.events = append(r.convs, conv), append(r.convSeqs, convSeq), append(r.events, event)
}

type partRows struct {
	keys             []string
	apps, ids, convs []string
	records          [][]byte
}

func (r *partRows) add(k string, raw []byte) {
	r.keys, r.records = append(r.keys, k), append(r.records, raw)
}

// sort puts the rows in key order and fills the key columns.
func (r *partRows) sort() {
	idx := make([]int, len(r.keys))
	for i := range idx {
		idx[i] = i
	}
	slices.SortFunc(idx, func(a, b int) int { return strings.Compare(r.keys[a], r.keys[b]) })
	r.keys, r.records = pick(r.keys, idx), pick(r.records, idx)
	r.fill()
}

func (r *partRows) fill() {
	r.apps, r.ids, r.convs = nil, nil, nil
	for _, k := range r.keys {
		parts := strings.SplitN(k, "\x00", 3)
		r.apps, r.ids, r.convs = append(r.apps, parts[0]), append(r.ids, parts[1]), append(r.convs, parts[2])
	}
}
