package pgdb

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"go.uber.org/zap/zaptest"

	"github.com/umbra-e2ee/umbra/internal/pgtest"
	"github.com/umbra-e2ee/umbra/pkg/errs"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

const testSchema = "umbra_test"

var (
	v1 = sub("testdata/v1")
	v2 = sub("testdata/v2")
)

func sub(dir string) fs.FS { return os.DirFS(dir) }

func open(t *testing.T, url string, migrations fs.FS) (*DB, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	db, err := Open(ctx, Config{URL: url, Store: "test", Schema: testSchema, Migrations: migrations, Log: zaptest.NewLogger(t)})
	if err == nil {
		t.Cleanup(db.Close)
	}
	return db, err
}

func mustOpen(t *testing.T, url string, migrations fs.FS) *DB {
	t.Helper()
	db, err := open(t, url, migrations)
	if err != nil {
		t.Fatal(err)
	}
	return db
}

// notesDB opens a database of the test's own at v1, with the notes rows of values (an
// SQL VALUES list) inserted.
func notesDB(t *testing.T, values string) (*pgtest.Database, *DB) {
	t.Helper()
	d := pgtest.NewDatabase(t)
	db := mustOpen(t, d.URL, v1)
	if _, err := db.Pool.Exec(context.Background(), "INSERT INTO notes (id, body) VALUES "+values); err != nil {
		t.Fatal(err)
	}
	return d, db
}

func versions(t *testing.T, d *pgtest.Database) []int64 {
	t.Helper()
	return pgtest.Query[int64](t, d, "SELECT version_id FROM umbra_test.goose_db_version ORDER BY id")
}

func TestOpenMigratesInTheServiceSchema(t *testing.T) {
	d := pgtest.NewDatabase(t)
	db := mustOpen(t, d.URL, v1)
	ctx := context.Background()
	if v, err := db.SchemaVersion(ctx); err != nil || v != 1 {
		t.Fatalf("version after the first open: %d, %v; want 1", v, err)
	}
	// The tables and goose's version table are in the service's schema, which is the
	// connections' search_path: nothing in public.
	want := []string{"umbra_test.goose_db_version", "umbra_test.notes"}
	if got := d.Tables(t); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("tables = %v, want %v", got, want)
	}
	if _, err := db.Pool.Exec(ctx, "INSERT INTO notes (id, body) VALUES ('a', 'x')"); err != nil {
		t.Fatalf("unqualified insert: %v", err)
	}
	db.Close()

	// A newer binary brings the schema forward; opening again changes nothing.
	db2 := mustOpen(t, d.URL, v2)
	if v, err := db2.SchemaVersion(ctx); err != nil || v != 2 {
		t.Fatalf("version after the upgrade: %d, %v; want 2", v, err)
	}
	mustOpen(t, d.URL, v2)
	if got := versions(t, d); fmt.Sprint(got) != "[0 1 2]" {
		t.Errorf("goose's versions = %v, want [0 1 2]: each migration applied once", got)
	}
	var tag *string
	if err := db2.Pool.QueryRow(ctx, "SELECT tag FROM notes WHERE id = 'a'").Scan(&tag); err != nil || tag != nil {
		t.Errorf("the row written before the upgrade: tag %v, %v", tag, err)
	}
}

func TestReplicasStartingTogetherMigrateOnce(t *testing.T) {
	d := pgtest.NewDatabase(t)
	var wg sync.WaitGroup
	errc := make(chan error, 4)
	for range 4 {
		wg.Go(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			db, err := Open(ctx, Config{URL: d.URL, Store: "test", Schema: testSchema, Migrations: v2})
			if err == nil {
				db.Close()
			}
			errc <- err
		})
	}
	wg.Wait()
	close(errc)
	for err := range errc {
		if err != nil {
			t.Error(err)
		}
	}
	if got := versions(t, d); fmt.Sprint(got) != "[0 1 2]" {
		t.Errorf("goose's versions = %v, want [0 1 2]", got)
	}
}

// TestSchemaFromANewerVersionIsRefused: a binary older than the schema refuses it,
// naming both versions, and writes nothing.
func TestSchemaFromANewerVersionIsRefused(t *testing.T) {
	d := pgtest.NewDatabase(t)
	mustOpen(t, d.URL, v2).Close()
	beforeTables, beforeVersions := d.Tables(t), versions(t, d)
	_, err := open(t, d.URL, v1)
	if err == nil {
		t.Fatal("a binary that knows version 1 opened a schema at version 2")
	}
	for _, want := range []string{"test store", "version 2", "up to 1", "umbra_test"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not say %q", err, want)
		}
	}
	if got := d.Tables(t); fmt.Sprint(got) != fmt.Sprint(beforeTables) {
		t.Errorf("tables changed: %v, were %v", got, beforeTables)
	}
	if got := versions(t, d); fmt.Sprint(got) != fmt.Sprint(beforeVersions) {
		t.Errorf("versions changed: %v, were %v", got, beforeVersions)
	}
}

