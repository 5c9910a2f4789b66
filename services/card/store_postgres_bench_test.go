package card

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/umbra-e2ee/umbra/internal/pgtest"
	"github.com/umbra-e2ee/umbra/pkg/e2ee"
	cardstoragev1 "github.com/umbra-e2ee/umbra/proto/umbra/storage/card/v1"
)

// pgBenchEvents appends n publication events of new identities of app to the card
// event feed in db, in one transaction (COPY), as Publish writes them (the cards
// themselves are not stored: the log reads only the feed), as benchEvents does in
// card.db.
func pgBenchEvents(b *testing.B, conn *pgx.Conn, app string, next *uint64, n int) {
	b.Helper()
	ctx := context.Background()
	at := timestamppb.New(time.Date(2026, 12, 6, 12, 0, 0, 0, time.UTC))
	tx, err := conn.Begin(ctx)
	if err != nil {
		b.Fatal(err)
	}
	defer tx.Rollback(ctx)
	var last int64
	if err := tx.QueryRow(ctx, "SELECT last FROM "+Schema+".card_event_sequence FOR UPDATE").Scan(&last); err != nil {
		b.Fatal(err)
	}
	rows := make([][]any, n)
	for i := range rows {
		*next++
		last++
		id := "u_" + b32.EncodeToString(binary.BigEndian.AppendUint64(make([]byte, 12), *next))
		card := sha256.Sum256([]byte(id))
		rec, err := records.Encode(&cardstoragev1.CardEventRecord{
			Sequence: uint64(last), AppId: app, Identity: id, CardId: card[:],
			Kind: cardstoragev1.CardEventRecordKind_CARD_EVENT_RECORD_KIND_PUBLISHED, OccurredAt: at,
		})
		if err != nil {
			b.Fatal(err)
		}
		rows[i] = []any{last, rec}
	}
	if _, err := tx.CopyFrom(ctx, pgx.Identifier{Schema, "card_events"}, []string{"sequence", "record"}, pgx.CopyFromRows(rows)); err != nil {
		b.Fatal(err)
	}
	if _, err := tx.Exec(ctx, "UPDATE "+Schema+".card_event_sequence SET last = $1", last); err != nil {
		b.Fatal(err)
	}
	if err := tx.Commit(ctx); err != nil {
		b.Fatal(err)
	}
}

// benchDatabase is a database in a cluster of the benchmark's own, with the shared
// buffers of a small production server (256 MB, where the tests' clusters have 16 MB),
// so that the working set of 100,000 identities' trees is in memory, as it would be.
func benchDatabase(b *testing.B) *pgtest.Database {
	b.Helper()
	c := pgtest.NewCluster(b, pgtest.Options{Settings: map[string]string{"shared_buffers": "256MB"}})
	db, err := c.CreateDatabase()
	if err != nil {
		b.Fatal(err)
	}
	return db
}

func connect(b *testing.B, url string) *pgx.Conn {
	b.Helper()
	conn, err := pgx.Connect(context.Background(), url)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { conn.Close(context.Background()) })
	return conn
}

