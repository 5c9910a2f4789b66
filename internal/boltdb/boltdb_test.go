package boltdb

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/umbra-e2ee/umbra/pkg/errs"
)

var testSchema = Schema{Version: 1, Buckets: [][]byte{[]byte("things")}}

// openTest opens path with testSchema and the default options.
func openTest(t *testing.T, path string) *DB {
	t.Helper()
	db, err := Open(path, testSchema, Options{})
	if err != nil {
		t.Fatal(err)
	}
	return db
}

func TestOpenCreatesBucketsWithPrivateMode(t *testing.T) {
	path := filepath.Join(t.TempDir(), "sub", "t.db")
	db := openTest(t, path)
	defer db.Close()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if mode := fi.Mode().Perm(); mode != 0o600 {
		t.Errorf("file mode %o, want 600", mode)
	}
	err = db.View(func(tx *bolt.Tx) error {
		if tx.Bucket([]byte("things")) == nil {
			return errors.New("bucket things missing")
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

func TestOpenRefusesOtherSchemaVersion(t *testing.T) {
	path := filepath.Join(t.TempDir(), "t.db")
	db := openTest(t, path)
	db.Close()
	_, err := Open(path, Schema{Version: 2, Buckets: testSchema.Buckets}, Options{})
	if err == nil || !strings.Contains(err.Error(), "schema version 1") {
		t.Fatalf("open with version 2: %v, want a schema version error", err)
	}
}

func TestOpenLockedFileTimesOut(t *testing.T) {
	path := filepath.Join(t.TempDir(), "t.db")
	db := openTest(t, path)
	defer db.Close()
	_, err := Open(path, testSchema, Options{LockTimeout: 50 * time.Millisecond})
	if err == nil || !strings.Contains(err.Error(), "locked") {
		t.Fatalf("second open: %v, want locked", err)
	}
}

func TestProtoRoundTripSurvivesReopen(t *testing.T) {
	path := filepath.Join(t.TempDir(), "t.db")
	db := openTest(t, path)
	err := db.Update(func(tx *bolt.Tx) error {
		return PutProto(tx.Bucket([]byte("things")), Key("app", "x"), wrapperspb.String("hello"))
	})
	if err != nil {
		t.Fatal(err)
	}
	db.Close()

	db = openTest(t, path)
	defer db.Close()
	var got wrapperspb.StringValue
	err = db.View(func(tx *bolt.Tx) error {
		b := tx.Bucket([]byte("things"))
		if err := GetProto(b, Key("app", "y"), &got); !errors.Is(err, errs.ErrNotFound) {
			t.Errorf("missing key: %v, want ErrNotFound", err)
		}
		return GetProto(b, Key("app", "x"), &got)
	})
	if err != nil {
		t.Fatal(err)
	}
	if !proto.Equal(&got, wrapperspb.String("hello")) {
		t.Errorf("got %v", &got)
	}
}

func TestU64SortsNumerically(t *testing.T) {
	if string(U64(255)) >= string(U64(256)) {
		t.Error("U64(255) does not sort before U64(256)")
	}
	n, err := ParseU64(U64(1 << 40))
	if err != nil || n != 1<<40 {
		t.Errorf("ParseU64 = %d, %v", n, err)
	}
	if _, err := ParseU64([]byte{1, 2}); err == nil {
		t.Error("ParseU64 of 2 bytes succeeded")
	}
	if got := Key("a", "b"); string(got) != "a\x00b" {
		t.Errorf("Key = %q", got)
	}
}

// TestWriteHeavyOptions: the options reach bbolt, and a file written with them opens
// with the defaults (the freelist is rebuilt from the pages).
func TestWriteHeavyOptions(t *testing.T) {
	path := filepath.Join(t.TempDir(), "t.db")
	db, err := Open(path, testSchema, Options{NoFreelistSync: true, FreelistType: bolt.FreelistMapType, InitialMmapSize: 64 << 20})
	if err != nil {
		t.Fatal(err)
	}
	if !db.NoFreelistSync || db.FreelistType != bolt.FreelistMapType {
		t.Errorf("options not applied: NoFreelistSync %v, FreelistType %q", db.NoFreelistSync, db.FreelistType)
	}
	err = db.Update(func(tx *bolt.Tx) error { return tx.Bucket([]byte("things")).Put([]byte("k"), []byte("v")) })
	if err != nil {
		t.Fatal(err)
	}
	db.Close()
	db = openTest(t, path)
	defer db.Close()
	err = db.View(func(tx *bolt.Tx) error {
		if v := tx.Bucket([]byte("things")).Get([]byte("k")); string(v) != "v" {
			return errors.New("value lost")
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}
