package backup

import (
	"testing"

	"github.com/umbra-e2ee/umbra/internal/storetest"
)

// openBolt opens the store of the file at path, closed when t ends.
var openBolt = storetest.Opener(OpenBoltStore)

// boltEngine is the bbolt engine for the conformance suite. A bbolt file has one
// writer, a process's own: its "replicas" are one store, shared.
var boltEngine = storetest.File[Store]("backup.db", openBolt)

func TestBoltStore(t *testing.T) { testStore(t, boltEngine) }