// TestBadConnectionStrings: each gives one clear error that names what is wrong, and
// never the password.
func TestBadConnectionStrings(t *testing.T) {
	d := pgtest.NewDatabase(t)
	c := d.Cluster
	const secret = "s3cr3t-Pa55word"
	// A port with nothing listening: the cluster's own, once a stopped cluster frees it,
	// would race; a port from a closed listener is as good.
	free := freePort(t)
	cases := []struct {
		name string
		url  string
		want []string
	}{
		{"unreachable", fmt.Sprintf("postgres://postgres:%s@127.0.0.1:%d/x?sslmode=disable&connect_timeout=2", secret, free), []string{"cannot reach PostgreSQL at 127.0.0.1:", "connection refused", `user "postgres"`}},
		{"wrong password", c.URLAs(pgtest.Superuser, secret, d.Name), []string{"refused the user \"postgres\"", "password"}},
		{"no such database", c.URLAs(pgtest.Superuser, c.Password(), "nope"), []string{`no database "nope"`, "CREATE DATABASE"}},
		{"does not parse", "postgres://postgres:" + secret + "@127.0.0.1:notaport/x", []string{"connection string does not parse"}},
		{"unknown setting", "postgres://postgres:" + secret + "@127.0.0.1/x?target_session_attrs=bogus", []string{"connection string does not parse"}},
		{"several hosts, none up", fmt.Sprintf("postgres://postgres:%s@127.0.0.1:%d,127.0.0.1:%d/x?sslmode=disable&target_session_attrs=read-write", secret, free, free), []string{"cannot reach PostgreSQL"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := open(t, tc.url, v1)
			if err == nil {
				t.Fatal("opened")
			}
			msg := err.Error()
			t.Log(msg)
			if strings.Contains(msg, secret) {
				t.Errorf("the error shows the password: %s", msg)
			}
			if strings.Contains(msg, "\n") {
				t.Errorf("the error is more than one line: %q", msg)
			}
			for _, w := range tc.want {
				if !strings.Contains(msg, w) {
					t.Errorf("error %q does not say %q", msg, w)
				}
			}
		})
	}
}

// TestRedact: a message that quotes the connection string loses its password in every
// form the string holds it (pgx's own redaction is best effort).
func TestRedact(t *testing.T) {
	for _, tc := range []struct {
		conn, msg string
		secrets   []string
	}{
		{"postgres://u:p%40ss@h/db", "bad p@ss and p%40ss", []string{"p@ss", "p%40ss"}},
		{"postgres://u:raw:pw@h:x/db", "parse postgres://u:raw:pw@h:x/db", []string{"raw:pw"}},
		{"host=h password='kv-secret' dbname=x", "cannot use kv-secret", []string{"kv-secret"}},
	} {
		got := redact(tc.msg, tc.conn)
		for _, secret := range tc.secrets {
			if strings.Contains(got, secret) {
				t.Errorf("redact(%q, %q) = %q: shows %q", tc.msg, tc.conn, got, secret)
			}
		}
	}
}

