package card

import (
	"testing"

	"github.com/umbra-e2ee/umbra/internal/servicetest"
	"github.com/umbra-e2ee/umbra/internal/storetest"
)

var openBolt = storetest.Opener(OpenBoltStore)

// boltEngine is the bbolt engine for the conformance suite: a card.db of the test's
// own. A file has one writer, so its replicas are one store.
var boltEngine = storeEngine{
	Engine: storetest.File[Store]("card.db", openBolt),
	snapshot: func(t *testing.T, s Store) map[string]string {
		return servicetest.SnapshotWithSequences(t, s.(*BoltStore).DB())
	},
}

func TestBoltStore(t *testing.T) { testStore(t, boltEngine) }
