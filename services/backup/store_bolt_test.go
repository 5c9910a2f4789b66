package backup

import (
	"path/filepath"
	"testing"
)

func openTestStore(t *testing.T) (*BoltStore, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "backup.db")
	s, err := OpenBoltStore(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s, path
}

// boltEngine is the bbolt engine for the conformance suite. A bbolt file has one
// writer, a process's own: its "replicas" are one store, shared.
var boltEngine = storeEngine{
	open: func(t *testing.T) (Store, func(t *testing.T) Store) {
		s, path := openTestStore(t)
		return s, func(t *testing.T) Store {
			s.Close()
			s2, err := OpenBoltStore(path)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { s2.Close() })
			return s2
		}
	},
	replicas: func(t *testing.T, n int) []Store {
		s, _ := openTestStore(t)
		out := make([]Store, n)
		for i := range out {
			out[i] = s
		}
		return out
	},
}

func TestBoltStore(t *testing.T) { testStore(t, boltEngine) }
