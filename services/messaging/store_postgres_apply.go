package messaging

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"go.uber.org/zap"

	"github.com/umbra-e2ee/umbra/internal/pgdb"
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
//
// This file holds Apply, its runs and what a run holds; the first round trip is in
// store_postgres_apply_read.go, the ops in store_postgres_apply_ops.go, the second
// round trip in store_postgres_apply_write.go.

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
		case pgdb.Retryable(err):
			// Aborted for a concurrent transaction (a deadlock): run again after a
			// moment, as pgdb.DB.InTx does.
			if pgdb.RetryPause(ctx, attempt) {
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
