package pgdb

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/fnv"
	"strings"

	"github.com/jackc/pgx/v5"

	"github.com/umbra-e2ee/umbra/internal/storecopy"
)

// Copying a bbolt store into a service's schema (`umbra admin migrate`): the service
// describes each record kind of its bbolt file (CopyKind), and CopyIn writes them and
// proves the copy exact, in one transaction (docs/storage-postgres.md, "Moving an
// existing deployment").

// CopyKind is one record kind of a service's bbolt file (internal/storecopy): how its
// pairs go into the service's tables, and how they are read back from them as the same
// pairs.
type CopyKind struct {
	// Name is the kind: the bucket's name, or "<bucket>.sequence".
	Name string
	// Load queues the statements that write one pair; nil for a kind derived from
	// others (an index, whose pairs the dump rebuilds from the rows it indexes).
	Load func(b *pgx.Batch, key, value []byte) error
	// Dump is a query of the kind's pairs as the bbolt engine holds them: two bytea
	// columns, key and value (in any order; ordered by key, they read as bbolt's).
	Dump string
	// Convert, when set, turns each row of Dump into the bbolt engine's pair.
	Convert func(key, value []byte) ([]byte, []byte, error)
}

// Copy is how a service's bbolt file goes into its schema.
type Copy struct {
	// Kinds are every kind the service's bbolt file may hold.
	Kinds []CopyKind
	// Finish are statements run after every pair is written, before the copy is
	// verified: state the tables keep beside the records (counters, a log's size).
	Finish []string
}

// copyBatch is how many statements go to the server in one round trip.
const copyBatch = 500

// CopyIn copies the store src streams into the schema, in one transaction: either all
// of it is there, verified, or nothing is (an interrupted copy rolls back, and running
// it again starts over). It first reads the schema: an empty one (as the migrations
// left it) is written; one that holds exactly src's records is left as it is
// (Result.AlreadyCopied: a copy run again after it completed); one that holds anything
// else is refused, naming the kinds that differ, and nothing is written. After writing,
// it reads every kind back in the same transaction and commits only if each kind's
// count and checksum equal the file's.
func (db *DB) CopyIn(ctx context.Context, c Copy, src storecopy.Source) (*storecopy.Result, error) {
	kinds := make(map[string]*CopyKind, len(c.Kinds))
	for i, k := range c.Kinds {
		kinds[k.Name] = &c.Kinds[i]
	}
	names := c.names()
	res := &storecopy.Result{Store: db.store, Schema: db.schema}
	tx, err := db.Pool.BeginTx(ctx, pgx.TxOptions{})
	if err != nil {
		return nil, db.Err(err)
	}
	defer tx.Rollback(context.WithoutCancel(ctx))
	// One copy into the schema at a time.
	h := fnv.New64a()
	h.Write([]byte("umbra admin migrate " + db.schema))
	if _, err := tx.Exec(ctx, "SELECT pg_advisory_xact_lock($1)", int64(h.Sum64()&^(1<<63))); err != nil {
		return nil, db.Err(err)
	}
	before, err := dumpSums(ctx, tx, c.Kinds, names)
	if err != nil {
		return nil, fmt.Errorf("%s store: read the schema %s: %w", db.store, db.schema, err)
	}
	if !before.Empty() {
		if res.Source, err = sumSource(src, names); err != nil {
			return nil, err
		}
		res.Target, res.AlreadyCopied = before, true
		if diff := storecopy.Differences(res.Source, before); len(diff) > 0 {
			return res, fmt.Errorf("%s store: the schema %s already holds data that is not an exact copy of the file (another deployment's, a service's started on it, or changed since it was copied); nothing was written. It holds:\n  %s",
				db.store, db.schema, strings.Join(diff, "\n  "))
		}
		return res, nil
	}

	res.Source = storecopy.NewSums(names)
	batch := &pgx.Batch{}
	flush := func() error {
		if batch.Len() == 0 {
			return nil
		}
		err := tx.SendBatch(ctx, batch).Close()
		batch = &pgx.Batch{}
		return err
	}
	err = src(func(kind string, key, value []byte) error {
		if err := res.Source.Add(kind, key, value); err != nil {
			return err
		}
		k := kinds[kind]
		if k.Load == nil {
			return nil
		}
		// The source's bytes are valid only during the call (bbolt's memory map); the
		// batch is sent later.
		key, value = bytes.Clone(key), bytes.Clone(value)
		if err := k.Load(batch, key, value); err != nil {
			return fmt.Errorf("record kind %q, key %x: %w", kind, key, err)
		}
		if batch.Len() >= copyBatch {
			return flush()
		}
		return nil
	})
	if err == nil {
		err = flush()
	}
	if err == nil {
		err = res.Source.Check()
	}
	for _, q := range c.Finish {
		if err != nil {
			break
		}
		_, err = tx.Exec(ctx, q)
	}
	if err != nil {
		return nil, fmt.Errorf("%s store: copy into the schema %s (rolled back, nothing written): %w", db.store, db.schema, err)
	}
	if res.Target, err = dumpSums(ctx, tx, c.Kinds, names); err != nil {
		return nil, fmt.Errorf("%s store: read the copy back: %w", db.store, err)
	}
	if diff := storecopy.Differences(res.Source, res.Target); len(diff) > 0 {
		return res, fmt.Errorf("%s store: the copy does not verify (rolled back, nothing written):\n  %s", db.store, strings.Join(diff, "\n  "))
	}
	if err := tx.Commit(ctx); err != nil {
		return nil, fmt.Errorf("%s store: commit the copy: %w", db.store, db.Err(err))
	}
	return res, nil
}

