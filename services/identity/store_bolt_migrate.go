package identity

import (
	"github.com/umbra-e2ee/umbra/internal/boltdb"
	"github.com/umbra-e2ee/umbra/internal/storecopy"
)

// copyOrder is every bucket of identity.db, in the order a copy writes them: a key's
// app before the key.
var copyOrder = [][]byte{bucketApps, bucketAppKeys, bucketAppKeysByApp, bucketSigningKeys, bucketRevocations, bucketRevocationLog}

// boltSource streams identity.db at path, read-only (boltdb.Dump).
func boltSource(path string) storecopy.Source {
	return func(fn func(kind string, key, value []byte) error) error {
		return boltdb.Dump(path, schema, copyOrder, fn)
	}
}
