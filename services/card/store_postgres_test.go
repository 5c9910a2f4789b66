package card

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"maps"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/umbra-e2ee/umbra/internal/pgtest"
	"github.com/umbra-e2ee/umbra/internal/storetest"
	"github.com/umbra-e2ee/umbra/pkg/errs"
	cardstoragev1 "github.com/umbra-e2ee/umbra/proto/umbra/storage/card/v1"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

// openPostgres opens the store of the database at url, closed when t ends.
var openPostgres = pgtest.Opener(OpenPostgresStore)

// postgresEngine is the PostgreSQL engine for the conformance suite: a database of the
// test's own, and for replicas a store (a pool) each over it, as replicas in several
// processes have.
var postgresEngine = storeEngine{
	Engine:   storetest.Database[Store](pgtest.NewURL, openPostgres),
	snapshot: func(t *testing.T, s Store) map[string]string { return pgSnapshot(t, s.(*PostgresStore)) },
}

func TestPostgresStore(t *testing.T) { testStore(t, postgresEngine) }

// pgSnapshot returns every row of every table of the card service's schema, as text.
func pgSnapshot(t testing.TB, s *PostgresStore) map[string]string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	tables := pgtest.QueryWith[string](t, ctx, s.DB().Pool, "SELECT tablename FROM pg_tables WHERE schemaname = $1 ORDER BY 1", Schema)
	out := map[string]string{}
	for _, table := range tables {
		texts := pgtest.QueryWith[string](t, ctx, s.DB().Pool, fmt.Sprintf("SELECT r::text FROM %s r", pgx.Identifier{Schema, table}.Sanitize()))
		for _, r := range texts {
			out[table+"/"+r] = r
		}
	}
	return out
}

// TestPostgresFeedFollowsCommitOrder: while a change of cards is open (its event
// counted, not committed), the next one waits for it, and the feed shows neither; so a
// follower (the key transparency log, the group service) that has read sequence n has
// read every sequence below it. (A database sequence would hand out n+1 at once and
// commit it first, and a follower past n+1 would skip n for good.)
func TestPostgresFeedFollowsCommitOrder(t *testing.T) {
	db := pgtest.NewDatabase(t)
	s := openPostgres(t, db.URL)
	withKey(t, s)
	ctx := context.Background()
	conn := db.Conn(t)
	// A slow publication, half done: its sequence taken, not yet committed.
	tx, err := conn.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(ctx, "SET LOCAL search_path = "+Schema); err != nil {
		t.Fatal(err)
	}
	var last int64
	if err := tx.QueryRow(ctx, "UPDATE card_event_sequence SET last = last + 1 RETURNING last").Scan(&last); err != nil {
		t.Fatal(err)
	}
	ev, _ := records.Encode(&cardstoragev1.CardEventRecord{Sequence: uint64(last), AppId: "app_a", Identity: "u_slow", CardId: bytes.Repeat([]byte{9}, 32),
		Kind: cardstoragev1.CardEventRecordKind_CARD_EVENT_RECORD_KIND_PUBLISHED, OccurredAt: timestamppb.New(t0)})
	if _, err := tx.Exec(ctx, "INSERT INTO card_events (sequence, record) VALUES ($1, $2)", last, ev); err != nil {
		t.Fatal(err)
	}

	type result struct {
		seq uint64
		err error
	}
	done := make(chan result, 1)
	go func() {
		c, _, err := s.Publish(record("app_a", idAlice, 1, nil), nil, allow(&seen{}))
		done <- result{c.GetSequence(), err}
	}()
	select {
	case r := <-done:
		t.Fatalf("a publication committed (sequence %d, %v) while an earlier one was open", r.seq, r.err)
	case <-time.After(300 * time.Millisecond):
	}
	if evs, latest, err := s.Events(0, 10); err != nil || len(evs) != 0 || latest != 0 {
		t.Fatalf("the feed while the first publication is open: %v, latest %d, %v; want nothing", evs, latest, err)
	}
	if rec, n, err := s.AppendLog(10, t0, signTest); err != nil || n != 0 || rec.GetSize() != 0 {
		t.Fatalf("the log's append while the first publication is open: %v, %d, %v; want the empty log", rec, n, err)
	}
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	r := <-done
	if r.err != nil || r.seq != 2 {
		t.Fatalf("the waiting publication: sequence %d, %v; want 2", r.seq, r.err)
	}
	if rec, n, err := s.AppendLog(10, t0, signTest); err != nil || n != 2 || rec.GetSize() != 2 {
		t.Fatalf("the log's append after both: %v, %d, %v; want both", rec, n, err)
	}
}

// TestPostgresLogRefusesAGap: were an event missing from the feed (a damaged
// database), the log stops there rather than skip it, and writes nothing.
func TestPostgresLogRefusesAGap(t *testing.T) {
	db := pgtest.NewDatabase(t)
	s := openPostgres(t, db.URL)
	withKey(t, s)
	for n := byte(1); n <= 6; n++ {
		if _, _, err := s.Publish(record("app_a", fmt.Sprint("u_", n), n, nil), nil, allow(&seen{})); err != nil {
			t.Fatal(err)
		}
	}
	if _, n, err := s.AppendLog(4, t0, signTest); err != nil || n != 4 {
		t.Fatalf("append of 4: %d, %v", n, err)
	}
	db.Exec(t, "DELETE FROM "+Schema+".card_events WHERE sequence = 5")
	before := pgSnapshot(t, s)
	_, _, err := s.AppendLog(10, t0, signTest)
	if err == nil || !strings.Contains(err.Error(), "the card event feed has event 6 where 5 should be") {
		t.Fatalf("append over a gap: %v", err)
	}
	if !maps.Equal(before, pgSnapshot(t, s)) {
		t.Error("the refused append changed the database")
	}
}

// TestPostgresDamagedRecord: a row whose record does not parse is reported damaged,
// naming the table and the key for the log, and is not served.
func TestPostgresDamagedRecord(t *testing.T) {
	db := pgtest.NewDatabase(t)
	s := withKey(t, openPostgres(t, db.URL))
	c := record("app_a", idAlice, 1, nil)
	if _, _, err := s.Publish(c, nil, allow(&seen{})); err != nil {
		t.Fatal(err)
	}
	db.Exec(t, "UPDATE "+Schema+".cards SET record = '\\xffffffff'")
	db.Exec(t, "UPDATE "+Schema+".active_cards SET record = '\\xffffffff'")
	_, err := s.Card("app_a", c.GetCardId())
	if !errors.Is(err, errs.ErrDamaged) || !strings.Contains(err.Error(), "cards") || !strings.Contains(err.Error(), "app_a/"+cardIDString(c.GetCardId())) {
		t.Errorf("Card of a damaged row: %v, want ErrDamaged naming the table and key", err)
	}
	if _, err := s.ActiveCards("app_a", []string{idAlice}); !errors.Is(err, errs.ErrDamaged) {
		t.Errorf("ActiveCards over a damaged row: %v, want ErrDamaged", err)
	}
}

// TestPostgresSchema: the tables are in the card service's own schema.
func TestPostgresSchema(t *testing.T) {
	pgtest.WantTables(t, openPostgres, "[umbra_card.active_cards umbra_card.card_event_sequence umbra_card.card_events umbra_card.cards umbra_card.goose_db_version umbra_card.kt_checkpoints umbra_card.kt_leaves umbra_card.kt_log_key umbra_card.kt_log_keys umbra_card.kt_log_state umbra_card.kt_log_tiles umbra_card.kt_map_tiles umbra_card.kt_map_values umbra_card.reset_grants umbra_card.service_keys]")
}
