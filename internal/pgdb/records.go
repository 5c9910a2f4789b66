package pgdb

import (
	"context"
	"embed"
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
	b, found, err := GetBytes(ctx, tx, query, args...)
	if err != nil || !found {
		return false, err
	}
	return true, r.Decode(table, key, b, m)
}

// Scan reads rows of (key, record), decoding each record into a new T (newRecord); a
// record that does not parse is named by table and its key (fmt.Sprint). K is the key
// column's type. It closes rows.
func Scan[K any, T proto.Message](r Records, rows pgx.Rows, table string, newRecord func() T) ([]T, error) {
	return ScanWith(rows, newRecord, func(key K, b []byte, rec T) error { return r.Decode(table, fmt.Sprint(key), b, rec) })
}

// ScanWith is Scan for a store that names its records its own way: decode reads the
// record bytes b of the row of key into rec.
func ScanWith[K, T any](rows pgx.Rows, newRecord func() T, decode func(key K, b []byte, rec T) error) ([]T, error) {
	defer rows.Close()
	var out []T
	for rows.Next() {
		var key K
		var b []byte
		if err := rows.Scan(&key, &b); err != nil {
			return nil, err
		}
		rec := newRecord()
		if err := decode(key, b, rec); err != nil {
			return nil, err
		}
		out = append(out, rec)
	}
	return out, rows.Err()
}

// MigrationsIn is the migrations/ folder of an engine's embedded files.
func MigrationsIn(files embed.FS) fs.FS {
	sub, err := fs.Sub(files, "migrations")
	if err != nil {
		panic(err) // the folder is embedded: it is there
	}
	return sub
}
