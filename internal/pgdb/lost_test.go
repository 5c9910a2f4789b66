package pgdb

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"go.uber.org/zap/zaptest"

	"github.com/umbra-e2ee/umbra/internal/pgtest"
	"github.com/umbra-e2ee/umbra/pkg/errs"
)

// TestPoolResetWhenTheServerIsLost: after an operation finds the server silent past its
// timeout (a frozen or cut-off host, the old primary of a failover), the pool closes
// every connection it holds to it instead of handing each out again in turn, where each
// would cost another operation its whole timeout. Once the server answers again, the
// pool's connections are all new ones.
func TestPoolResetWhenTheServerIsLost(t *testing.T) {
	c := pgtest.NewCluster(t, pgtest.Options{})
	d, err := c.CreateDatabase()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	db, err := Open(ctx, Config{URL: d.URL, Store: "test", Schema: testSchema, Migrations: v1, Log: zaptest.NewLogger(t), OpTimeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(db.Close)

	// Three connections in the pool, each a backend of its own.
	backends := func() []int32 {
		t.Helper()
		var mu sync.Mutex
		var pids []int32
		var wg sync.WaitGroup
		for range 3 {
			wg.Go(func() {
				err := db.Pool.AcquireFunc(ctx, func(conn *pgxpool.Conn) error {
					var pid int32
					if err := conn.QueryRow(ctx, "SELECT pg_backend_pid() FROM pg_sleep(0.2)").Scan(&pid); err != nil {
						return err
					}
					mu.Lock()
					pids = append(pids, pid)
					mu.Unlock()
					return nil
				})
				if err != nil {
					t.Error(err)
				}
			})
		}
		wg.Wait()
		return pids
	}
	before := backends()

	c.Freeze()
	op, done := db.Context()
	err = db.InTx(op, pgx.TxOptions{}, func(tx pgx.Tx) error {
		_, err := tx.Exec(op, "INSERT INTO notes (id, body) VALUES ('frozen', '')")
		return err
	})
	done()
	c.Thaw()
	if !errors.Is(err, errs.ErrUnavailable) {
		t.Fatalf("a write to a frozen server: %v; want ErrUnavailable", err)
	}
	after := backends()
	for _, pid := range after {
		if slices.Contains(before, pid) {
			t.Errorf("backend %d, from before the server froze, is still in the pool (before %v, after %v)", pid, before, after)
		}
	}
}

// TestFailover: a pool over a multi-host connection string (target_session_attrs=
// read-write) whose primary freezes (a host that stopped answering) or is killed, and
// whose synchronous standby is then promoted, writes again by itself: on the new
// primary, within the operation timeout of the write the loss caught and a connection
// timeout. (With the pool's connections idle when the primary freezes, pgxpool pings
// each before handing it out, and pgx's closing of one to a frozen server holds its
// place in the pool for up to 15 s: the first write can then take up to about 26 s.
// Not bounded here; docs/storage-postgres.md says so.)
func TestFailover(t *testing.T) {
	for _, tc := range []struct {
		name string
		lose func(*pgtest.Cluster)
	}{{"killed", (*pgtest.Cluster).Kill}, {"frozen", (*pgtest.Cluster).Freeze}} {
		t.Run(tc.name, func(t *testing.T) {
			primary := pgtest.NewCluster(t, pgtest.Options{})
			standby := pgtest.NewStandby(t, primary)
			d, err := primary.CreateDatabase()
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			// A short connection timeout (the frozen host is tried first, and waited
			// for that long) and an operation timeout that leaves room for it.
			const connectTimeout, opTimeout = 2 * time.Second, 8 * time.Second
			db, err := Open(ctx, Config{URL: pgtest.MultiHostURL(d.Name, primary, standby) + "&connect_timeout=2", Store: "test", Schema: testSchema, Migrations: v1, Log: zaptest.NewLogger(t), OpTimeout: opTimeout})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(db.Close)
			t.Cleanup(primary.Kill) // first: the pool's connections to it close at once
			write := func(id string) error {
				op, done := db.Context()
				defer done()
				return db.InTx(op, pgx.TxOptions{}, func(tx pgx.Tx) error {
					_, err := tx.Exec(op, "INSERT INTO notes (id, body) VALUES ($1, '')", id)
					return err
				})
			}
			// Several connections in the pool, as under load.
			var wg sync.WaitGroup
			for i := range 4 {
				wg.Go(func() {
					if err := write(fmt.Sprint("before-", i)); err != nil {
						t.Error(err)
					}
				})
			}
			wg.Wait()
			tc.lose(primary)
			began := time.Now()
			if err := standby.Promote(); err != nil {
				t.Fatal(err)
			}
			var last error
			for n := 0; ; n++ {
				if last = write(fmt.Sprint("after-", n)); last == nil {
					break
				}
				if !errors.Is(last, errs.ErrUnavailable) {
					t.Fatalf("a write during the failover: %v; want ErrUnavailable", last)
				}
				if time.Since(began) > 30*time.Second {
					t.Fatalf("no write succeeded 30 s after the failover: %v", last)
				}
				time.Sleep(100 * time.Millisecond)
			}
			took := time.Since(began)
			if bound := opTimeout + connectTimeout + 4*time.Second; took > bound {
				t.Errorf("the first write after the failover succeeded %v after it; want within %v", took, bound)
			}
			t.Logf("writing again %v after the primary was %s", took.Round(time.Millisecond), tc.name)
		})
	}
}
