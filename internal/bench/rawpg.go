package bench

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"sync"
	"sync/atomic"
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

	type write struct {
		value []byte
		done  chan error
	}
	queue := make(chan *write, cfg.Writers)
	stopLoop := make(chan struct{})
	var loop sync.WaitGroup
	loop.Go(func() {
		var seq int64
		for {
			var batch []*write
			select {
			case w := <-queue:
				batch = append(batch, w)
			case <-stopLoop:
				return
			}
		drain:
			for {
				select {
				case w := <-queue:
					batch = append(batch, w)
				default:
					break drain
				}
			}
			keys, values := make([]int64, len(batch)), make([][]byte, len(batch))
			for i, w := range batch {
				seq++
				keys[i], values[i] = seq, w.value
			}
			var q pgx.Batch
			q.Queue("BEGIN")
			q.Queue(insert, keys, values)
			q.Queue("COMMIT")
			err := conn.SendBatch(ctx, &q).Close()
			if err != nil && conn.PgConn().TxStatus() != 'I' {
				conn.Exec(ctx, "ROLLBACK")
			}
			for _, w := range batch {
				w.done <- err
			}
		}
	})
	defer func() { close(stopLoop); loop.Wait() }()

	var (
		count   atomic.Int64
		stopped atomic.Bool
		failed  atomic.Pointer[error]
		wg      sync.WaitGroup
	)
	if cfg.OnMeasure != nil {
		cfg.OnMeasure(true)
	}
	start := time.Now()
	for range cfg.Writers {
		wg.Go(func() {
			value := make([]byte, cfg.ValueSize)
			rand.Read(value)
			w := &write{value: value, done: make(chan error, 1)}
			for i := 0; ; i++ {
				if stopped.Load() || ctx.Err() != nil {
					return
				}
				binary.BigEndian.PutUint64(value, uint64(i))
				queue <- w
				if err := <-w.done; err != nil {
					failed.Store(&err)
					stopped.Store(true)
					return
				}
				count.Add(1)
			}
		})
	}
	select {
	case <-time.After(cfg.Duration):
	case <-ctx.Done():
	}
	stopped.Store(true)
	wg.Wait()
	res := RawResult{Writes: int(count.Load()), Elapsed: time.Since(start)}
	if cfg.OnMeasure != nil {
		cfg.OnMeasure(false)
	}
	if p := failed.Load(); p != nil {
		return res, syncCommit, fmt.Errorf("bench: raw PostgreSQL baseline: %w", *p)
	}
	return res, syncCommit, ctx.Err()
}
