package messaging

import (
	"context"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"go.uber.org/zap"

	"github.com/umbra-e2ee/umbra/internal/pgtest"
)

// BenchmarkPostgresWritePath measures durable messages per second through the
// committer and the PostgreSQL store, and in the same run its baseline, on a
// throwaway cluster on this machine (fsync and synchronous_commit on), as
// BenchmarkWritePath does for bbolt:
//
//   - raw-msgs/s: PostgreSQL's rate for the same payloads and concurrency with the best
//     batching: 32 writers, one goroutine that drains every pending write into one
//     transaction with one multi-row INSERT (unnest) of (bigint key, 1 KiB bytea),
//     BEGIN, INSERT and COMMIT in one round trip;
//   - msgs/s: SendOps through the committer into PostgresStore, each sender in its own
//     direct conversation;
//   - %-of-raw: the ratio.
func BenchmarkPostgresWritePath(b *testing.B) {
	var raw, store float64
	var rawWAL, storeWAL int64
	if benchRuns++; benchRuns%2 == 0 {
		rawWAL, raw = walBytes(b, benchPostgresRaw)
		storeWAL, store = walBytes(b, func(b *testing.B) float64 { return benchPostgresCommitter(b, pgtest.NewDatabase(b).URL) })
	} else {
		storeWAL, store = walBytes(b, func(b *testing.B) float64 { return benchPostgresCommitter(b, pgtest.NewDatabase(b).URL) })
		rawWAL, raw = walBytes(b, benchPostgresRaw)
	}
	b.ReportMetric(raw, "raw-msgs/s")
	b.ReportMetric(store, "msgs/s")
	b.ReportMetric(100*store/raw, "%-of-raw")
	b.ReportMetric(float64(rawWAL)/float64(b.N), "raw-WAL-B/msg")
	b.ReportMetric(float64(storeWAL)/float64(b.N), "WAL-B/msg")
	b.ReportMetric(0, "ns/op")
}

// walBytes runs run and returns the bytes of WAL the shared cluster wrote meanwhile
// (pg_current_wal_lsn before and after: the benchmark is all the cluster does), with
// run's result. The database's creation and the schema's migration count in it, a
// few hundred kB: a run of 10,000 messages or more makes them small per message.
func walBytes(b *testing.B, run func(*testing.B) float64) (int64, float64) {
	c := pgtest.Shared(b)
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, c.URL("postgres"))
	if err != nil {
		b.Fatal(err)
	}
	defer conn.Close(ctx)
	var before string
	if err := conn.QueryRow(ctx, "SELECT pg_current_wal_lsn()::text").Scan(&before); err != nil {
		b.Fatal(err)
	}
	rate := run(b)
	var n int64
	if err := conn.QueryRow(ctx, "SELECT (pg_current_wal_lsn() - $1::pg_lsn)::bigint", before).Scan(&n); err != nil {
		b.Fatal(err)
	}
	return n, rate
}

func benchPostgresRaw(b *testing.B) float64 {
	db := pgtest.NewDatabase(b)
	ctx := context.Background()
	pool, err := pgxpool.New(ctx, db.URL)
	if err != nil {
		b.Fatal(err)
	}
	defer pool.Close()
	if _, err := pool.Exec(ctx, "CREATE TABLE raw (k bigint PRIMARY KEY, v bytea NOT NULL)"); err != nil {
		b.Fatal(err)
	}
	var seq int64
	return rawBatches(b, func(values [][]byte) error {
		keys := make([]int64, len(values))
		for i := range values {
			seq++
			keys[i] = seq
		}
		// BEGIN, the INSERT and COMMIT in one round trip, as the store sends its
		// batches (umbra bench messaging --store measures it the same way).
		conn, err := pool.Acquire(ctx)
		if err != nil {
			return err
		}
		defer conn.Release()
		var q pgx.Batch
		q.Queue("BEGIN")
		q.Queue("INSERT INTO raw (k, v) SELECT * FROM unnest($1::bigint[], $2::bytea[])", keys, values)
		q.Queue("COMMIT")
		if err := conn.SendBatch(ctx, &q).Close(); err != nil {
			conn.Exec(ctx, "ROLLBACK")
			return err
		}
		return nil
	})
}

func benchPostgresCommitter(b *testing.B, url string) float64 {
	store, err := OpenPostgresStore(context.Background(), url, PostgresOptions{}, zap.NewNop())
	if err != nil {
		b.Fatal(err)
	}
	return benchCommitter(b, store, false)
}
