package card

import (
	"bytes"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"
	"google.golang.org/protobuf/proto"

	"github.com/umbra-e2ee/umbra/internal/pgdb"
	cardstoragev1 "github.com/umbra-e2ee/umbra/proto/umbra/storage/card/v1"
)

// postgresCopy writes card.db's record kinds into the tables of
// migrations/00001_card.sql and reads them back as card.db's pairs (pgdb.CopyIn). The
// key transparency tables hold card.db's keys and values as they are, so the copied log
// has the same entries, tiles and signed checkpoints: the same roots. The feed's
// counter goes on from the file's last event, and the log's size is its latest
// checkpoint's.
var postgresCopy = pgdb.Copy{
	Kinds: []pgdb.CopyKind{
		{
			// "current", or "retired" 0 key_id.
			Name: "service_key",
			Load: func(b *pgx.Batch, key, value []byte) error {
				rec := &cardstoragev1.ServiceKeyRecord{}
				if err := proto.Unmarshal(value, rec); err != nil {
					return err
				}
				current := bytes.Equal(key, currentKey)
				if !current && !bytes.Equal(key, append(bytes.Clone(retiredPrefix), rec.GetKeyId()...)) {
					return errors.New("neither the current service key nor a retired one under its id")
				}
				b.Queue("INSERT INTO service_keys (key_id, current, record) VALUES ($1, $2, $3)", rec.GetKeyId(), current, value)
				return nil
			},
			Dump: `SELECT CASE WHEN current THEN 'current'::bytea ELSE 'retired'::bytea || '\x00'::bytea || convert_to(key_id, 'UTF8') END, record
				FROM service_keys ORDER BY 1`,
		},
		{
			// app 0 card_id
			Name: "cards",
			Load: func(b *pgx.Batch, key, value []byte) error {
				rec := &cardstoragev1.CardRecord{}
				if err := proto.Unmarshal(value, rec); err != nil {
					return err
				}
				b.Queue("INSERT INTO cards (app_id, card_id, identity, sequence, record) VALUES ($1, $2, $3, $4, $5)",
					rec.GetAppId(), rec.GetCardId(), rec.GetIdentity(), int64(rec.GetSequence()), value)
				return nil
			},
			Dump: "SELECT " + pgdb.KeySQL("app_id") + ` || '\x00'::bytea || card_id, record FROM cards ORDER BY 1`,
		},
		{
			// app 0 identity
			Name: "active",
			Load: pgdb.InsertRow("active_cards", 2, []string{"app_id", "identity", "card_id", "record"}, func(value []byte) ([]any, error) {
				rec := &cardstoragev1.ActiveCardRecord{}
				err := proto.Unmarshal(value, rec)
				return []any{rec.GetCardId()}, err
			}),
			Dump: "SELECT " + pgdb.KeySQL("app_id", "identity") + ", record FROM active_cards ORDER BY 1",
		},
		{
			// app 0 identity 0 u64(sequence) -> card_id: the cards rows' own columns.
			Name: "history",
			Dump: "SELECT " + pgdb.KeySQL("app_id", "identity") + ` || '\x00'::bytea || int8send(sequence), card_id
				FROM cards ORDER BY 1`,
		},
		{
			Name: "events",
			Load: func(b *pgx.Batch, key, value []byte) error {
				seq, err := pgdb.CopyU64(key)
				if err != nil {
					return err
				}
				ev := &cardstoragev1.CardEventRecord{}
				if err := proto.Unmarshal(value, ev); err != nil {
					return err
				}
				b.Queue("INSERT INTO card_events (sequence, record) VALUES ($1, $2)", seq, value)
				if ev.GetKind() == cardstoragev1.CardEventRecordKind_CARD_EVENT_RECORD_KIND_PUBLISHED {
					// The latest publication, which a service key rotation may not predate.
					b.Queue("UPDATE card_event_sequence SET latest_published_ns = greatest(latest_published_ns, $1)", ev.GetOccurredAt().AsTime().UnixNano())
				}
				return nil
			},
			Dump: "SELECT int8send(sequence), record FROM card_events ORDER BY 1",
		},
		{
			Name: "events.sequence",
			Load: pgdb.SetCounter("UPDATE card_event_sequence SET last = $1"),
			Dump: "SELECT 'sequence'::bytea, int8send(last) FROM card_event_sequence WHERE last <> 0",
		},
		{
			// app 0 grant_id
			Name: "reset_grants",
			Load: pgdb.InsertRow("reset_grants", 2, []string{"app_id", "grant_id", "forget_after_ns", "record"}, func(value []byte) ([]any, error) {
				rec := &cardstoragev1.SpentResetGrantRecord{}
				err := proto.Unmarshal(value, rec)
				return []any{rec.GetExpiresAt().AsTime().Add(spentGrantMargin).UnixNano()}, err
			}),
			Dump: "SELECT " + pgdb.KeySQL("app_id", "grant_id") + ", record FROM reset_grants ORDER BY 1",
		},
		{
			Name: "kt_log_key",
			Load: func(b *pgx.Batch, key, value []byte) error {
				if !bytes.Equal(key, currentKey) {
					return fmt.Errorf("a log key under %q, not %q", key, currentKey)
				}
				b.Queue("INSERT INTO kt_log_key (one, record) VALUES (true, $1)", value)
				return nil
			},
			Dump: "SELECT 'current'::bytea, record FROM kt_log_key",
		},
		{
			// key_id: the keys log key rotations added (the first stays in kt_log_key)
			Name: "kt_log_keys",
			Load: pgdb.InsertRow("kt_log_keys", 1, []string{"key_id", "record"}, nil),
			Dump: "SELECT " + pgdb.KeySQL("key_id") + ", record FROM kt_log_keys ORDER BY 1",
		},
		{
			Name: "kt_leaves",
			Load: pgdb.InsertU64("kt_leaves", "log_index", "leaf"),
			Dump: "SELECT int8send(log_index), leaf FROM kt_leaves ORDER BY 1",
		},
		{
			Name: "kt_log_tiles",
			Load: pgdb.InsertBytes("kt_log_tiles", "tile_key", "tile"),
			Dump: "SELECT tile_key, tile FROM kt_log_tiles ORDER BY 1",
		},
		{
			Name: "kt_map_tiles",
			Load: pgdb.InsertBytes("kt_map_tiles", "tile_key", "tile"),
			Dump: "SELECT tile_key, tile FROM kt_map_tiles ORDER BY 1",
		},
		{
			Name: "kt_map_values",
			Load: pgdb.InsertBytes("kt_map_values", "map_key", "value"),
			Dump: "SELECT map_key, value FROM kt_map_values ORDER BY 1",
		},
		{
			Name: "kt_checkpoints",
			Load: pgdb.InsertU64("kt_checkpoints", "size", "record"),
			Dump: "SELECT int8send(size), record FROM kt_checkpoints ORDER BY 1",
		},
	},
	// The log's size is its latest checkpoint's (the appender's lock row).
	Finish: []string{"UPDATE kt_log_state SET size = coalesce((SELECT max(size) FROM kt_checkpoints), 0)"},
}