// TestUserWithoutRightsIsRefused: a database user that lacks a right Open needs gets an
// error naming the right and how to grant it, and nothing is written.
func TestUserWithoutRightsIsRefused(t *testing.T) {
	d := pgtest.NewDatabase(t)
	role := "umbra_limited_" + d.Name
	d.Exec(t, fmt.Sprintf("CREATE ROLE %s LOGIN PASSWORD 'pw'", role))
	t.Cleanup(func() {
		d.Cluster.Exec(d.Name, "DROP OWNED BY "+role)
		d.Cluster.Exec("postgres", "DROP ROLE IF EXISTS "+role)
	})
	d.Exec(t, "REVOKE CREATE ON SCHEMA public FROM PUBLIC")
	d.Exec(t, "REVOKE CREATE, TEMPORARY ON DATABASE "+d.Name+" FROM PUBLIC")
	url := d.URLAs(role, "pw")

	steps := []struct {
		name  string
		setup string   // run as the superuser first
		fs    fs.FS    // the migrations the binary has
		want  []string // in the error; none: Open succeeds
	}{
		{"no schema and no CREATE on the database", "", v1, []string{"lacks the right CREATE on database", "GRANT CREATE ON DATABASE", "CREATE SCHEMA umbra_test AUTHORIZATION " + role}},
		{"a schema without USAGE", "CREATE SCHEMA umbra_test", v1, []string{"lacks the right USAGE on schema umbra_test", "GRANT USAGE"}},
		{"USAGE but no CREATE, migrations pending", "GRANT USAGE ON SCHEMA umbra_test TO " + role, v1, []string{"lacks the right CREATE on schema umbra_test", "from version 0 to 1"}},
		// An operator migrates as the owner, and runs the service as a user with the
		// rights on the tables only; until it has them all it is refused.
		{"tables without rights", "", v1, []string{"lacks the right SELECT on table umbra_test.goose_db_version"}},
		{"some rights on the tables", "GRANT SELECT, INSERT ON ALL TABLES IN SCHEMA umbra_test TO " + role, v1, []string{"UPDATE on table umbra_test.goose_db_version", "DELETE on table umbra_test.notes", "GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA umbra_test"}},
		{"every right on the tables, nothing pending", "GRANT UPDATE, DELETE ON ALL TABLES IN SCHEMA umbra_test TO " + role, v1, nil},
		{"a migration pending without CREATE", "", v2, []string{"CREATE on schema umbra_test", "from version 1 to 2"}},
	}
	for i, s := range steps {
		if s.setup != "" {
			d.Exec(t, s.setup)
		}
		if s.name == "tables without rights" {
			// The owner's migration: the superuser's Open.
			mustOpen(t, d.URL, v1).Close()
		}
		before := d.Tables(t)
		db, err := open(t, url, s.fs)
		if s.want == nil {
			if err != nil {
				t.Fatalf("step %d (%s): %v", i, s.name, err)
			}
			db.Close()
			continue
		}
		if err == nil {
			t.Fatalf("step %d (%s): opened", i, s.name)
		}
		t.Logf("%s: %v", s.name, err)
		for _, w := range s.want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("step %d (%s): error %q does not say %q", i, s.name, err, w)
			}
		}
		if got := d.Tables(t); fmt.Sprint(got) != fmt.Sprint(before) {
			t.Errorf("step %d (%s): tables changed to %v from %v", i, s.name, got, before)
		}
	}
}

