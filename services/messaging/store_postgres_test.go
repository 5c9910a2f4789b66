package messaging

import (
	"context"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"

	"github.com/umbra-e2ee/umbra/internal/pgtest"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

// testPartitionWidth is the partitions' width in the tests: an hour, as the suite's
// retention.
const testPartitionWidth = time.Hour

func openPostgres(t *testing.T, url string) *PostgresStore {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	s, err := OpenPostgresStore(ctx, url, PostgresOptions{PartitionWidth: testPartitionWidth}, zaptest.NewLogger(t))
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
	poison: func(t *testing.T) (Store, *Op) {
		db := pgtest.NewDatabase(t)
		s := openPostgres(t, db.URL)
		// A constraint the database enforces, as it would a full disk: the batch that
		// gives u_poison an inbox fails.
		db.Exec(t, "ALTER TABLE "+Schema+".inbox_heads ADD CONSTRAINT poison CHECK (identity <> 'u_poison')")
		return s, &Op{Event: &EventOp{AppID: cfApp, EventID: "poison", Type: "t.T", Recipients: []string{"u_poison"}}}
	},
}

func TestPostgresStore(t *testing.T) { testStore(t, postgresEngine) }
