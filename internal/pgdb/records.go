package pgdb

import (
	"context"
	"embed"
	"errors"
	"fmt"
	"io/fs"

	"github.com/jackc/pgx/v5"
	"google.golang.org/protobuf/proto"

	"github.com/umbra-e2ee/umbra/pkg/errs"
)

// What every engine over pgdb shares: its transactions, its records as protobuf
// bytes, and its embedded migrations.

// Update runs fn in a read-committed transaction (retried on serialization failures
// and deadlocks, InTx), within the store's operation timeout (Context). Each statement
// sees what committed before it began, so a statement after a row lock sees every
// change that held the lock before.
func (db *DB) Update(fn func(ctx context.Context, tx pgx.Tx) error) error {
	ctx, cancel := db.Context()
	defer cancel()
	return db.InTx(ctx, pgx.TxOptions{}, func(tx pgx.Tx) error { return fn(ctx, tx) })
}

// View runs fn in a read-only transaction that sees one snapshot.
func (db *DB) View(fn func(ctx context.Context, tx pgx.Tx) error) error {
	ctx, cancel := db.Context()
	defer cancel()
	return db.InTx(ctx, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly}, func(tx pgx.Tx) error { return fn(ctx, tx) })
}

// Records encodes and decodes a store's records, the protobuf bytes its rows hold,
// naming the store (and its schema) in errors.
type Records struct {
	Store, Schema string
}

// Encode is a record's bytes, deterministic.
func (r Records) Encode(m proto.Message) ([]byte, error) {
	b, err := proto.MarshalOptions{Deterministic: true}.Marshal(m)
	if err != nil {
		return nil, fmt.Errorf("%s store: encode record: %w", r.Store, err)
	}
	return b, nil
}

// Decode reads a record; one that does not parse is damaged data, named for the log.
func (r Records) Decode(table, key string, b []byte, m proto.Message) error {
	if err := proto.Unmarshal(b, m); err != nil {
		return errs.Damagedf("%s store: %s.%s row %q does not parse: %v", r.Store, r.Schema, table, key, err)
	}
	return nil
}

// Get reads the record of the row query finds into m; found is false when there is
// none.
func (r Records) Get(ctx context.Context, tx pgx.Tx, table, key string, m proto.Message, query string, args ...any) (found bool, err error) {
	var b []byte
	switch err := tx.QueryRow(ctx, query, args...).Scan(&b); {
	case errors.Is(err, pgx.ErrNoRows):
		return false, nil
	case err != nil:
		return false, err
	}
	return true, r.Decode(table, key, b, m)
}

// MigrationsIn is the migrations/ folder of an engine's embedded files.
func MigrationsIn(files embed.FS) fs.FS {
	sub, err := fs.Sub(files, "migrations")
	if err != nil {
		panic(err) // the folder is embedded: it is there
	}
	return sub
}
