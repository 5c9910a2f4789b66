package boltdb

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"slices"
	"time"

	bolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"
	"google.golang.org/protobuf/proto"
)

// Report is what Verify found in a file.
type Report struct {
	Path  string
	Stats FileStats
	// Records counts the records checked in each record bucket, and Entries the
	// entries of the other buckets that the service's own check read.
	Records map[string]int
	Entries int
	// Legacy is a file written before record checksums: its records were decoded but
	// have no checksum to check (the service adds them when it opens the file).
	Legacy bool
	// Problems are what is damaged, at most maxProblems of them; Omitted counts the rest.
	Problems []string
	Omitted  int
}

const maxProblems = 100

// Problemf records one problem.
func (r *Report) Problemf(format string, args ...any) {
	if len(r.Problems) == maxProblems {
		r.Omitted++
		return
	}
	r.Problems = append(r.Problems, fmt.Sprintf(format, args...))
}

// Err is nil for a sound file, and otherwise a *DamagedError that sums the problems up.
func (r *Report) Err() error {
	if r == nil || len(r.Problems) == 0 {
		return nil
	}
	cause := r.Problems[0]
	if n := len(r.Problems) - 1 + r.Omitted; n > 0 {
		cause = fmt.Sprintf("%s; and %d more problems", cause, n)
	}
	return damaged(r.Path, cause)
}

// VerifyLockTimeout is how long Verify waits for a file that another process holds.
var VerifyLockTimeout = 500 * time.Millisecond

// Verify checks the file at path, offline, as completely as it can: its pages
// (CheckFile), bbolt's own consistency check (tx.Check), the schema (the version this
// binary reads, every bucket and no other), every record of schema.Records (its checksum
// and its decoding), and then whatever check adds for the service (records that refer to
// each other, index entries that point at records). It reads the file only, under
// bbolt's shared lock: a file that a running process holds is refused with an error
// wrapping ErrLocked, and a missing file with the error of os.Stat.
//
// The error is nil when the file could be read to the end; the Report then says what is
// damaged, and Report.Err sums it up.
func Verify(path string, schema Schema, check func(tx *bolt.Tx, r *Report)) (*Report, error) {
	r := &Report{Path: path, Records: map[string]int{}}
	fi, err := os.Stat(path)
	if err != nil {
		return nil, err
	}
	if fi.Size() == 0 {
		r.Problemf("the file is empty (0 bytes)")
		return r, nil
	}
	var db *bolt.DB
	err = Protect(path, func() error {
		var err error
		db, err = bolt.Open(path, 0o600, &bolt.Options{ReadOnly: true, Timeout: VerifyLockTimeout})
		return err
	})
	if errors.Is(err, berrors.ErrTimeout) {
		return nil, fmt.Errorf("%s is in use by a running process (%w): stop the service first, or verify a backup of it (umbra admin backup)", path, ErrLocked)
	}
	if err != nil {
		r.Problemf("bbolt cannot open it: %v", err)
		return r, nil
	}
	defer db.Close()
	if r.Stats, err = CheckFile(path); err != nil {
		r.Problemf("%v", err)
		return r, nil // reading on would fault or panic in bbolt
	}
	err = Protect(path, func() error {
		return db.View(func(tx *bolt.Tx) error {
			for err := range tx.Check() {
				r.Problemf("bbolt: %v", err)
			}
			verifySchema(tx, schema, r)
			if len(r.Problems) == 0 && check != nil {
				check(tx, r)
			}
			return nil
		})
	})
	if err != nil {
		r.Problemf("%v", err)
	}
	return r, nil
}

// verifySchema checks the schema and every record.
func verifySchema(tx *bolt.Tx, schema Schema, r *Report) {
	meta := tx.Bucket(metaBucket)
	if meta == nil {
		r.Problemf("no %s bucket: not a file of an Umbra store", metaBucket)
		return
	}
	switch v, err := ParseU64(meta.Get(schemaVersionKey)); {
	case err != nil:
		r.Problemf("schema version: %v", err)
	case v != schema.Version:
		r.Problemf("schema version %d, this binary reads version %d", v, schema.Version)
	}
	if v := meta.Get(recordFormatKey); v == nil {
		r.Legacy = true
	} else if f, err := ParseU64(v); err != nil || f != RecordFormat {
		r.Problemf("record format %x, this binary reads format %d", v, RecordFormat)
	}
	known := append([][]byte{metaBucket}, schema.Buckets...)
	_ = tx.ForEach(func(name []byte, _ *bolt.Bucket) error {
		if !slices.ContainsFunc(known, func(k []byte) bool { return bytes.Equal(k, name) }) {
			r.Problemf("bucket %q is not one of this store's (a file of another store?)", name)
		}
		return nil
	})
	for _, name := range schema.Buckets {
		if tx.Bucket(name) == nil {
			r.Problemf("bucket %q is missing", name)
		}
	}
	for _, rb := range schema.Records {
		b := tx.Bucket(rb.Name)
		if b == nil {
			continue
		}
		_ = b.ForEach(func(k, v []byte) error {
			r.Records[string(rb.Name)]++
			if v == nil {
				r.Problemf("bucket %q: key %q holds a bucket, not a record", rb.Name, k)
				return nil
			}
			var problem string
			switch {
			case r.Legacy && rb.New != nil:
				if err := proto.Unmarshal(v, rb.New()); err != nil {
					problem = fmt.Sprintf("does not decode (%v)", err)
				}
			case r.Legacy:
			case rb.New != nil:
				problem = decode(k, v, rb.New())
			default:
				_, problem = unseal(k, v)
			}
			if problem != "" {
				r.Problemf("bucket %q: the record at key %q %s", rb.Name, k, problem)
			}
			return nil
		})
	}
}