func TestInTxRetriesSerializationFailures(t *testing.T) {
	_, db := notesDB(t, "('counter', '\\x00')")
	ctx := context.Background()
	// Writers of one row under SERIALIZABLE conflict; InTx runs the losers again, so
	// every increment counts. (Of conflicting transactions one always commits, so with
	// fewer writers than MaxAttempts every writer gets through.)
	const writers = 4
	var attempts atomic.Int64
	var wg sync.WaitGroup
	for range writers {
		wg.Go(func() {
			err := db.InTx(ctx, pgx.TxOptions{IsoLevel: pgx.Serializable}, func(tx pgx.Tx) error {
				attempts.Add(1)
				var n int
				if err := tx.QueryRow(ctx, "SELECT length(body) FROM notes WHERE id = 'counter'").Scan(&n); err != nil {
					return err
				}
				time.Sleep(2 * time.Millisecond) // let the others read the same
				_, err := tx.Exec(ctx, "UPDATE notes SET body = body || '\\x00'::bytea WHERE id = 'counter'")
				return err
			})
			if err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	var n int
	if err := db.Pool.QueryRow(ctx, "SELECT length(body) FROM notes WHERE id = 'counter'").Scan(&n); err != nil || n != writers+1 {
		t.Errorf("length %d (%v), want %d", n, err, writers+1)
	}
	if attempts.Load() == writers {
		t.Logf("no conflict happened (%d attempts): the retry was not exercised", attempts.Load())
	}

	// A transaction that keeps failing is given up after MaxAttempts, as UNAVAILABLE.
	attempts.Store(0)
	err := db.InTx(ctx, pgx.TxOptions{}, func(pgx.Tx) error {
		attempts.Add(1)
		return &pgconn.PgError{Code: "40001", Message: "could not serialize access"}
	})
	if !errors.Is(err, errs.ErrUnavailable) || attempts.Load() != MaxAttempts {
		t.Errorf("always failing: %v after %d attempts; want ErrUnavailable after %d", err, attempts.Load(), MaxAttempts)
	}
	// fn's own errors are neither retried nor changed.
	attempts.Store(0)
	err = db.InTx(ctx, pgx.TxOptions{}, func(pgx.Tx) error { attempts.Add(1); return errs.NotFoundf("nothing") })
	if !errors.Is(err, errs.ErrNotFound) || err.Error() != "nothing" || attempts.Load() != 1 {
		t.Errorf("fn's ErrNotFound: %v after %d attempts", err, attempts.Load())
	}
}

func TestErrorsMapToKinds(t *testing.T) {
	d, db := notesDB(t, "('a', '')")
	ctx := context.Background()
	_, dup := db.Pool.Exec(ctx, "INSERT INTO notes (id, body) VALUES ('a', '')")
	if !IsUniqueViolation(dup) {
		t.Errorf("a second row with one key: %v, want a unique violation", dup)
	}
	// A backend terminated by an administrator.
	conn, err := db.Pool.Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var pid uint32
	conn.QueryRow(ctx, "SELECT pg_backend_pid()").Scan(&pid)
	d.Exec(t, "SELECT pg_terminate_backend($1)", pid)
	_, terminated := conn.Exec(ctx, "SELECT 1")
	conn.Release()

	cases := []struct {
		name string
		err  error
		kind error
	}{
		{"unique violation, not asked for", dup, nil},
		{"terminated by an administrator", terminated, errs.ErrUnavailable},
		{"disk full", &pgconn.PgError{Code: "53100", Message: "could not extend file"}, errs.ErrStorageFull},
		{"too many connections", &pgconn.PgError{Code: "53300"}, errs.ErrUnavailable},
		{"admin shutdown", &pgconn.PgError{Code: "57P01"}, errs.ErrUnavailable},
		{"a standby", &pgconn.PgError{Code: "25006"}, errs.ErrUnavailable},
		{"connection failure", &pgconn.PgError{Code: "08006"}, errs.ErrUnavailable},
		{"deadlock", &pgconn.PgError{Code: "40P01"}, errs.ErrUnavailable},
		{"corrupted", &pgconn.PgError{Code: "XX001"}, errs.ErrDamaged},
		{"timeout", context.DeadlineExceeded, errs.ErrUnavailable},
		{"store's own kind", errs.NotFoundf("app x not found"), errs.ErrNotFound},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got := db.Err(tc.err)
			if tc.kind == nil {
				var kind *errs.Error
				if errors.As(got, &kind) {
					t.Errorf("Err(%v) = %v, a kind; want an internal error", tc.err, got)
				}
				return
			}
			if !errors.Is(got, tc.kind) {
				t.Errorf("Err(%v) = %v, want %v", tc.err, got, tc.kind)
			}
			if strings.Contains(got.Error(), "127.0.0.1") {
				t.Errorf("the caller's message names the server: %s", got)
			}
		})
	}
	if got := db.Err(&pgconn.PgError{Code: "53100"}); got.Error() != errs.StorageFullMessage {
		t.Errorf("disk full says %q, want %q", got, errs.StorageFullMessage)
	}
}

// TestDatabaseDown: while the server is down requests fail fast with UNAVAILABLE and
// Ready fails; once it is back both recover by themselves.
func TestDatabaseDown(t *testing.T) {
	c := pgtest.NewCluster(t, pgtest.Options{})
	d := c.NewDatabase(t)
	db := mustOpen(t, d.URL, v1)
	ctx := context.Background()
	if err := db.Ready(ctx); err != nil {
		t.Fatalf("Ready with the server up: %v", err)
	}
	c.Stop()
	start := time.Now()
	err := db.InTx(ctx, pgx.TxOptions{}, func(tx pgx.Tx) error {
		_, err := tx.Exec(ctx, "INSERT INTO notes (id, body) VALUES ('down', '')")
		return err
	})
	if !errors.Is(err, errs.ErrUnavailable) {
		t.Errorf("a write with the server down: %v, want ErrUnavailable", err)
	}
	if took := time.Since(start); took > 5*time.Second {
		t.Errorf("the failing write took %v", took)
	}
	if err := db.Ready(ctx); err == nil {
		t.Error("Ready with the server down")
	}
	if err := c.Restart(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for db.Ready(ctx) != nil {
		if time.Now().After(deadline) {
			t.Fatalf("not ready 10 s after the server came back: %v", db.Ready(ctx))
		}
		time.Sleep(50 * time.Millisecond)
	}
	if _, err := db.Pool.Exec(ctx, "INSERT INTO notes (id, body) VALUES ('up', '')"); err != nil {
		t.Errorf("a write once the server is back: %v", err)
	}
}

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}
