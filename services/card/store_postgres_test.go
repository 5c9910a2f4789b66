package card

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"go.uber.org/zap/zaptest"

	"github.com/umbra-e2ee/umbra/internal/pgtest"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

func openPostgres(t testing.TB, url string) *PostgresStore {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s, err := OpenPostgresStore(ctx, url, zaptest.NewLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// postgresEngine is the PostgreSQL engine for the conformance suite: a database of the
// test's own, and for replicas a store (a pool) each over it, as replicas in several
// processes have.
var postgresEngine = storeEngine{
	open: func(t *testing.T) (Store, func(t *testing.T) Store) {
		db := pgtest.NewDatabase(t)
		s := openPostgres(t, db.URL)
		return s, func(t *testing.T) Store {
			s.Close()
			return openPostgres(t, db.URL)
		}
	},
	replicas: func(t *testing.T, n int) []Store {
		db := pgtest.NewDatabase(t)
		out := make([]Store, n)
		for i := range out {
			out[i] = openPostgres(t, db.URL)
		}
		return out
	},
	snapshot: func(t *testing.T, s Store) map[string]string { return pgSnapshot(t, s.(*PostgresStore)) },
}

func TestPostgresStore(t *testing.T) { testStore(t, postgresEngine) }

// pgSnapshot returns every row of every table of the card service's schema, as text.
func pgSnapshot(t testing.TB, s *PostgresStore) map[string]string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	rows, err := s.DB().Pool.Query(ctx, "SELECT tablename FROM pg_tables WHERE schemaname = $1 ORDER BY 1", Schema)
	if err != nil {
		t.Fatal(err)
	}
	tables, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for _, table := range tables {
		rows, err := s.DB().Pool.Query(ctx, fmt.Sprintf("SELECT r::text FROM %s r", pgx.Identifier{Schema, table}.Sanitize()))
		if err != nil {
			t.Fatal(err)
		}
		texts, err := pgx.CollectRows(rows, pgx.RowTo[string])
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range texts {
			out[table+"/"+r] = r
		}
	}
	return out
}
