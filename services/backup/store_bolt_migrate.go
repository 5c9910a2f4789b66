package backup

import (
	"github.com/umbra-e2ee/umbra/internal/boltdb"
	"github.com/umbra-e2ee/umbra/internal/storecopy"
)

// copyOrder is every bucket of backup.db, in the order a copy writes them.
var copyOrder = [][]byte{bucketSlots, bucketOutbox, bucketServer}

// boltSource streams backup.db at path, read-only (boltdb.Dump).
func boltSource(path string) storecopy.Source {
	return func(fn func(kind string, key, value []byte) error) error {
		return boltdb.Dump(path, schema, copyOrder, fn)
	}
}
