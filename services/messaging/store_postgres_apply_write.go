package messaging

import (
	"context"
	"errors"
	"slices"
	"strings"

	"github.com/jackc/pgx/v5"
	"go.uber.org/zap"

	messagingstoragev1 "github.com/umbra-e2ee/umbra/proto/umbra/storage/messaging/v1"
)

// The second round trip of a batch in PostgreSQL: every write, one multi-row statement
// per table, and the commit (write), with the rows they take, column by column.

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
		// A new key is inserted; one whose message has expired is taken over, only if it
		// is still expired (checked before committing).
		fresh, taken := inKeyOrder(len(m.apps), func(i int) string { return key3(m.apps[i], m.senders[i], string(m.cmids[i])) }, p.expiredKeys)
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
		fresh, taken := inKeyOrder(len(e.apps), func(i int) string { return key2(e.apps[i], string(e.ids[i])) }, p.expiredEvents)
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
				if raw, err = records.Encode(c.rec); err != nil {
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
		raw, err := records.Encode(part.rec)
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

// keyOrder returns the indexes of keys in the keys' byte order, the order in which
// every batch inserts its rows: two batches inserting the same keys wait for each other
// in the same order, never in a cycle.
func keyOrder(keys []string) []int {
	idx := make([]int, len(keys))
	for i := range idx {
		idx[i] = i
	}
	slices.SortFunc(idx, func(a, b int) int { return strings.Compare(keys[a], keys[b]) })
	return idx
}

// inKeyOrder returns the indexes of n rows in the order of their keys (keyOrder),
// divided into those whose key is not in expired and those whose key is, each in that
// order.
func inKeyOrder(n int, key func(i int) string, expired map[string]bool) (fresh, taken []int) {
	keys := make([]string, n)
	for i := range keys {
		keys[i] = key(i)
	}
	for _, i := range keyOrder(keys) {
		if expired[keys[i]] {
			taken = append(taken, i)
		} else {
			fresh = append(fresh, i)
		}
	}
	return fresh, taken
}

func pick[T any](s []T, idx []int) []T {
	out := make([]T, len(idx))
	for i, j := range idx {
		out[i] = s[j]
	}
	return out
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
	raw, err := records.Encode(rec)
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
	raw, err := records.Encode(rec)
	if err != nil {
		r.err = err
	}
	fan, err := records.Encode(&messagingstoragev1.MessagingFanoutRecord{Recipients: e.Recipients})
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
	idx := keyOrder(r.keys)
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
