package messaging

import (
	"github.com/umbra-e2ee/umbra/internal/boltdb"
	"github.com/umbra-e2ee/umbra/services/messaging/internal/msgstore"
)

// BoltStore is the Store in a bbolt file, messaging.db: the engine of package
// internal/msgstore, whose doc describes its log and indexes.
type BoltStore = msgstore.BoltStore

// StoreOptions tune a BoltStore. The zero value is right for the service.
type StoreOptions = msgstore.Options

var _ Store = (*BoltStore)(nil)

// OpenBoltStore opens (or creates) messaging.db at path and brings its indexes up to
// date with its log.
func OpenBoltStore(path string, opts StoreOptions) (*BoltStore, error) {
	return msgstore.Open(path, opts)
}

// Verify checks messaging.db at path offline: its pages and every record
// (boltdb.Verify), then the indexes against the log (msgstore.Verify).
func Verify(path string) (*boltdb.Report, error) { return msgstore.Verify(path) }
