package card

import (
	"context"
	"embed"
	"fmt"
	"io/fs"
	"math"

	"github.com/jackc/pgx/v5"
	"go.uber.org/zap"

	"github.com/umbra-e2ee/umbra/internal/pgdb"
	cardstoragev1 "github.com/umbra-e2ee/umbra/proto/umbra/storage/card/v1"
)

// Schema is the PostgreSQL schema the card service owns.
const Schema = "umbra_card"

//go:embed migrations/*.sql
var migrationFiles embed.FS

// Migrations are the card service's goose migrations, embedded.
func Migrations() fs.FS { return pgdb.MigrationsIn(migrationFiles) }

// PostgresStore is the Store in PostgreSQL: the tables of migrations/ in the schema
// Schema. Each row holds the record the bbolt engine stores, as protobuf bytes, beside
// the columns it is looked up by (docs/storage-postgres.md). Several replicas of the
// service may use one database at once: every change of cards takes the event
// counter's row lock (card_event_sequence), and the key transparency log's appender
// the log state's (kt_log_state), so each behaves as bbolt's single writer does.
type PostgresStore struct {
	db *pgdb.DB
	// tiles is the key transparency trees' top tiles at the latest checkpoint.
	tiles tileCaches
}

var _ Store = (*PostgresStore)(nil)

// records are the store's rows' records, named in errors.
var records = pgdb.Records{Store: "card", Schema: Schema}

// OpenPostgresStore connects to the database at url, and migrates the schema (see
// pgdb.Open for what it checks first).
func OpenPostgresStore(ctx context.Context, url string, log *zap.Logger) (*PostgresStore, error) {
	db, err := pgdb.Open(ctx, pgdb.Config{URL: url, Store: "card", Schema: Schema, Migrations: Migrations(), Log: log})
	if err != nil {
		return nil, err
	}
	return &PostgresStore{db: db}, nil
}

// Close closes the connection pool.
func (s *PostgresStore) Close() error { s.db.Close(); return nil }

// DB is the connection pool, for the node's readiness check.
func (s *PostgresStore) DB() *pgdb.DB { return s.db }

// cardRowKey names a card's row in messages.
func cardRowKey(appID string, cardID []byte) string { return appID + "/" + cardIDString(cardID) }

// pgCard reads a card; a missing card is (nil, nil).
func pgCard(ctx context.Context, tx pgx.Tx, appID string, cardID []byte) (*cardstoragev1.CardRecord, error) {
	rec := &cardstoragev1.CardRecord{}
	found, err := records.Get(ctx, tx, "cards", cardRowKey(appID, cardID), rec, "SELECT record FROM cards WHERE app_id = $1 AND card_id = $2", appID, cardID)
	if err != nil || !found {
		return nil, err
	}
	return rec, nil
}

// putCard writes a card's record, inserting the row for a new card.
func putCard(ctx context.Context, tx pgx.Tx, rec *cardstoragev1.CardRecord) error {
	b, err := records.Encode(rec)
	if err != nil {
		return err
	}
	_, err = tx.Exec(ctx, `INSERT INTO cards (app_id, card_id, identity, sequence, record) VALUES ($1, $2, $3, $4, $5)
		ON CONFLICT (app_id, card_id) DO UPDATE SET record = EXCLUDED.record`,
		rec.GetAppId(), rec.GetCardId(), rec.GetIdentity(), int64(rec.GetSequence()), b)
	return err
}

// pgActiveCard reads identity's active card; none is (nil, nil).
func pgActiveCard(ctx context.Context, tx pgx.Tx, appID, identity string) (*cardstoragev1.CardRecord, error) {
	cardID, found, err := pgdb.GetBytes(ctx, tx, "SELECT card_id FROM active_cards WHERE app_id = $1 AND identity = $2", appID, identity)
	if err != nil || !found {
		return nil, err
	}
	rec, err := pgCard(ctx, tx, appID, cardID)
	if err == nil && rec == nil {
		err = fmt.Errorf("card: active index of %s names a missing card %x", identity, cardID)
	}
	return rec, err
}

// eventCounter is the feed's counter row, locked: changes of cards take turns from
// here to their commit (migrations/00001_card.sql).
type eventCounter struct {
	last            int64
	latestPublished int64 // Unix nanoseconds; math.MinInt64 before any card
}

func lockEvents(ctx context.Context, tx pgx.Tx) (*eventCounter, error) {
	c := &eventCounter{}
	err := tx.QueryRow(ctx, "SELECT last, latest_published_ns FROM card_event_sequence FOR UPDATE").Scan(&c.last, &c.latestPublished)
	return c, err
}

// appendEvent stores ev with the next sequence, which it sets.
func (c *eventCounter) appendEvent(ctx context.Context, tx pgx.Tx, ev *cardstoragev1.CardEventRecord) error {
	c.last++
	ev.Sequence = uint64(c.last)
	b, err := records.Encode(ev)
	if err != nil {
		return err
	}
	_, err = tx.Exec(ctx, "INSERT INTO card_events (sequence, record) VALUES ($1, $2)", c.last, b)
	return err
}

