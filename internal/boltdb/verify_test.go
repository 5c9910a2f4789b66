package boltdb

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/umbra-e2ee/umbra/pkg/errs"
)

// TestVerify: a sound file passes; each kind of damage is reported, page damage and
// record damage alike; a file of another store is told apart; the service's own check
// runs and reports; a file held by a running process is refused.
func TestVerify(t *testing.T) {
	t.Run("sound", func(t *testing.T) {
		path := filledFile(t, 2000, Options{})
		r, err := Verify(path, recordSchema, func(tx *bolt.Tx, r *Report) { r.Entries++ })
		if err != nil || r.Err() != nil {
			t.Fatalf("Verify: %v, %v", err, r.Err())
		}
		if r.Records["things"] != 2000 || r.Entries != 1 || r.Stats.Reachable == 0 {
			t.Errorf("report %+v", r)
		}
	})
	for _, tc := range damages {
		t.Run(tc.name, func(t *testing.T) {
			path := filledFile(t, 2000, Options{})
			tc.damage(t, path, readLayout(t, path))
			r, err := Verify(path, recordSchema, nil)
			if err != nil {
				t.Fatal(err)
			}
			if r.Err() == nil {
				t.Fatal("Verify passed a damaged file")
			}
		})
	}
	t.Run("bit rot in a record", func(t *testing.T) {
		path := filledFile(t, 2000, Options{})
		rot(t, path, valueOffset(t, path, 1234)+10, 8)
		r, err := Verify(path, recordSchema, nil)
		if err != nil {
			t.Fatal(err)
		}
		if len(r.Problems) != 1 || !strings.Contains(r.Problems[0], `"thing-01234" fails its checksum`) {
			t.Errorf("problems %q, want the one damaged record", r.Problems)
		}
		if err := r.Err(); !errors.Is(err, errs.ErrDamaged) {
			t.Errorf("Err = %v", err)
		}
	})
	t.Run("another store's file", func(t *testing.T) {
		path := filledFile(t, 10, Options{})
		other := Schema{Version: 1, Buckets: [][]byte{[]byte("apps")}}
		r, err := Verify(path, other, nil)
		if err != nil {
			t.Fatal(err)
		}
		if got := strings.Join(r.Problems, "; "); !strings.Contains(got, `bucket "things" is not one of this store's`) || !strings.Contains(got, `bucket "apps" is missing`) {
			t.Errorf("problems %q", got)
		}
	})
	t.Run("service check", func(t *testing.T) {
		path := filledFile(t, 10, Options{})
		r, err := Verify(path, recordSchema, func(tx *bolt.Tx, r *Report) { r.Problemf("index entry 7 points nowhere") })
		if err != nil {
			t.Fatal(err)
		}
		if r.Err() == nil || !strings.Contains(r.Err().Error(), "index entry 7 points nowhere") {
			t.Errorf("Err = %v", r.Err())
		}
	})
	t.Run("empty", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "t.db")
		if err := os.WriteFile(path, nil, 0o600); err != nil {
			t.Fatal(err)
		}
		if r, err := Verify(path, recordSchema, nil); err != nil || r.Err() == nil {
			t.Errorf("Verify of an empty file: %v, %v", r, err)
		}
	})
	t.Run("in use", func(t *testing.T) {
		path := filledFile(t, 10, Options{})
		db, err := Open(path, recordSchema, Options{})
		if err != nil {
			t.Fatal(err)
		}
		defer db.Close()
		defer func(d time.Duration) { VerifyLockTimeout = d }(VerifyLockTimeout)
		VerifyLockTimeout = 50 * time.Millisecond
		if _, err := Verify(path, recordSchema, nil); !errors.Is(err, ErrLocked) || !strings.Contains(err.Error(), "stop the service first") {
			t.Errorf("Verify of a file in use: %v", err)
		}
	})
}
