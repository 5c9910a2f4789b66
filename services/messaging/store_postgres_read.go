package messaging

import (
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/umbra-e2ee/umbra/internal/pgdb"
	"github.com/umbra-e2ee/umbra/internal/refusal"
	"github.com/umbra-e2ee/umbra/pkg/errs"
	messagingstoragev1 "github.com/umbra-e2ee/umbra/proto/umbra/storage/messaging/v1"
)

// The reads in PostgreSQL. Each is one statement, which sees one snapshot: an inbox's
// items and its head agree, as they do in bbolt's read transaction. An entry that
// expires at or before the sweep's horizon is gone, whether or not its partition has
// been dropped yet (store_postgres_sweep.go).

// horizon is the sweep's horizon, as a subquery.
const horizon = "(SELECT horizon FROM sweep_state)"

// Sent implements Store.
func (s *PostgresStore) Sent(app, sender, cmid string) (*messagingstoragev1.MessagingLogRecord, error) {
	rec := &messagingstoragev1.MessagingLogRecord{}
	found, err := s.getRow("messages", app+"/"+sender+"/"+cmid, rec, `
		SELECT m.record FROM idempotency i
		JOIN messages m ON m.app_id = i.app_id AND m.conversation_id = i.conversation_id AND m.sequence = i.sequence AND m.expires_at = i.expires_at
		WHERE i.app_id = $1 AND i.sender = $2 AND i.client_message_id = $3 AND i.expires_at > `+horizon,
		app, sender, []byte(cmid))
	if err != nil {
		return nil, err
	}
	if !found {
		return nil, errs.NotFoundf("no message with client_message_id %q", refusal.Truncate(cmid))
	}
	if rec.GetAppId() != app || rec.GetMessage().GetSender() != sender || rec.GetMessage().GetClientMessageId() != cmid {
		return nil, errs.Damagedf("messaging store: %s.idempotency: the key of %s's client_message_id %q points at another message", Schema, sender, refusal.Truncate(cmid))
	}
	return rec, nil
}

// Conversation implements Store.
func (s *PostgresStore) Conversation(app, conv string) (*messagingstoragev1.ConversationRecord, error) {
	ctx, cancel := s.ctx()
	defer cancel()
	var raw []byte
	var seq int64
	var at *int64
	err := s.db.Pool.QueryRow(ctx, "SELECT record, latest_sequence, latest_at FROM conversations WHERE app_id = $1 AND conversation_id = $2",
		app, conv).Scan(&raw, &seq, &at)
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		return nil, errs.NotFoundf("conversation %s not found", conv)
	case err != nil:
		return nil, s.db.Err(err)
	}
	return conversationRecord(app+"/"+conv, raw, seq, at)
}

