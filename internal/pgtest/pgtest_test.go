package pgtest

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

func TestMain(m *testing.M) { Main(m) }

func connect(t *testing.T, url string) *pgx.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	return conn
}

// connectOnceReplayed connects to a database on a standby, waiting until deadline for
// the standby to have replayed its creation.
func connectOnceReplayed(t *testing.T, url string, deadline time.Time) *pgx.Conn {
	t.Helper()
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		conn, err := pgx.Connect(ctx, url)
		cancel()
		if err == nil {
			t.Cleanup(func() { conn.Close(context.Background()) })
			return conn
		}
		var pgErr *pgconn.PgError
		if !errors.As(err, &pgErr) || pgErr.Code != "3D000" || time.Now().After(deadline) {
			t.Fatal(err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestDatabasesAreSeparateAndDurable: each test gets an empty database of its own, on a
// server that runs with fsync on and answers only on loopback, with a password.
func TestDatabasesAreSeparateAndDurable(t *testing.T) {
	a, b := NewDatabase(t), NewDatabase(t)
	if a.Name == b.Name {
		t.Fatalf("two databases named %s", a.Name)
	}
	ca := connect(t, a.URL)
	ctx := context.Background()
	if _, err := ca.Exec(ctx, "CREATE TABLE t (x int)"); err != nil {
		t.Fatal(err)
	}
	var n int
	if err := connect(t, b.URL).QueryRow(ctx, "SELECT count(*) FROM pg_tables WHERE tablename = 't'").Scan(&n); err != nil || n != 0 {
		t.Errorf("the other database sees %d tables named t (%v)", n, err)
	}
	for setting, want := range map[string]string{"fsync": "on", "synchronous_commit": "on", "listen_addresses": "127.0.0.1"} {
		var got string
		if err := ca.QueryRow(ctx, "SELECT current_setting($1)", setting).Scan(&got); err != nil || got != want {
			t.Errorf("%s = %q (%v), want %q", setting, got, err, want)
		}
	}
	if _, err := pgx.Connect(ctx, a.URLAs(Superuser, "wrong")); err == nil {
		t.Error("a wrong password connected")
	}
}

// TestClusterRestarts: a cluster of the test's own can be killed and restarted, and
// keeps what was committed.
func TestClusterRestarts(t *testing.T) {
	c := NewCluster(t, Options{})
	db, err := c.CreateDatabase()
	if err != nil {
		t.Fatal(err)
	}
	db.Exec(t, "CREATE TABLE t (x int)")
	db.Exec(t, "INSERT INTO t VALUES (42)")
	c.Kill()
	if err := c.Exec(db.Name, "SELECT 1"); err == nil {
		t.Fatal("a killed server answered")
	}
	if err := c.Restart(); err != nil {
		t.Fatal(err)
	}
	var x int
	if err := connect(t, db.URL).QueryRow(context.Background(), "SELECT x FROM t").Scan(&x); err != nil || x != 42 {
		t.Errorf("after a crash and restart: x = %d (%v), want 42", x, err)
	}
}

// recorder is a test that records whether it was skipped or failed, and how.
type recorder struct {
	*testing.T
	skipped, failed string
}

func (r *recorder) Helper()                           {}
func (r *recorder) Skipf(format string, args ...any)  { r.skipped = fmt.Sprintf(format, args...) }
func (r *recorder) Fatalf(format string, args ...any) { r.failed = fmt.Sprintf(format, args...) }
func (r *recorder) Fatal(args ...any)                 { r.failed = fmt.Sprint(args...) }

// TestMissingBinariesSkipOrFail: without PostgreSQL's binaries a test is skipped with
// the install command, and fails instead when UMBRA_TEST_POSTGRES=require (CI).
func TestMissingBinariesSkipOrFail(t *testing.T) {
	saved := libDir
	libDir = t.TempDir()
	t.Cleanup(func() { libDir = saved })
	t.Setenv("PATH", t.TempDir()) // no pg_config
	_, err := BinDir()
	if !errors.Is(err, ErrNoBinaries) {
		t.Fatalf("BinDir without binaries: %v, want ErrNoBinaries", err)
	}
	for _, require := range []string{"", "require"} {
		t.Setenv(RequireEnv, require)
		r := &recorder{T: t}
		Unavailable(r, err)
		got := r.skipped
		if require == "require" {
			got = r.failed
			if r.skipped != "" {
				t.Errorf("%s=require: skipped (%s), want a failure", RequireEnv, r.skipped)
			}
		} else if r.failed != "" {
			t.Errorf("without %s=require: failed (%s), want a skip", RequireEnv, r.failed)
		}
		if !strings.Contains(got, "apt-get install postgresql") {
			t.Errorf("%s=%q: message %q does not say how to install", RequireEnv, require, got)
		}
	}
}

// TestStandbyFailover: a synchronous standby holds every commit the primary
// acknowledged (the primary's commits wait for it), refuses writes until it is
// promoted, and once the primary is killed and the standby promoted, a multi-host
// connection string that asks for read-write reaches it.
func TestStandbyFailover(t *testing.T) {
	primary := NewCluster(t, Options{})
	standby := NewStandby(t, primary)
	db, err := primary.CreateDatabase()
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	multi := MultiHostURL(db.Name, primary, standby)
	if !strings.Contains(multi, primary.Addr()+","+standby.Addr()) || !strings.Contains(multi, "target_session_attrs=read-write") {
		t.Fatalf("MultiHostURL: %s", multi)
	}
	pc := connect(t, multi)
	var sync string
	if err := pc.QueryRow(ctx, "SELECT sync_state FROM pg_stat_replication").Scan(&sync); err != nil || sync != "sync" {
		t.Fatalf("the standby's sync_state on the primary: %q, %v; want sync", sync, err)
	}
	if _, err := pc.Exec(ctx, "CREATE TABLE t (x int)"); err != nil {
		t.Fatal(err)
	}
	for i := range 20 {
		if _, err := pc.Exec(ctx, "INSERT INTO t VALUES ($1)", i); err != nil {
			t.Fatal(err)
		}
	}
	// A synchronous commit has been flushed by the standby when it returns; visible
	// there a moment later (remote_apply is not asked for). That holds for the
	// database itself too: until the standby has replayed CREATE DATABASE, connecting
	// to it there fails with 3D000.
	deadline := time.Now().Add(10 * time.Second)
	sc := connectOnceReplayed(t, standby.URL(db.Name), deadline)
	for n := 0; n != 20; time.Sleep(20 * time.Millisecond) {
		if err := sc.QueryRow(ctx, "SELECT count(*) FROM t").Scan(&n); err != nil {
			t.Fatal(err)
		}
		if time.Now().After(deadline) {
			t.Fatalf("the standby has %d rows of 20", n)
		}
	}
	if _, err := sc.Exec(ctx, "INSERT INTO t VALUES (100)"); err == nil || !strings.Contains(err.Error(), "25006") {
		t.Errorf("a write on the standby: %v; want read_only_sql_transaction", err)
	}

	primary.Kill()
	if err := standby.Promote(); err != nil {
		t.Fatal(err)
	}
	after := connect(t, multi)
	if _, err := after.Exec(ctx, "INSERT INTO t VALUES (20)"); err != nil {
		t.Fatalf("a write through the multi-host string after the failover: %v", err)
	}
	var n int
	if err := after.QueryRow(ctx, "SELECT count(*) FROM t").Scan(&n); err != nil || n != 21 {
		t.Errorf("%d rows on the promoted standby (%v); want 21", n, err)
	}
}

// TestFreeze: a frozen server answers nothing (a query waits until its context ends),
// answers again once thawed, and a frozen one is closed at once.
func TestFreeze(t *testing.T) {
	c := NewCluster(t, Options{})
	conn := connect(t, c.URL("postgres"))
	c.Freeze()
	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	var one int
	err := conn.QueryRow(ctx, "SELECT 1").Scan(&one)
	cancel()
	if err == nil {
		t.Fatal("a frozen server answered")
	}
	c.Thaw()
	if one, err := pgx.Connect(context.Background(), c.URL("postgres")); err != nil {
		t.Fatalf("a thawed server: %v", err)
	} else {
		one.Close(context.Background())
	}
	c.Freeze()
	began := time.Now()
	c.Stop()
	if took := time.Since(began); took > 10*time.Second {
		t.Errorf("stopping a frozen server took %v", took)
	}
}
