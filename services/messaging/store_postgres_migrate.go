package messaging

import (
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"
	"google.golang.org/protobuf/proto"

	"github.com/umbra-e2ee/umbra/internal/pgdb"
	messagingstoragev1 "github.com/umbra-e2ee/umbra/proto/umbra/storage/messaging/v1"
)

// SQL of the keys of msgstore.CopyKinds, rebuilt from the key columns.
var (
	convKey  = pgdb.KeySQL("app_id", "conversation_id")
	inboxKey = pgdb.KeySQL("app_id", "identity")
	eventKey = pgdb.KeySQL("app_id") + ` || '\x00'::bytea || int8send(expires_at) || event_id`
)

func u64At(b []byte, i int) (int64, error) {
	if len(b) < i+8 {
		return 0, errors.New("too short")
	}
	return int64(binary.BigEndian.Uint64(b[i:])), nil
}

// seqKeyParts splits "a 0 b 0 u64(n)".
func seqKeyParts(key []byte) (string, string, int64, error) {
	if len(key) < 10 || key[len(key)-9] != 0 {
		return "", "", 0, errors.New("not a key of two ids and a number")
	}
	parts, err := pgdb.SplitKey(key[:len(key)-9], 2)
	if err != nil {
		return "", "", 0, err
	}
	n, err := u64At(key, len(key)-8)
	return parts[0], parts[1], n, err
}

// eventKeyParts splits "app 0 u64(expires) event_id".
func eventKeyParts(key []byte) (app string, expires int64, eventID []byte, err error) {
	parts, err := pgdb.SplitKey(key, 2)
	if err != nil {
		return "", 0, nil, err
	}
	rest := []byte(parts[1])
	if expires, err = u64At(rest, 0); err != nil {
		return "", 0, nil, err
	}
	return parts[0], expires, rest[8:], nil
}

