package messaging

import (
	"context"
	"embed"
	"fmt"
	"io/fs"
	"sync/atomic"
	"time"

	"go.uber.org/zap"
	"google.golang.org/protobuf/proto"

	"github.com/umbra-e2ee/umbra/internal/pgdb"
)

// The messaging service's PostgreSQL engine. This file opens it; the writes are in
// store_postgres_apply.go, the reads in store_postgres_read.go, retention and the time
// partitions in store_postgres_sweep.go, and the wake-ups across replicas in
// store_postgres_watch.go. The tables and how each invariant holds across replicas
// are described in migrations/00001_messaging.sql and docs/storage-postgres.md.

// Schema is the PostgreSQL schema the messaging service owns.
const Schema = "umbra_messaging"

//go:embed migrations/*.sql
var migrationFiles embed.FS

// Migrations are the messaging service's goose migrations, embedded.
func Migrations() fs.FS { return pgdb.MigrationsIn(migrationFiles) }

// Defaults of PostgresOptions.
const (
	DefaultPartitionWidth = 24 * time.Hour
	DefaultWatchPoll      = 2 * time.Second
)

// PostgresOptions tune a PostgresStore. The zero value is right for the service.
type PostgresOptions struct {
	// PartitionWidth is the span of expiry times of one partition of the messages,
	// events and inbox tables; 0 means DefaultPartitionWidth. Retention drops a
	// partition once all of it has expired, so expired rows wait up to one width for
	// the space they take to be freed (readers no longer see them from the sweep on).
	// It may change between starts: new partitions take the new width, cut where they
	// meet old ones.
	PartitionWidth time.Duration
	// WatchPoll is how often Watch re-reads the heads of the watched inboxes, so that a
	// lost wake-up only delays a delivery; 0 means DefaultWatchPoll.
	WatchPoll time.Duration
}

// PostgresStore is the Store in PostgreSQL: the tables of migrations/ in the schema
// Schema. Several stores (replicas, each in its own process) may use one database at
// once: every invariant the service relies on holds by the database's locks and
// constraints, not by the process's (docs/storage-postgres.md).
type PostgresStore struct {
	db    *pgdb.DB
	url   string
	log   *zap.Logger
	width int64 // PartitionWidth, in ns
	poll  time.Duration
	parts partitionCache
	// retention is the latest batch's, for the partitions Sweep makes ahead.
	retention atomic.Int64
	// id names the store in its wake-ups (store_postgres_watch.go), and listening
	// counts the times Watch has started listening.
	id        string
	listening atomic.Int64
}

var _ Store = (*PostgresStore)(nil)

// OpenPostgresStore connects to the database at url, migrates the schema (see pgdb.Open
// for what it checks first), checks that the user may maintain the time partitions,
// and makes the partitions of the time around now.
func OpenPostgresStore(ctx context.Context, url string, opts PostgresOptions, log *zap.Logger) (*PostgresStore, error) {
	if log == nil {
		log = zap.NewNop()
	}
	if opts.PartitionWidth == 0 {
		opts.PartitionWidth = DefaultPartitionWidth
	}
	if opts.WatchPoll <= 0 {
		opts.WatchPoll = DefaultWatchPoll
	}
	if opts.PartitionWidth < time.Second || opts.PartitionWidth%time.Second != 0 {
		return nil, fmt.Errorf("messaging store: partition width %s: want whole seconds, at least one", opts.PartitionWidth)
	}
	db, err := pgdb.Open(ctx, pgdb.Config{URL: url, Store: "messaging", Schema: Schema, Migrations: Migrations(), Log: log})
	if err != nil {
		return nil, err
	}
	s := &PostgresStore{db: db, url: url, log: log, width: int64(opts.PartitionWidth), poll: opts.WatchPoll, id: newStoreID()}
	if err := s.checkPartitionRights(ctx); err != nil {
		db.Close()
		return nil, fmt.Errorf("messaging store: %w", err)
	}
	now := time.Now().UnixNano()
	if err := s.ensurePartitions(ctx, now, now+s.width); err != nil {
		db.Close()
		return nil, fmt.Errorf("messaging store: %w", err)
	}
	return s, nil
}

// Close closes the connection pool.
func (s *PostgresStore) Close() error { s.db.Close(); return nil }

// DB is the connection pool, for the node's readiness check.
func (s *PostgresStore) DB() *pgdb.DB { return s.db }

// Flush implements Store: the PostgreSQL engine defers nothing.
func (s *PostgresStore) Flush() (bool, error) { return false, nil }

// ctx returns the context of one store operation (pgdb.DB.Context).
func (s *PostgresStore) ctx() (context.Context, context.CancelFunc) { return s.db.Context() }

// records encodes the rows' records deterministically, as the bbolt engine does, and
// decodes them: one that does not parse is damaged data, named for the log.
var records = pgdb.Records{Store: "messaging", Schema: Schema}

// getRow reads the record of the one row query finds into m; found is false when
// there is none.
func (s *PostgresStore) getRow(table string, key string, m proto.Message, query string, args ...any) (found bool, err error) {
	ctx, cancel := s.ctx()
	defer cancel()
	b, found, err := pgdb.GetBytes(ctx, s.db.Pool, query, args...)
	if err != nil || !found {
		return false, s.db.Err(err)
	}
	return true, records.Decode(table, key, b, m)
}