// VerifyCopy reads the schema's sums and compares them with src's, writing nothing:
// the error names each kind that differs.
func (db *DB) VerifyCopy(ctx context.Context, c Copy, src storecopy.Source) (*storecopy.Result, error) {
	names := c.names()
	source, err := sumSource(src, names)
	if err != nil {
		return nil, err
	}
	res := &storecopy.Result{Store: db.store, Schema: db.schema, AlreadyCopied: true, Source: source}
	err = db.InTx(ctx, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly}, func(tx pgx.Tx) error {
		var err error
		res.Target, err = dumpSums(ctx, tx, c.Kinds, names)
		return err
	})
	if err != nil {
		return nil, err
	}
	if diff := storecopy.Differences(res.Source, res.Target); len(diff) > 0 {
		return res, fmt.Errorf("%s store: the schema %s differs from the file:\n  %s", db.store, db.schema, strings.Join(diff, "\n  "))
	}
	return res, nil
}

// names are the names of c's kinds, in order.
func (c Copy) names() []string {
	names := make([]string, len(c.Kinds))
	for i, k := range c.Kinds {
		names[i] = k.Name
	}
	return names
}

// sumSource reads every pair src streams and sums them by kind (names), as dumpSums
// sums the schema's.
func sumSource(src storecopy.Source, names []string) (storecopy.Sums, error) {
	sums := storecopy.NewSums(names)
	if err := src(sums.Add); err != nil {
		return nil, err
	}
	if err := sums.Check(); err != nil {
		return nil, err
	}
	return sums, nil
}

// dumpSums reads every kind's pairs from the schema and sums them.
func dumpSums(ctx context.Context, tx pgx.Tx, kinds []CopyKind, names []string) (storecopy.Sums, error) {
	sums := storecopy.NewSums(names)
	for _, k := range kinds {
		rows, err := tx.Query(ctx, k.Dump)
		if err != nil {
			return nil, fmt.Errorf("record kind %q: %w", k.Name, err)
		}
		for rows.Next() {
			var key, value []byte
			if err := rows.Scan(&key, &value); err != nil {
				rows.Close()
				return nil, fmt.Errorf("record kind %q: %w", k.Name, err)
			}
			if k.Convert != nil {
				if key, value, err = k.Convert(key, value); err != nil {
					rows.Close()
					return nil, fmt.Errorf("record kind %q, key %x: %w", k.Name, key, err)
				}
			}
			if err := sums.Add(k.Name, key, value); err != nil {
				rows.Close()
				return nil, err
			}
		}
		if err := rows.Err(); err != nil {
			return nil, fmt.Errorf("record kind %q: %w", k.Name, err)
		}
	}
	return sums, sums.Check()
}

// SplitKey splits a bbolt key made by boltdb.Key into its n parts (the last part may
// hold zero bytes); an error when it has fewer.
func SplitKey(key []byte, n int) ([]string, error) {
	parts := make([]string, 0, n)
	rest := key
	for i := 0; i < n-1; i++ {
		j := strings.IndexByte(string(rest), 0)
		if j < 0 {
			return nil, errors.New("the key has fewer parts than its kind's")
		}
		parts = append(parts, string(rest[:j]))
		rest = rest[j+1:]
	}
	return append(parts, string(rest)), nil
}

// CopyU64 reads a bbolt key or value written by boltdb.U64, as the bigint PostgreSQL
// keeps it.
func CopyU64(b []byte) (int64, error) {
	if len(b) != 8 {
		return 0, fmt.Errorf("%x is not a 64-bit number", b)
	}
	n := binary.BigEndian.Uint64(b)
	if n > 1<<63-1 {
		return 0, fmt.Errorf("%d is beyond a bigint", n)
	}
	return int64(n), nil
}