// BenchmarkPostgresSearchCards is BenchmarkSearchCards with the store in PostgreSQL: a
// throwaway cluster on the same machine (pgtest: fsync on), reached over loopback TCP.
// The same sub-benchmarks, and as the baseline (raw) the one query that reads the
// same 1,000 active cards' bytes, without decoding them (a join on unnest of the
// identities: = ANY of 1,000 took 2.5 times as long, planning it).
func BenchmarkPostgresSearchCards(b *testing.B) {
	for _, suite := range []e2ee.Suite{e2ee.SuiteX25519, e2ee.SuiteHybrid} {
		b.Run(suite.String(), func(b *testing.B) {
			db := benchDatabase(b)
			e := newEnv(b, envOptions{quiet: true, postgres: db.URL, cfg: Config{SearchRate: 1e9, SearchBurst: 1 << 30, CheckpointInterval: time.Hour}})
			store := e.srv.store
			a := e.newApp(b, "bench")
			ids := benchPublish(b, e, a, suite)
			searcher := e.newUser(b, a, "searcher")
			conn := connect(b, db.URL)
			var next uint64
			pgBenchEvents(b, conn, "app_other", &next, 99_000)
			if _, err := e.srv.PublishCheckpoint(context.Background()); err != nil {
				b.Fatal(err)
			}
			benchSearch(b, e, store, a.id, ids, searcher)
			b.Run("raw", func(b *testing.B) {
				ctx := context.Background()
				buf := make([]byte, 0, 4<<20)
				for b.Loop() {
					buf = buf[:0]
					rows, err := conn.Query(ctx, "SELECT a.record FROM unnest($2::text[]) AS w (identity) JOIN "+Schema+".active_cards a ON a.app_id = $1 AND a.identity = w.identity", a.id, ids)
					if err != nil {
						b.Fatal(err)
					}
					n := 0
					for rows.Next() {
						buf = append(buf, rows.RawValues()[0]...)
						n++
					}
					if rows.Close(); rows.Err() != nil || n != benchIdentities {
						b.Fatalf("%d rows, %v", n, rows.Err())
					}
				}
				reportIdentities(b)
			})
		})
	}
}

// BenchmarkPostgresAppendLog is BenchmarkAppendLog with the store in PostgreSQL:
// appending 10,000 card events to the key transparency log with their checkpoint, in
// one transaction, on a log that already holds 100,000 entries. The baseline, in the
// same run, is writing the same 10,000 events to the feed in one transaction (COPY).
func BenchmarkPostgresAppendLog(b *testing.B) {
	db := benchDatabase(b)
	store := openPostgres(b, db.URL)
	conn := connect(b, db.URL)
	events := func(b *testing.B, next *uint64, n int) { pgBenchEvents(b, conn, "app_bench", next, n) }
	srv, next := benchLog(b, store, events)
	b.Run("feed-baseline", func(b *testing.B) {
		base, err := db.Cluster.CreateDatabase()
		if err != nil {
			b.Fatal(err)
		}
		openPostgres(b, base.URL)
		baseConn := connect(b, base.URL)
		var n uint64
		for b.Loop() {
			pgBenchEvents(b, baseConn, "app_bench", &n, appendBatch)
		}
	})
	b.Run("append-and-checkpoint", func(b *testing.B) {
		benchAppend(b, srv, events, &next)
	})
}

// BenchmarkPublish measures card publications through Store.Publish from 8 goroutines
// at once, each a new identity's first card: in card.db (bbolt, the baseline), and in
// PostgreSQL through one store (one replica's pool) and through two (two replicas over
// one database). Publications take turns on the feed's counter row in PostgreSQL, as
// on bbolt's single writer, so this is the ceiling of card changes per second.
func BenchmarkPublish(b *testing.B) {
	run := func(b *testing.B, stores []Store) {
		withKey(b, stores[0])
		var n atomic.Uint64
		b.SetParallelism(4) // 8 goroutines on 2 cores
		b.ResetTimer()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				i := n.Add(1)
				s := stores[i%uint64(len(stores))]
				c := record("app_bench", fmt.Sprint("u_", i), 0, nil)
				c.CardId = binary.BigEndian.AppendUint64(make([]byte, 24), i)
				if _, _, err := s.Publish(c, nil, allow(&seen{})); err != nil {
					b.Error(err)
					return
				}
			}
		})
		b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "publications/s")
	}
	b.Run("bbolt", func(b *testing.B) {
		s, err := OpenBoltStore(filepath.Join(b.TempDir(), "card.db"))
		if err != nil {
			b.Fatal(err)
		}
		defer s.Close()
		run(b, []Store{s})
	})
	db := benchDatabase(b)
	b.Run("postgres-1-replica", func(b *testing.B) {
		d, err := db.Cluster.CreateDatabase()
		if err != nil {
			b.Fatal(err)
		}
		run(b, []Store{openPostgres(b, d.URL)})
	})
	b.Run("postgres-2-replicas", func(b *testing.B) {
		d, err := db.Cluster.CreateDatabase()
		if err != nil {
			b.Fatal(err)
		}
		run(b, []Store{openPostgres(b, d.URL), openPostgres(b, d.URL)})
	})
}
