package messaging

import (
	"time"

	"github.com/jackc/pgx/v5"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/umbra-e2ee/umbra/internal/refusal"
	"github.com/umbra-e2ee/umbra/pkg/errs"
	messagingstoragev1 "github.com/umbra-e2ee/umbra/proto/umbra/storage/messaging/v1"
	"github.com/umbra-e2ee/umbra/services/messaging/internal/msgstore"
)

// The first round trip of a batch in PostgreSQL: the conversations and inbox heads it
// locks, the idempotency keys and event ids it looks up, the participations it reads.

// conversationRecord reads a conversations row: its record, with the latest sequence
// and time of the row's columns (a row from before migration 00002 has its time in
// the record only: at is NULL).
func conversationRecord(key string, raw []byte, seq int64, at *int64) (*messagingstoragev1.ConversationRecord, error) {
	rec := &messagingstoragev1.ConversationRecord{}
	if err := records.Decode("conversations", key, raw, rec); err != nil {
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
					e.err = records.Decode("messages", k, raw, e.rec)
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
				} else if e.err = records.Decode("events", k, raw, e.rec); e.err == nil {
					e.err = records.Decode("events", k, fan, f)
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
			part.err = records.Decode("participations", k, raw, part.rec)
			p.parts[k] = part
			return nil
		})
		return err
	})
}
