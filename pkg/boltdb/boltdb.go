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
	"time"

	bolt "go.etcd.io/bbolt"
	"google.golang.org/protobuf/proto"

	"github.com/umbra-e2ee/umbra/pkg/errs"
)

// metaBucket holds the schema version; no service names a bucket like it.
var (
	metaBucket       = []byte("_meta")
	schemaVersionKey = []byte("schema_version")
)

// Schema names a service's buckets and the version of their layout.
type Schema struct {
	// Version is the layout this binary reads and writes. A file written by a newer
	// layout is refused rather than misread.
	Version uint64
	// Buckets are created, empty, when missing.
	Buckets [][]byte
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
func Open(path string, schema Schema, opts Options) (*DB, error) {
	if opts.LockTimeout == 0 {
		opts.LockTimeout = 2 * time.Second
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("boltdb: create folder for %s: %w", path, err)
	}
	db, err := bolt.Open(path, 0o600, &bolt.Options{
		Timeout:         opts.LockTimeout,
		NoSync:          opts.NoSync,
		NoFreelistSync:  opts.NoFreelistSync,
		FreelistType:    opts.FreelistType,
		InitialMmapSize: opts.InitialMmapSize,
	})
	if err != nil {
		if errors.Is(err, bolt.ErrTimeout) {
			return nil, fmt.Errorf("boltdb: %s is locked by another process", path)
		}
		return nil, fmt.Errorf("boltdb: open %s: %w", path, err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
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
		} else if err := meta.Put(schemaVersionKey, U64(schema.Version)); err != nil {
			return err
		}
		for _, name := range schema.Buckets {
			if _, err := tx.CreateBucketIfNotExists(name); err != nil {
				return fmt.Errorf("bucket %s: %w", name, err)
			}
		}
		return nil
	})
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("boltdb: %s: %w", path, err)
	}
	return &DB{DB: db}, nil
}

// GetProto reads the record at key into m. It returns an error wrapping errs.ErrNotFound
// when there is none. The bytes are unmarshalled into m, which owns its copy, so m stays
// valid after the transaction.
func GetProto(b *bolt.Bucket, key []byte, m proto.Message) error {
	v := b.Get(key)
	if v == nil {
		return errs.ErrNotFound
	}
	if err := proto.Unmarshal(v, m); err != nil {
		return fmt.Errorf("boltdb: decode record in %s: %w", b, err)
	}
	return nil
}

// PutProto writes m at key. Marshalling is deterministic, so equal records are equal
// bytes.
func PutProto(b *bolt.Bucket, key []byte, m proto.Message) error {
	v, err := proto.MarshalOptions{Deterministic: true}.Marshal(m)
	if err != nil {
		return fmt.Errorf("boltdb: encode record: %w", err)
	}
	return b.Put(key, v)
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
