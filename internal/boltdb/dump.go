package boltdb

import (
	"bytes"
	"fmt"
	"os"
	"slices"
	"time"

	bolt "go.etcd.io/bbolt"
)

// DumpLockTimeout is how long Dump waits for a file that another process holds.
const DumpLockTimeout = 2 * time.Second

// Dump reads the file at path, a store of schema, and calls fn with every pair of every
// bucket, bucket by bucket in the order of order (each bucket's pairs in key order):
// the kind is the bucket's name, the key is bbolt's, and the value is the record
// without its checksum (checked) for a bucket of sealed records, or the index entry as
// it is. A bucket's sequence, when not zero, follows its pairs as the kind
// "<bucket>.sequence" (storecopy.SequenceSuffix), with the key "sequence" and the value
// U64(sequence). It is what `umbra admin migrate` copies (internal/storecopy).
//
// The file is opened read-only, under bbolt's shared lock: a file that a running
// service holds is refused (ErrLocked) after DumpLockTimeout, and nothing is ever
// written to it. Everything is read in one read transaction, one snapshot. A bucket
// that order does not name, a nested bucket, a file of another schema version, or one
// written before record checksums (which the service seals when it next opens the
// file) is an error: nothing is skipped silently.
func Dump(path string, schema Schema, order [][]byte, fn func(kind string, key, value []byte) error) error {
	return ViewReadOnly(path, schema, func(tx *bolt.Tx) error { return dump(tx, schema, order, fn) })
}

// ViewReadOnly runs fn in one read transaction of the file at path, a store of schema,
// opened read-only as Dump opens it (and checked as Dump checks it): for a copier that
// reads a store its own way.
func ViewReadOnly(path string, schema Schema, fn func(tx *bolt.Tx) error) error {
	fi, err := os.Stat(path)
	if err != nil {
		return fmt.Errorf("boltdb: %w", err)
	}
	if fi.Size() == 0 {
		return fmt.Errorf("boltdb: %s is empty (0 bytes): no store to copy", path)
	}
	if err := preflight(path, DumpLockTimeout); err != nil {
		return err
	}
	var db *bolt.DB
	err = Protect(path, func() error {
		var err error
		db, err = bolt.Open(path, 0o600, &bolt.Options{ReadOnly: true, Timeout: DumpLockTimeout})
		if err != nil {
			return openError(path, err)
		}
		return db.View(func(tx *bolt.Tx) error {
			if err := checkMeta(tx, schema); err != nil {
				return err
			}
			return fn(tx)
		})
	})
	if db != nil {
		if cerr := db.Close(); err == nil && cerr != nil {
			err = cerr
		}
	}
	return err
}

// checkMeta refuses a file of another layout, or written before record checksums.
func checkMeta(tx *bolt.Tx, schema Schema) error {
	path := tx.DB().Path()
	meta := tx.Bucket(metaBucket)
	if meta == nil {
		return fmt.Errorf("boltdb: %s has no %s bucket: it is not a store's file", path, metaBucket)
	}
	if v, err := ParseU64(meta.Get(schemaVersionKey)); err != nil || v != schema.Version {
		return fmt.Errorf("boltdb: %s has schema version %x; this binary copies version %d", path, meta.Get(schemaVersionKey), schema.Version)
	}
	if v, err := ParseU64(meta.Get(recordFormatKey)); err != nil || v != RecordFormat {
		return fmt.Errorf("boltdb: %s was written before record checksums: start its service once with this Umbra (it adds them), stop it, and copy again", path)
	}
	return nil
}

func dump(tx *bolt.Tx, schema Schema, order [][]byte, fn func(kind string, key, value []byte) error) error {
	path := tx.DB().Path()
	var unknown []string
	err := tx.ForEach(func(name []byte, _ *bolt.Bucket) error {
		if !bytes.Equal(name, metaBucket) && !slices.ContainsFunc(order, func(o []byte) bool { return bytes.Equal(o, name) }) {
			unknown = append(unknown, fmt.Sprintf("%q", name))
		}
		return nil
	})
	if err != nil {
		return err
	}
	if len(unknown) > 0 {
		return fmt.Errorf("boltdb: %s holds buckets that the copier does not know: %v; nothing was copied", path, unknown)
	}
	for _, name := range order {
		b := tx.Bucket(name)
		if b == nil {
			continue // never created: nothing in it
		}
		sealed := slices.ContainsFunc(schema.Records, func(r RecordBucket) bool { return bytes.Equal(r.Name, name) })
		c := b.Cursor()
		for k, v := c.First(); k != nil; k, v = c.Next() {
			if v == nil {
				return fmt.Errorf("boltdb: %s: bucket %s holds a nested bucket %q, which the copier does not know; nothing was copied", path, name, k)
			}
			if sealed {
				var err error
				if v, err = Unseal(b, k, v); err != nil {
					return err
				}
			}
			if err := fn(string(name), k, v); err != nil {
				return err
			}
		}
		if seq := b.Sequence(); seq != 0 {
			if err := fn(string(name)+".sequence", []byte("sequence"), U64(seq)); err != nil {
				return err
			}
		}
	}
	return nil
}
