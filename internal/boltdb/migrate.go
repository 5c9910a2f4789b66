package boltdb

import (
	"bytes"
	"fmt"
	"slices"

	bolt "go.etcd.io/bbolt"
)

// A file written before record checksums (development builds before record format 1;
// none was released) has no record_format in _meta. Open seals its records in place:
// each record bucket in turn, sealChunk records per transaction, remembering in _meta
// how far it got, so that a process stopped half-way resumes where it stopped and never
// seals a record twice. Only then is record_format written.
var (
	sealingBucketKey = []byte("sealing_bucket")
	sealingAfterKey  = []byte("sealing_after")
)

// sealChunk bounds the records one migration transaction rewrites (and holds in memory).
var sealChunk = 4096

// sealRecords seals the records of a file written before record checksums.
func sealRecords(db *bolt.DB, schema Schema) error {
	var legacy bool
	err := db.View(func(tx *bolt.Tx) error {
		legacy = tx.Bucket(metaBucket).Get(recordFormatKey) == nil
		return nil
	})
	if err != nil || !legacy {
		return err
	}
	for {
		done := false
		err := db.Update(func(tx *bolt.Tx) error {
			var err error
			done, err = sealStep(tx, schema)
			return err
		})
		if err != nil {
			return fmt.Errorf("boltdb: %s: add checksums to the records of a file written before them: %w", db.Path(), err)
		}
		if done {
			return nil
		}
	}
}

// sealStep seals up to sealChunk records from where the last step stopped, and reports
// whether every record is sealed (record_format is then written).
func sealStep(tx *bolt.Tx, schema Schema) (bool, error) {
	meta := tx.Bucket(metaBucket)
	current, after := meta.Get(sealingBucketKey), meta.Get(sealingAfterKey)
	i := 0
	if current != nil {
		i = slices.IndexFunc(schema.Records, func(r RecordBucket) bool { return bytes.Equal(r.Name, current) })
		if i < 0 {
			return false, fmt.Errorf("sealing stopped in bucket %q, which the schema does not name", current)
		}
	}
	for ; i < len(schema.Records); i, after = i+1, nil {
		name := schema.Records[i].Name
		b := tx.Bucket(name)
		if b == nil {
			continue
		}
		// Collect first: a cursor must not walk a bucket that is being written.
		var keys, values [][]byte
		c := b.Cursor()
		k, v := c.First()
		if after != nil {
			if k, v = c.Seek(after); k != nil && bytes.Equal(k, after) {
				k, v = c.Next()
			}
		}
		for ; k != nil && len(keys) < sealChunk; k, v = c.Next() {
			if v == nil {
				continue // a nested bucket: no record
			}
			keys, values = append(keys, bytes.Clone(k)), append(values, Seal(k, bytes.Clone(v)))
		}
		for j, k := range keys {
			if err := b.Put(k, values[j]); err != nil {
				return false, err
			}
		}
		if len(keys) == sealChunk {
			if err := meta.Put(sealingBucketKey, name); err != nil {
				return false, err
			}
			return false, meta.Put(sealingAfterKey, keys[len(keys)-1])
		}
	}
	for _, k := range [][]byte{sealingBucketKey, sealingAfterKey} {
		if err := meta.Delete(k); err != nil {
			return false, err
		}
	}
	return true, meta.Put(recordFormatKey, U64(RecordFormat))
}
