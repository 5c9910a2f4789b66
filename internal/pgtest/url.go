package pgtest

import (
	"context"
	"testing"

	"github.com/jackc/pgx/v5"
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
