package bench

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
)

// RawPostgresConfig describes a raw PostgreSQL write run.
type RawPostgresConfig struct {
	// URL is the database; the run makes a table of its own in the schema
	// umbra_bench and drops it at the end.
	URL string
	// Writers write concurrently, each waiting for its write to be durable.
	Writers int
	// ValueSize is the size of each value.
	ValueSize int
	// Duration bounds the run.
	Duration time.Duration
	// OnMeasure, when set, is called when the run starts and when it ends (start
	// false), for measurements of the caller's own.
	OnMeasure func(start bool)
}

// RawPostgres measures the best durable write rate PostgreSQL gives for the same
// payloads and concurrency as a messaging run: Writers goroutines each hand a value to
// one committer and wait until it is durable; the committer takes every pending write
// (no timer delay) and commits them as one transaction of one multi-row INSERT (unnest
// of (bigint key, bytea value)), BEGIN, INSERT and COMMIT sent in one round trip, with
// the server's synchronous_commit (on unless the database says otherwise: the run
// reports it). It is the limit a durable store built on PostgreSQL can approach.
func RawPostgres(ctx context.Context, cfg RawPostgresConfig) (RawResult, string, error) {
	if cfg.Writers <= 0 || cfg.ValueSize < 8 || cfg.Duration <= 0 {
		return RawResult{}, "", fmt.Errorf("bench: raw run needs writers, values of 8 bytes or more, and a duration")
	}
	conn, err := pgx.Connect(ctx, cfg.URL)
	if err != nil {
		return RawResult{}, "", fmt.Errorf("bench: raw PostgreSQL baseline: %w", err)
	}
	defer conn.Close(context.Background())
	var syncCommit string
	if err := conn.QueryRow(ctx, "SHOW synchronous_commit").Scan(&syncCommit); err != nil {
		return RawResult{}, "", fmt.Errorf("bench: raw PostgreSQL baseline: %w", err)
	}
	suffix := make([]byte, 6)
	rand.Read(suffix)
	table := "umbra_bench.raw_" + hex.EncodeToString(suffix)
	if _, err := conn.Exec(ctx, "CREATE SCHEMA IF NOT EXISTS umbra_bench"); err != nil {
		return RawResult{}, syncCommit, fmt.Errorf("bench: raw PostgreSQL baseline: %w", err)
	}
	if _, err := conn.Exec(ctx, "CREATE TABLE "+table+" (k bigint PRIMARY KEY, v bytea NOT NULL)"); err != nil {
		return RawResult{}, syncCommit, fmt.Errorf("bench: raw PostgreSQL baseline: %w", err)
	}
	defer conn.Exec(context.Background(), "DROP TABLE "+table)
	insert := "INSERT INTO " + table + " (k, v) SELECT * FROM unnest($1::bigint[], $2::bytea[])"

	var seq int64
	res, err := drainWrites(ctx, cfg.Writers, cfg.ValueSize, cfg.Duration, 0, cfg.OnMeasure, func(values [][]byte) error {
		keys := make([]int64, len(values))
		for i := range values {
			seq++
			keys[i] = seq
		}
		var q pgx.Batch
		q.Queue("BEGIN")
		q.Queue(insert, keys, values)
		q.Queue("COMMIT")
		err := conn.SendBatch(ctx, &q).Close()
		if err != nil && conn.PgConn().TxStatus() != 'I' {
			conn.Exec(ctx, "ROLLBACK")
		}
		return err
	})
	if err != nil && ctx.Err() == nil {
		return res, syncCommit, fmt.Errorf("bench: raw PostgreSQL baseline: %w", err)
	}
	return res, syncCommit, err
}
