package card

import (
	"path/filepath"
	"testing"

	"github.com/umbra-e2ee/umbra/internal/servicetest"
)

func openBolt(t *testing.T, path string) *BoltStore {
	t.Helper()
	s, err := OpenBoltStore(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// boltEngine is the bbolt engine for the conformance suite: a card.db of the test's
// own. A file has one writer, so its replicas are one store.
var boltEngine = storeEngine{
	open: func(t *testing.T) (Store, func(t *testing.T) Store) {
		path := filepath.Join(t.TempDir(), "card.db")
		s := openBolt(t, path)
		return s, func(t *testing.T) Store {
			s.Close()
			return openBolt(t, path)
		}
	},
	replicas: func(t *testing.T, n int) []Store {
		s := openBolt(t, filepath.Join(t.TempDir(), "card.db"))
		out := make([]Store, n)
		for i := range out {
			out[i] = s
		}
		return out
	},
	snapshot: func(t *testing.T, s Store) map[string]string {
		return servicetest.SnapshotWithSequences(t, s.(*BoltStore).DB())
	},
}

func TestBoltStore(t *testing.T) { testStore(t, boltEngine) }