// save writes the counter back.
func (c *eventCounter) save(ctx context.Context, tx pgx.Tx) error {
	_, err := tx.Exec(ctx, "UPDATE card_event_sequence SET last = $1, latest_published_ns = $2", c.last, c.latestPublished)
	return err
}

func (s *PostgresStore) Card(appID string, cardID []byte) (*cardstoragev1.CardRecord, error) {
	return pgdb.ViewValue(s.db, func(ctx context.Context, tx pgx.Tx) (*cardstoragev1.CardRecord, error) {
		out, err := pgCard(ctx, tx, appID, cardID)
		if err == nil && out == nil {
			return nil, noCard(cardID)
		}
		return out, err
	})
}

func (s *PostgresStore) ActiveCards(appID string, identities []string) ([]*cardstoragev1.ActiveCardRecord, error) {
	var out []*cardstoragev1.ActiveCardRecord
	err := s.db.View(func(ctx context.Context, tx pgx.Tx) error {
		out = make([]*cardstoragev1.ActiveCardRecord, 0, len(identities))
		// A join on unnest: = ANY of a thousand identities costs more to plan than to run.
		rows, err := tx.Query(ctx, "SELECT a.identity, a.record FROM unnest($2::text[]) AS w (identity) JOIN active_cards a ON a.app_id = $1 AND a.identity = w.identity", appID, identities)
		if err != nil {
			return err
		}
		found := make(map[string]*cardstoragev1.ActiveCardRecord, len(identities))
		_, err = pgdb.ScanWith(rows, func() *cardstoragev1.ActiveCardRecord { return &cardstoragev1.ActiveCardRecord{} },
			func(identity string, b []byte, rec *cardstoragev1.ActiveCardRecord) error {
				if err := records.Decode("active_cards", appID+"/"+identity, b, rec); err != nil {
					return err
				}
				found[identity] = rec
				return nil
			})
		if err != nil {
			return err
		}
		// In the order asked, as the bbolt engine answers.
		for _, identity := range identities {
			if rec := found[identity]; rec != nil {
				out = append(out, rec)
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// sequenceBound is a uint64 sequence bound as a bigint: sequences never pass MaxInt64.
func sequenceBound(v uint64) int64 { return int64(min(v, math.MaxInt64)) }

func (s *PostgresStore) History(appID, identity string, before uint64, limit int) ([]*cardstoragev1.CardRecord, bool, error) {
	if before == 0 {
		before = math.MaxUint64 // no sequence reaches it
	}
	var out []*cardstoragev1.CardRecord
	more := false
	err := s.db.View(func(ctx context.Context, tx pgx.Tx) error {
		out, more = nil, false
		rows, err := tx.Query(ctx, "SELECT card_id, record FROM cards WHERE app_id = $1 AND identity = $2 AND sequence < $3 ORDER BY sequence DESC LIMIT $4",
			appID, identity, sequenceBound(before), max(limit, 0)+1)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			if len(out) == limit {
				more = true
				break
			}
			var id, b []byte
			if err := rows.Scan(&id, &b); err != nil {
				return err
			}
			rec := &cardstoragev1.CardRecord{}
			if err := records.Decode("cards", cardRowKey(appID, id), b, rec); err != nil {
				return err
			}
			out = append(out, rec)
		}
		return rows.Err()
	})
	if err != nil {
		return nil, false, err
	}
	return out, more, nil
}

func (s *PostgresStore) Events(after uint64, limit int) ([]*cardstoragev1.CardEventRecord, uint64, error) {
	var out []*cardstoragev1.CardEventRecord
	var latest int64
	err := s.db.View(func(ctx context.Context, tx pgx.Tx) error {
		out = nil
		// One snapshot: the latest sequence and the events agree.
		if err := tx.QueryRow(ctx, "SELECT last FROM card_event_sequence").Scan(&latest); err != nil {
			return err
		}
		if after >= uint64(latest) || limit <= 0 {
			return nil
		}
		var err error
		out, err = pgEvents(ctx, tx, after, limit)
		return err
	})
	if err != nil {
		return nil, 0, err
	}
	return out, uint64(latest), nil
}

// pgEvents reads up to limit events with a sequence above after, in order.
func pgEvents(ctx context.Context, tx pgx.Tx, after uint64, limit int) ([]*cardstoragev1.CardEventRecord, error) {
	rows, err := tx.Query(ctx, "SELECT sequence, record FROM card_events WHERE sequence > $1 ORDER BY sequence LIMIT $2", sequenceBound(after), limit)
	if err != nil {
		return nil, err
	}
	return pgdb.Scan[int64](records, rows, "card_events", func() *cardstoragev1.CardEventRecord { return &cardstoragev1.CardEventRecord{} })
}
