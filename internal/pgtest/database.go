// A cluster's databases: making one, and running SQL in it as the superuser.

package pgtest

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"

	"github.com/jackc/pgx/v5"
)

var databases atomic.Int64

// CreateDatabase creates a new, empty database and returns it.
func (c *Cluster) CreateDatabase() (*Database, error) {
	name := fmt.Sprintf("umbra_test_%d", databases.Add(1))
	if err := c.Exec("postgres", "CREATE DATABASE "+name+" TEMPLATE template0"); err != nil {
		return nil, fmt.Errorf("pgtest: create database %s: %w", name, err)
	}
	return &Database{Cluster: c, Name: name, URL: c.URL(name)}, nil
}

// Database is one database of a cluster.
type Database struct {
	Cluster *Cluster
	Name    string
	// URL connects to it as the superuser.
	URL string
}

// Exec runs sql in the database as the superuser, failing t on an error.
func (d *Database) Exec(t testing.TB, sql string, args ...any) {
	t.Helper()
	if err := d.Cluster.Exec(d.Name, sql, args...); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
}

// URLAs connects to the database as role with password.
func (d *Database) URLAs(role, password string) string {
	return d.Cluster.URLAs(role, password, d.Name)
}

// Conn connects to the database as the superuser; the connection closes when the test
// ends.
func (d *Database) Conn(t testing.TB) *pgx.Conn {
	t.Helper()
	conn, err := pgx.Connect(context.Background(), d.URL)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	return conn
}

// Query runs sql in d as the superuser and returns its rows' one column.
func Query[T any](t testing.TB, d *Database, sql string, args ...any) []T {
	t.Helper()
	return QueryWith[T](t, context.Background(), d.Conn(t), sql, args...)
}

// Querier runs a query: a pool, a connection, a transaction.
type Querier interface {
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
}

// QueryWith runs sql with q (a store's own pool, say) and returns its rows' one column,
// failing t on an error.
func QueryWith[T any](t testing.TB, ctx context.Context, q Querier, sql string, args ...any) []T {
	t.Helper()
	rows, err := q.Query(ctx, sql, args...)
	if err != nil {
		t.Fatal(err)
	}
	out, err := pgx.CollectRows(rows, pgx.RowTo[T])
	if err != nil {
		t.Fatal(err)
	}
	return out
}
