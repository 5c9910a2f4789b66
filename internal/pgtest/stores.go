// A service's store in a test: a new database for it, opening it, and the tables its
// migrations made.

package pgtest

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"
)

// NewURL returns the URL of a new, empty database of the shared cluster, dropped when t
// ends: the place of a new storage for a PostgreSQL engine (see internal/storetest).
func NewURL(t testing.TB) string {
	t.Helper()
	return NewDatabase(t).URL
}

// ConnIn connects to the database as the superuser with schema as its search_path (a
// service's own schema, so that the test names its tables bare); the connection closes
// when the test ends.
func (d *Database) ConnIn(t testing.TB, schema string) *pgx.Conn {
	t.Helper()
	conn := d.Conn(t)
	if _, err := conn.Exec(context.Background(), "SET search_path = "+pgx.Identifier{schema}.Sanitize()); err != nil {
		t.Fatal(err)
	}
	return conn
}

// Open opens a service's PostgreSQL store at url for a test with open (the service's
// OpenPostgresStore), as OpenStore does, given 30 seconds.
func Open[S interface{ Close() error }](t testing.TB, url string, open func(ctx context.Context, url string, log *zap.Logger) (S, error)) S {
	t.Helper()
	return OpenStore(t, 30*time.Second, func(ctx context.Context, log *zap.Logger) (S, error) { return open(ctx, url, log) })
}

// Opener returns a test's opener of a service's PostgreSQL store at a URL with open
// (the service's OpenPostgresStore), as Open does: what storetest.Database takes.
func Opener[S interface{ Close() error }](open func(ctx context.Context, url string, log *zap.Logger) (S, error)) func(t testing.TB, url string) S {
	return func(t testing.TB, url string) S {
		t.Helper()
		return Open(t, url, open)
	}
}

// WantTables opens a service's store with open (its test opener) over a new database
// of the shared cluster, and checks that its migrations made the tables want: Tables,
// as fmt.Sprint writes the list.
func WantTables[S any](t *testing.T, open func(t testing.TB, url string) S, want string) {
	t.Helper()
	db := NewDatabase(t)
	open(t, db.URL)
	if got := db.Tables(t); fmt.Sprint(got) != want {
		t.Errorf("tables = %v, want %s", got, want)
	}
}

// Tables lists the tables of every schema of the database but the system's, as
// schema.table, in order: what a service's migrations made, and nothing beside. A
// partitioned table is listed, not its partitions (which a store makes as time goes).
func (d *Database) Tables(t testing.TB) []string {
	t.Helper()
	return Query[string](t, d, `SELECT n.nspname || '.' || c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
		WHERE c.relkind IN ('r', 'p') AND NOT c.relispartition AND n.nspname NOT IN ('pg_catalog', 'information_schema') ORDER BY 1`)
}

// NewDatabase returns a new, empty database of c, a cluster of the test's own
// (NewCluster), failing t on an error; it goes when the cluster closes.
func (c *Cluster) NewDatabase(t testing.TB) *Database {
	t.Helper()
	db, err := c.CreateDatabase()
	if err != nil {
		t.Fatal(err)
	}
	return db
}

// OpenStore opens a service's PostgreSQL store for a test with open (given a context
// bounded by timeout and the test's logger), and closes it when the test ends.
func OpenStore[S interface{ Close() error }](t testing.TB, timeout time.Duration, open func(ctx context.Context, log *zap.Logger) (S, error)) S {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	s, err := open(ctx, zaptest.NewLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}