// HasMessage implements Store.
func (s *PostgresStore) HasMessage(app, conv string, seq uint64) (bool, error) {
	ctx, cancel := s.ctx()
	defer cancel()
	var found bool
	err := s.db.Pool.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM messages
		WHERE app_id = $1 AND conversation_id = $2 AND sequence = $3 AND expires_at > `+horizon+`)`,
		app, conv, int64(seq)).Scan(&found)
	return found, s.db.Err(err)
}

// pageQuery wraps a query of (seq, k, size, record) rows, ordered by k, with a page's
// bounds: it returns (seq, in, record), where in says whether the row is within limit
// rows and maxBytes of sizes (the first row always is), and record is NULL past the
// bounds, so that the envelopes past them are never read. A row past the bounds says
// that there are more. limitArg and bytesArg number the bounds' arguments.
func pageQuery(inner string, limitArg, bytesArg int) string {
	return fmt.Sprintf(`
		SELECT seq, within, CASE WHEN within THEN record END
		FROM (SELECT seq, record, row_number() OVER w <= $%d AND (row_number() OVER w = 1 OR sum(size) OVER w <= $%d) AS within, k
			FROM (%s) AS page WINDOW w AS (ORDER BY k ROWS UNBOUNDED PRECEDING)) AS bounded
		ORDER BY k`, limitArg, bytesArg, inner)
}

// Messages implements Store.
func (s *PostgresStore) Messages(app, conv string, q MessageQuery) ([]*messagingstoragev1.MessagingLogRecord, bool, error) {
	if q.Limit <= 0 || !q.Forward && q.Before <= 1 {
		return nil, false, nil
	}
	var floor int64 // server_time, Unix ns
	if !q.NotBefore.IsZero() {
		floor = q.NotBefore.UnixNano()
	} else {
		floor = -1 << 63
	}
	// k orders the page: sequences up, or down.
	cond, order, k := "sequence > $3", "sequence", "sequence"
	from := int64(q.After)
	if !q.Forward {
		cond, order, k = "sequence < $3", "sequence DESC", "-sequence"
		from = int64(q.Before)
	}
	inner := fmt.Sprintf(`SELECT sequence AS seq, %s AS k, size, record FROM messages
		WHERE app_id = $1 AND conversation_id = $2 AND %s AND server_time >= $4 AND expires_at > %s
		ORDER BY %s LIMIT $5`, k, cond, horizon, order)
	ctx, cancel := s.ctx()
	defer cancel()
	rows, err := s.db.Pool.Query(ctx, pageQuery(inner, 6, 7), app, conv, from, floor, q.Limit+1, q.Limit, q.MaxBytes)
	if err != nil {
		return nil, false, s.db.Err(err)
	}
	var out []*messagingstoragev1.MessagingLogRecord
	more := false
	var seq int64
	var within bool
	var raw []byte
	_, err = pgx.ForEachRow(rows, []any{&seq, &within, &raw}, func() error {
		if !within || more {
			more = true
			return nil
		}
		rec := &messagingstoragev1.MessagingLogRecord{}
		if err := records.Decode("messages", fmt.Sprintf("%s/%s/%d", app, conv, seq), raw, rec); err != nil {
			return err
		}
		if m := rec.GetMessage(); rec.GetAppId() != app || m.GetConversationId() != conv || m.GetSequence() != uint64(seq) {
			return errs.Damagedf("messaging store: %s.messages row %s/%s/%d holds another message", Schema, app, conv, seq)
		}
		out = append(out, rec)
		return nil
	})
	if err != nil {
		return nil, false, s.db.Err(err)
	}
	return out, more, nil
}

// Inbox implements Store.
func (s *PostgresStore) Inbox(app, identity string, after uint64, limit, maxBytes int) ([]InboxItem, uint64, error) {
	ctx, cancel := s.ctx()
	defer cancel()
	// The entries are looked up one by one by their primary keys (LATERAL ... LIMIT 1:
	// an index scan each, the partition of the entry's expiry chosen at run time). As
	// plain joins, the plan that PostgreSQL caches for the statement after five runs
	// hash-joined the page with a full scan of every partition of the events table.
	inner := `SELECT i.inbox_sequence AS seq, i.inbox_sequence AS k, coalesce(m.size, e.size) AS size, coalesce(m.record, e.record) AS record
		FROM (SELECT * FROM inbox WHERE app_id = $1 AND identity = $2 AND inbox_sequence > $3 AND expires_at > ` + horizon + `
			ORDER BY inbox_sequence LIMIT $4) AS i
		LEFT JOIN LATERAL (SELECT size, record FROM messages
			WHERE i.conversation_id IS NOT NULL AND app_id = i.app_id AND conversation_id = i.conversation_id
				AND sequence = i.sequence AND expires_at = i.expires_at LIMIT 1) AS m ON true
		LEFT JOIN LATERAL (SELECT size, record FROM events
			WHERE i.event_id IS NOT NULL AND app_id = i.app_id AND event_id = i.event_id AND expires_at = i.expires_at LIMIT 1) AS e ON true
		ORDER BY i.inbox_sequence`
	// The head first, then the page (none: a row of NULLs), in one statement.
	rows, err := s.db.Pool.Query(ctx, `
		SELECT h.head, p.* FROM (SELECT coalesce((SELECT head FROM inbox_heads WHERE app_id = $1 AND identity = $2), 0) AS head) AS h
		LEFT JOIN LATERAL (`+pageQuery(inner, 4, 5)+`) AS p ON true`,
		app, identity, int64(after), limit, maxBytes)
	if err != nil {
		return nil, 0, s.db.Err(err)
	}
	var out []InboxItem
	var head int64
	var seq *int64
	var within *bool
	var raw []byte
	_, err = pgx.ForEachRow(rows, []any{&head, &seq, &within, &raw}, func() error {
		switch {
		case seq == nil || !*within: // an empty page, or past its bounds
			return nil
		case raw == nil:
			// An item and its entry expire together, and their partitions are dropped
			// in one transaction: the entry of an item still here is still here.
			return errs.Damagedf("messaging store: %s.inbox row %s/%s/%d points at an entry that is not stored", Schema, app, identity, *seq)
		}
		rec := &messagingstoragev1.MessagingLogRecord{}
		if err := records.Decode("inbox", fmt.Sprintf("%s/%s/%d", app, identity, *seq), raw, rec); err != nil {
			return err
		}
		if rec.GetAppId() != app {
			return errs.Damagedf("messaging store: %s.inbox row %s/%s/%d points at another app's entry", Schema, app, identity, *seq)
		}
		out = append(out, InboxItem{Sequence: uint64(*seq), Record: rec})
		return nil
	})
	if err != nil {
		return nil, 0, s.db.Err(err)
	}
	return out, uint64(head), nil
}

// InboxHead implements Store.
func (s *PostgresStore) InboxHead(app, identity string) (uint64, error) {
	ctx, cancel := s.ctx()
	defer cancel()
	var head int64
	err := s.db.Pool.QueryRow(ctx, "SELECT head FROM inbox_heads WHERE app_id = $1 AND identity = $2", app, identity).Scan(&head)
	if errors.Is(err, pgx.ErrNoRows) {
		return 0, nil
	}
	return uint64(head), s.db.Err(err)
}

// Participation implements Store.
func (s *PostgresStore) Participation(app, identity, conv string) (*messagingstoragev1.ParticipationRecord, error) {
	rec := &messagingstoragev1.ParticipationRecord{}
	found, err := s.getRow("participations", app+"/"+identity+"/"+conv, rec,
		"SELECT record FROM participations WHERE app_id = $1 AND identity = $2 AND conversation_id = $3", app, identity, conv)
	if err != nil {
		return nil, err
	}
	if !found {
		return nil, errs.NotFoundf("%s takes no part in %s", identity, conv)
	}
	return rec, nil
}

// Participations implements Store.
func (s *PostgresStore) Participations(app, identity, after string, limit int) ([]*messagingstoragev1.ParticipationRecord, error) {
	if limit <= 0 {
		return nil, nil
	}
	ctx, cancel := s.ctx()
	defer cancel()
	rows, err := s.db.Pool.Query(ctx, `SELECT conversation_id, record FROM participations
		WHERE app_id = $1 AND identity = $2 AND conversation_id > $3 ORDER BY conversation_id LIMIT $4`, app, identity, after, limit)
	if err != nil {
		return nil, s.db.Err(err)
	}
	out, err := pgdb.ScanWith(rows, func() *messagingstoragev1.ParticipationRecord { return &messagingstoragev1.ParticipationRecord{} },
		func(conv string, raw []byte, rec *messagingstoragev1.ParticipationRecord) error {
			return records.Decode("participations", app+"/"+identity+"/"+conv, raw, rec)
		})
	if err != nil {
		return nil, s.db.Err(err)
	}
	return out, nil
}

// AppSettings implements Store.
func (s *PostgresStore) AppSettings(app string) (*messagingstoragev1.MessagingAppSettingsRecord, error) {
	rec := &messagingstoragev1.MessagingAppSettingsRecord{}
	found, err := s.getRow("app_settings", app, rec, "SELECT record FROM app_settings WHERE app_id = $1", app)
	if err != nil {
		return nil, err
	}
	if !found {
		return nil, errs.NotFoundf("app %s has the default settings", app)
	}
	return rec, nil
}

// PutAppSettings implements Store.
func (s *PostgresStore) PutAppSettings(rec *messagingstoragev1.MessagingAppSettingsRecord) error {
	raw, err := records.Encode(rec)
	if err != nil {
		return err
	}
	ctx, cancel := s.ctx()
	defer cancel()
	_, err = s.db.Pool.Exec(ctx, `INSERT INTO app_settings (app_id, record) VALUES ($1, $2)
		ON CONFLICT (app_id) DO UPDATE SET record = EXCLUDED.record`, rec.GetAppId(), raw)
	return s.db.Err(err)
}
