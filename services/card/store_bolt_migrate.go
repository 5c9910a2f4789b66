package card

import (
	"github.com/umbra-e2ee/umbra/internal/boltdb"
	"github.com/umbra-e2ee/umbra/internal/storecopy"
)

// copyOrder is every bucket of card.db, in the order a copy writes them: cards before
// the active copies and history that name them.
var copyOrder = [][]byte{bucketServiceKey, bucketCards, bucketActive, bucketHistory, bucketEvents, bucketGrants,
	bucketKTLogKey, bucketKTLogKeys, bucketKTLeaves, bucketKTLogTiles, bucketKTMapTiles, bucketKTMapValues, bucketKTCheckpoints}

// boltSource streams card.db at path, read-only (boltdb.Dump).
func boltSource(path string) storecopy.Source {
	return func(fn func(kind string, key, value []byte) error) error {
		return boltdb.Dump(path, schema, copyOrder, fn)
	}
}
