// Package boltdb is the one small helper every service uses to keep its state in a bbolt
// file: it opens the file with fixed options, creates the service's buckets up front,
// guards the schema version, and reads and writes protobuf records.
package boltdb

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	bolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"
	"google.golang.org/protobuf/proto"

	"github.com/umbra-e2ee/umbra/pkg/errs"
)

// metaBucket holds the schema version and the record format; no service names a bucket
// like it.
var (
	metaBucket       = []byte("_meta")
	schemaVersionKey = []byte("schema_version")
	// recordFormatKey is RecordFormat for a file whose records are sealed (seal.go).
	// Files written before checksums lack it; Open seals their records (migrate.go).
	recordFormatKey = []byte("record_format")
)

// RecordFormat 1: every record ends with its checksum.
const RecordFormat = 1

// Schema names a service's buckets and the version of their layout.
type Schema struct {
	// Version is the layout this binary reads and writes. A file written by a newer
	// layout is refused rather than misread.
	Version uint64
	// Buckets are created, empty, when missing.
	Buckets [][]byte
	// Records are those of Buckets whose every value is a sealed record: written with
	// PutProto or PutRecord, read with GetProto, DecodeProto or Unseal. Each names the
	// message it holds, which Verify decodes. The other buckets hold index entries
	// (sequence numbers, ids, empty values), which are not sealed.
	Records []RecordBucket
}

// RecordBucket is a bucket of sealed records of one message type, or, when New is nil,
// of sealed values that are not messages (a secret's check value, a cursor).
type RecordBucket struct {
	Name []byte
	New  func() proto.Message
}

// Options tune Open. The zero value is right for services.
type Options struct {
	// LockTimeout bounds the wait for the file lock held by another process; 0 means 2 s.
	LockTimeout time.Duration
	// NoSync skips fsync on commit. Only benchmarks that measure the cost of fsync set it.
	NoSync bool
	// The options below make commits cheaper for a write-heavy file, as etcd sets them;
	// each is bbolt's option of the same name, and the zero value keeps bbolt's default.
	//
	// NoFreelistSync does not write the freelist on commit; it is rebuilt by scanning
	// the file when it is opened, so opening a large file takes longer.
	NoFreelistSync bool
	// FreelistType bolt.FreelistMapType keeps the freelist in a hash map, whose
	// allocations stay fast as the file grows.
	FreelistType bolt.FreelistType
	// InitialMmapSize maps this many bytes up front, so that the file grows without
	// remapping (a remap waits for every read transaction to end).
	InitialMmapSize int
}

// DB is an open bbolt file. Its Update and Batch record whether each commit succeeded
// (health.go).
type DB struct {
	*bolt.DB
	health writeHealth
}

// Open opens (creating it with mode 0600 if needed) the bbolt file at path and makes
// sure every bucket of schema exists.
//
// An existing file is checked before bbolt maps it (CheckFile, under the file's lock),
// and bbolt's open runs under Protect: a damaged file is a *DamagedError that names it,
// never a panic or a fault. A file written before record checksums has its records
// sealed (migrate.go).
func Open(path string, schema Schema, opts Options) (*DB, error) {
	if opts.LockTimeout == 0 {
		opts.LockTimeout = 2 * time.Second
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("boltdb: create folder for %s: %w", path, err)
	}
	if err := preflight(path, opts.LockTimeout); err != nil {
		return nil, err
	}
	var db *bolt.DB
	err := Protect(path, func() error {
		var err error
		db, err = bolt.Open(path, 0o600, &bolt.Options{
			Timeout:         opts.LockTimeout,
			NoSync:          opts.NoSync,
			NoFreelistSync:  opts.NoFreelistSync,
			FreelistType:    opts.FreelistType,
			InitialMmapSize: opts.InitialMmapSize,
		})
		if err != nil {
			return openError(path, err)
		}
		if err := db.Update(func(tx *bolt.Tx) error { return prepare(tx, schema) }); err != nil {
			return fmt.Errorf("boltdb: %s: %w", path, err)
		}
		return sealRecords(db, schema)
	})
	if err != nil {
		if db != nil {
			db.Close()
		}
		return nil, err
	}
	return &DB{DB: db}, nil
}

