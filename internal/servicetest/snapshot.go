package servicetest

import (
	"strconv"
	"testing"

	bolt "go.etcd.io/bbolt"
)

// Viewer is a bbolt file that can be read: a *bolt.DB, or a *boltdb.DB.
type Viewer interface {
	View(func(*bolt.Tx) error) error
}

// Snapshot returns every key and value of db's buckets, as "bucket/key", to prove
// that a refused request wrote nothing.
func Snapshot(t testing.TB, db Viewer) map[string]string {
	t.Helper()
	return snapshot(t, db, false)
}

// SnapshotWithSequences is Snapshot with every bucket's sequence besides, as
// "bucket#sequence": a refused request takes no sequence number either.
func SnapshotWithSequences(t testing.TB, db Viewer) map[string]string {
	t.Helper()
	return snapshot(t, db, true)
}

func snapshot(t testing.TB, db Viewer, sequences bool) map[string]string {
	t.Helper()
	out := map[string]string{}
	err := db.View(func(tx *bolt.Tx) error {
		return tx.ForEach(func(name []byte, b *bolt.Bucket) error {
			if sequences {
				out[string(name)+"#sequence"] = strconv.FormatUint(b.Sequence(), 10)
			}
			return b.ForEach(func(k, v []byte) error {
				out[string(name)+"/"+string(k)] = string(v)
				return nil
			})
		})
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}