// postgresCopy writes the record kinds of messaging.db (msgstore.CopyKinds) into the
// tables of migrations/00001_messaging.sql and reads them back as the same pairs
// (pgdb.CopyIn): the log's messages and events into their time partitions, each fan-out
// as inbox rows, the idempotency keys and event ids with their expiries.
var postgresCopy = pgdb.Copy{Kinds: []pgdb.CopyKind{
	{
		Name: "app_settings",
		Load: pgdb.InsertRow("app_settings", 1, []string{"app_id", "record"}, nil),
		Dump: "SELECT " + pgdb.KeySQL("app_id") + ", record FROM app_settings",
	},
	{
		Name: "conversations",
		Load: pgdb.InsertRow("conversations", 2, []string{"app_id", "conversation_id", "latest_sequence", "record"}, func(value []byte) ([]any, error) {
			rec := &messagingstoragev1.ConversationRecord{}
			err := proto.Unmarshal(value, rec)
			return []any{int64(rec.GetLatestSequence())}, err
		}),
		// The row's columns hold the latest sequence and time (migration 00002), which
		// the record's copies lag: the dump is the record as the bbolt engine would
		// hold it now, so that a copy the service has written to since is told apart.
		Dump: "SELECT " + convKey + `, int8send(latest_sequence) ||
			CASE WHEN latest_at IS NULL THEN '\x00'::bytea ELSE '\x01'::bytea || int8send(latest_at) END || record FROM conversations`,
		Convert: convertConversation,
	},
	{
		Name: "participations",
		Load: pgdb.InsertRow("participations", 3, []string{"app_id", "identity", "conversation_id", "record"}, nil),
		Dump: "SELECT " + inboxKey + ` || '\x00'::bytea || convert_to(conversation_id, 'UTF8'), record FROM participations`,
	},
	{
		Name: "inbox_heads",
		Load: func(b *pgx.Batch, key, value []byte) error {
			parts, err := pgdb.SplitKey(key, 2)
			if err != nil {
				return err
			}
			head, err := pgdb.CopyU64(value)
			b.Queue("INSERT INTO inbox_heads (app_id, identity, head) VALUES ($1, $2, $3)", parts[0], parts[1], head)
			return err
		},
		Dump: "SELECT " + inboxKey + ", int8send(head) FROM inbox_heads",
	},
	{
		Name: "messages",
		Load: func(b *pgx.Batch, key, value []byte) error {
			app, conv, seq, err := seqKeyParts(key)
			if err != nil {
				return err
			}
			rec := &messagingstoragev1.MessagingLogRecord{}
			if err := proto.Unmarshal(value, rec); err != nil {
				return err
			}
			m := rec.GetMessage()
			if m == nil || m.GetSequence() != uint64(seq) || m.GetConversationId() != conv || rec.GetAppId() != app {
				return errors.New("the record is not the message its key names")
			}
			b.Queue(`INSERT INTO messages (app_id, conversation_id, sequence, expires_at, server_time, size, record) VALUES ($1, $2, $3, $4, $5, $6, $7)`,
				app, conv, seq, rec.GetExpiresAt().AsTime().UnixNano(), m.GetServerTime().AsTime().UnixNano(), int32(len(m.GetEnvelope())), value)
			return nil
		},
		Dump: "SELECT " + convKey + ` || '\x00'::bytea || int8send(sequence), record FROM messages`,
	},
	{
		// The row's fanout column is written by event_recipients, next.
		Name: "events",
		Load: func(b *pgx.Batch, key, value []byte) error {
			app, expires, id, err := eventKeyParts(key)
			if err != nil {
				return err
			}
			rec := &messagingstoragev1.MessagingLogRecord{}
			if err := proto.Unmarshal(value, rec); err != nil {
				return err
			}
			ev := rec.GetEvent()
			if ev == nil || ev.GetEventId() != string(id) || rec.GetExpiresAt().AsTime().UnixNano() != expires {
				return errors.New("the record is not the event its key names")
			}
			b.Queue(`INSERT INTO events (app_id, event_id, expires_at, size, record, fanout) VALUES ($1, $2, $3, $4, $5, '')`,
				app, id, expires, int32(len(ev.GetPayload())), value)
			return nil
		},
		Dump: "SELECT " + eventKey + ", record FROM events",
	},
	{
		Name: "event_recipients",
		Load: func(b *pgx.Batch, key, value []byte) error {
			app, expires, id, err := eventKeyParts(key)
			b.Queue("UPDATE events SET fanout = $4 WHERE app_id = $1 AND event_id = $2 AND expires_at = $3", app, id, expires, value)
			return err
		},
		Dump: "SELECT " + eventKey + ", fanout FROM events",
	},
	{
		Name: "inbox",
		Load: func(b *pgx.Batch, key, value []byte) error {
			app, identity, seq, err := seqKeyParts(key)
			if err != nil {
				return err
			}
			expires, err := u64At(value, 0)
			if err != nil || len(value) < 9 {
				return fmt.Errorf("inbox item %x is too short", value)
			}
			switch value[8] {
			case 'm':
				convSeq, err := u64At(value, 9)
				if err != nil {
					return err
				}
				b.Queue(`INSERT INTO inbox (app_id, identity, inbox_sequence, expires_at, conversation_id, sequence) VALUES ($1, $2, $3, $4, $5, $6)`,
					app, identity, seq, expires, string(value[17:]), convSeq)
			case 'e':
				b.Queue(`INSERT INTO inbox (app_id, identity, inbox_sequence, expires_at, event_id) VALUES ($1, $2, $3, $4, $5)`,
					app, identity, seq, expires, value[9:])
			default:
				return fmt.Errorf("inbox item %x is neither a message nor an event", value)
			}
			return nil
		},
		Dump: "SELECT " + inboxKey + ` || '\x00'::bytea || int8send(inbox_sequence), int8send(expires_at) ||
			CASE WHEN event_id IS NULL THEN 'm'::bytea || int8send(sequence) || convert_to(conversation_id, 'UTF8') ELSE 'e'::bytea || event_id END
			FROM inbox`,
	},
	{
		Name: "idempotency",
		Load: func(b *pgx.Batch, key, value []byte) error {
			parts, err := pgdb.SplitKey(key, 3)
			if err != nil {
				return err
			}
			seq, err := u64At(value, 0)
			if err != nil {
				return err
			}
			expires, err := u64At(value, 8)
			if err != nil {
				return err
			}
			b.Queue(`INSERT INTO idempotency (app_id, sender, client_message_id, conversation_id, sequence, expires_at) VALUES ($1, $2, $3, $4, $5, $6)`,
				parts[0], parts[1], []byte(parts[2]), string(value[16:]), seq, expires)
			return nil
		},
		Dump: "SELECT " + pgdb.KeySQL("app_id", "sender") + ` || '\x00'::bytea || client_message_id,
			int8send(sequence) || int8send(expires_at) || convert_to(conversation_id, 'UTF8') FROM idempotency`,
	},
	{
		Name: "event_ids",
		Load: func(b *pgx.Batch, key, value []byte) error {
			parts, err := pgdb.SplitKey(key, 2)
			if err != nil {
				return err
			}
			expires, err := u64At(value, 0)
			b.Queue("INSERT INTO event_ids (app_id, event_id, expires_at) VALUES ($1, $2, $3)", parts[0], []byte(parts[1]), expires)
			return err
		},
		Dump: "SELECT " + pgdb.KeySQL("app_id") + ` || '\x00'::bytea || event_id, int8send(expires_at) FROM event_ids`,
	},
}}

// convertConversation turns a conversations row as the copy's dump reads it (latest
// sequence, a flag and the latest time when set, the record) into the record the
// bbolt engine holds for it: the record itself while its columns agree with it.
func convertConversation(key, value []byte) ([]byte, []byte, error) {
	if len(value) < 9 || value[8] > 1 || (value[8] == 1 && len(value) < 17) {
		return nil, nil, fmt.Errorf("conversation %q: a dumped row of %d bytes", key, len(value))
	}
	seq, raw := int64(binary.BigEndian.Uint64(value)), value[9:]
	var at *int64
	if value[8] == 1 {
		t := int64(binary.BigEndian.Uint64(value[9:]))
		at, raw = &t, value[17:]
	}
	rec, err := conversationRecord(string(key), raw, seq, at)
	if err != nil {
		return nil, nil, err
	}
	stored := &messagingstoragev1.ConversationRecord{}
	if err := proto.Unmarshal(raw, stored); err != nil {
		return nil, nil, err
	}
	if proto.Equal(rec, stored) {
		return key, raw, nil
	}
	b, err := proto.MarshalOptions{Deterministic: true}.Marshal(rec)
	return key, b, err
}