// preflight checks an existing, non-empty file with CheckFile before bbolt maps it.
// It holds the file's lock while it reads (a read-only open takes bbolt's shared lock),
// so that it never reads a file that another process is writing.
func preflight(path string, timeout time.Duration) error {
	if fi, err := os.Stat(path); err != nil || fi.Size() == 0 {
		return nil // bbolt creates it, or says why it cannot
	}
	var ro *bolt.DB
	err := Protect(path, func() error {
		var err error
		ro, err = bolt.Open(path, 0o600, &bolt.Options{ReadOnly: true, Timeout: timeout})
		return err
	})
	if err != nil {
		err = openError(path, err)
		if errors.Is(err, errs.ErrDamaged) {
			if _, cerr := CheckFile(path); cerr != nil {
				return damaged(path, cerr) // says more than bbolt's "invalid database"
			}
		}
		return err
	}
	defer ro.Close()
	if _, err := CheckFile(path); err != nil {
		var d *DamagedError
		if errors.As(err, &d) {
			return err
		}
		return damaged(path, err)
	}
	return nil
}

// openError explains an error of bolt.Open: a lock held by another process, a file that
// is no bbolt file (or whose meta pages are both damaged), or anything else.
func openError(path string, err error) error {
	var d *DamagedError
	switch {
	case errors.As(err, &d):
		return err
	case errors.Is(err, berrors.ErrTimeout):
		return fmt.Errorf("boltdb: %s: %w", path, ErrLocked)
	case errors.Is(err, berrors.ErrInvalid), errors.Is(err, berrors.ErrVersionMismatch), errors.Is(err, berrors.ErrChecksum),
		strings.Contains(err.Error(), "file size too small"):
		return damaged(path, err)
	}
	return fmt.Errorf("boltdb: open %s: %w", path, err)
}

// ErrLocked is a file that another process holds open.
var ErrLocked = errors.New("locked by another process")

// prepare checks the schema version and creates the buckets.
func prepare(tx *bolt.Tx, schema Schema) error {
	meta, err := tx.CreateBucketIfNotExists(metaBucket)
	if err != nil {
		return err
	}
	if v := meta.Get(schemaVersionKey); v != nil {
		have, err := ParseU64(v)
		if err != nil {
			return fmt.Errorf("schema version: %w", err)
		}
		if have != schema.Version {
			return fmt.Errorf("schema version %d, this binary reads version %d", have, schema.Version)
		}
		if v := meta.Get(recordFormatKey); v != nil {
			if f, err := ParseU64(v); err != nil || f != RecordFormat {
				return fmt.Errorf("record format %x, this binary reads format %d", v, RecordFormat)
			}
		}
	} else {
		// A new file: its records are sealed from the start.
		if err := meta.Put(schemaVersionKey, U64(schema.Version)); err != nil {
			return err
		}
		if err := meta.Put(recordFormatKey, U64(RecordFormat)); err != nil {
			return err
		}
	}
	for _, name := range schema.Buckets {
		if _, err := tx.CreateBucketIfNotExists(name); err != nil {
			return fmt.Errorf("bucket %s: %w", name, err)
		}
	}
	return nil
}

// GetProto reads the record at key into m. It returns an error wrapping errs.ErrNotFound
// when there is none, and one wrapping errs.ErrDamaged when the record fails its
// checksum. The bytes are unmarshalled into m, which owns its copy, so m stays valid
// after the transaction.
func GetProto(b *bolt.Bucket, key []byte, m proto.Message) error {
	v := b.Get(key)
	if v == nil {
		return errs.ErrNotFound
	}
	return DecodeProto(b, key, v, m)
}

// PutProto writes m at key, sealed. Marshalling is deterministic, so equal records are
// equal bytes.
func PutProto(b *bolt.Bucket, key []byte, m proto.Message) error {
	o := proto.MarshalOptions{Deterministic: true}
	v, err := o.MarshalAppend(make([]byte, 0, o.Size(m)+ChecksumSize), m)
	if err != nil {
		return fmt.Errorf("boltdb: encode record: %w", err)
	}
	return PutRecord(b, key, v)
}

// U64 encodes n big-endian, so keys sort in numeric order.
func U64(n uint64) []byte {
	return binary.BigEndian.AppendUint64(make([]byte, 0, 8), n)
}

// ParseU64 decodes a key written by U64.
func ParseU64(b []byte) (uint64, error) {
	if len(b) != 8 {
		return 0, fmt.Errorf("boltdb: sequence key of %d bytes, want 8", len(b))
	}
	return binary.BigEndian.Uint64(b), nil
}

// Key joins parts with a zero byte, for composite keys such as app + identity. Parts
// must not contain a zero byte themselves; validated identifiers never do.
func Key(parts ...string) []byte {
	n := len(parts)
	for _, p := range parts {
		n += len(p)
	}
	k := make([]byte, 0, n)
	for i, p := range parts {
		if i > 0 {
			k = append(k, 0)
		}
		k = append(k, p...)
	}
	return k
}
