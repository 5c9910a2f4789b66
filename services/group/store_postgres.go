package group

import (
	"context"
	"crypto/rand"
	"embed"
	"encoding/hex"
	"fmt"
	"io/fs"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"go.uber.org/zap"

	"github.com/umbra-e2ee/umbra/internal/pgdb"
)

// Schema is the PostgreSQL schema the group service owns.
const Schema = "umbra_group"

//go:embed migrations/*.sql
var migrationFiles embed.FS

// Migrations are the group service's goose migrations, embedded.
func Migrations() fs.FS { return pgdb.MigrationsIn(migrationFiles) }

// TxTimeout bounds one transaction of the store, and pgdb.DefaultOpTimeout each of its
// statements: a database that stops answering fails a request within the latter, while
// a long transaction that makes progress (the card follower applying a page of a
// thousand card events to every group of their identities) may take up to the former.
const TxTimeout = 2 * time.Minute

// OutboxClaim is how long a replica's claim on the outbox lasts without being renewed:
// if the replica dies while it delivers, another takes over after this long.
const OutboxClaim = 30 * time.Second

// PostgresStore is the Store in PostgreSQL: the tables of migrations/ in the schema
// Schema. Each row holds the record the bbolt engine stores, as protobuf bytes, beside
// the columns it is looked up by (docs/storage-postgres.md).
//
// Several replicas may use one database at once. A write transaction locks each group
// it touches before its first read or write of the group's data (the group's row FOR
// UPDATE, or an advisory lock on the ids of a group without a row), so the changes of
// one group take turns as they do under bbolt's single writer: an epoch commit is a
// compare-and-swap on the group's epoch, and the membership chain cannot fork. Reads
// (View) see one snapshot and take no lock.
type PostgresStore struct {
	db *pgdb.DB
	// holder names this store in outbox_claim.
	holder string

	batchMu sync.Mutex
	batch   *pgBatch
}

var _ Store = (*PostgresStore)(nil)

// OpenPostgresStore connects to the database at url, and migrates the schema (see
// pgdb.Open for what it checks first).
func OpenPostgresStore(ctx context.Context, url string, log *zap.Logger) (*PostgresStore, error) {
	db, err := pgdb.Open(ctx, pgdb.Config{URL: url, Store: "group", Schema: Schema, Migrations: Migrations(), Log: log})
	if err != nil {
		return nil, err
	}
	b := make([]byte, 8)
	if _, err := rand.Read(b); err != nil {
		db.Close()
		return nil, fmt.Errorf("group store: randomness: %w", err)
	}
	return &PostgresStore{db: db, holder: hex.EncodeToString(b)}, nil
}

// Close gives up this store's claim on the outbox, so another replica delivers at once,
// and closes the connection pool.
func (s *PostgresStore) Close() error {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	// Best effort: a claim not given up lapses after OutboxClaim.
	_, _ = s.db.Pool.Exec(ctx, "UPDATE outbox_claim SET holder = NULL, until = NULL WHERE holder = $1", s.holder)
	s.db.Close()
	return nil
}

// DB is the connection pool, for the node's readiness check.
func (s *PostgresStore) DB() *pgdb.DB { return s.db }

// View runs fn in a read-only transaction that sees one snapshot.
func (s *PostgresStore) View(fn func(Tx) error) error {
	ctx, cancel := context.WithTimeout(context.Background(), TxTimeout)
	defer cancel()
	return s.db.InTx(ctx, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly}, func(tx pgx.Tx) error {
		return fn(&pgTx{ctx: ctx, tx: boundedTx{tx}})
	})
}

// Update runs fn in a read-committed transaction whose groups are locked as it touches
// them. A transaction aborted for a deadlock (two of them locking the same groups in
// opposite orders) runs again, so fn may run more than once.
func (s *PostgresStore) Update(fn func(Tx) error) error {
	ctx, cancel := context.WithTimeout(context.Background(), TxTimeout)
	defer cancel()
	return s.db.InTx(ctx, pgx.TxOptions{}, func(tx pgx.Tx) error {
		w := newWriteState(false)
		if err := fn(&pgTx{ctx: ctx, tx: boundedTx{tx}, w: w}); err != nil {
			return err
		}
		return w.flush(ctx, boundedTx{tx})
	})
}
