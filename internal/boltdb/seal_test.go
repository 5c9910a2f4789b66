package boltdb

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	bolt "go.etcd.io/bbolt"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/umbra-e2ee/umbra/pkg/errs"
)

// valueOffset returns where record i's value lies in the file, found by its bytes.
func valueOffset(t *testing.T, path string, i int) int64 {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	off := bytes.Index(b, []byte(thingValue(i)))
	if off < 0 || bytes.Count(b, []byte(thingValue(i))) != 1 {
		t.Fatalf("record %d found %d times in the file", i, bytes.Count(b, []byte(thingValue(i))))
	}
	return int64(off)
}

// TestBitRotInARecordIsRefused: eight bytes flipped inside a stored value pass bbolt's
// checks (its pages are sound) but fail the record's checksum: GetProto refuses the
// record with an error that names the file, bucket and key, instead of returning the
// altered value; the records around it still read.
func TestBitRotInARecordIsRefused(t *testing.T) {
	path := filledFile(t, 2000, Options{})
	rot(t, path, valueOffset(t, path, 700)+20, 8)
	if _, err := CheckFile(path); err != nil {
		t.Fatalf("CheckFile: %v (the pages are sound: only a value changed)", err)
	}
	db, err := Open(path, recordSchema, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	err = db.View(func(tx *bolt.Tx) error {
		b := tx.Bucket([]byte("things"))
		var got wrapperspb.StringValue
		err := GetProto(b, thingKey(700), &got)
		if !errors.Is(err, errs.ErrDamaged) {
			t.Errorf("GetProto of the damaged record: %v (value %q), want ErrDamaged", err, got.GetValue())
		} else if msg := err.Error(); !strings.Contains(msg, path) || !strings.Contains(msg, `bucket "things"`) || !strings.Contains(msg, `"thing-00700"`) {
			t.Errorf("error %q does not name the file, bucket and key", msg)
		}
		for _, i := range []int{699, 701} {
			if err := GetProto(b, thingKey(i), &got); err != nil || got.GetValue() != thingValue(i) {
				t.Errorf("record %d: %q, %v", i, got.GetValue(), err)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// TestSealCoversTheKey: a record read back under another key than the one it was
// written for fails, as does any changed, missing or added byte.
func TestSealCoversTheKey(t *testing.T) {
	v := Seal([]byte("k1"), []byte("value"))
	if got, problem := unseal([]byte("k1"), v); problem != "" || string(got) != "value" {
		t.Fatalf("unseal = %q, %q", got, problem)
	}
	for name, c := range map[string]struct{ key, sealed []byte }{
		"other key":     {[]byte("k2"), v},
		"changed byte":  {[]byte("k1"), append([]byte("valuf"), v[5:]...)},
		"missing byte":  {[]byte("k1"), v[1:]},
		"added byte":    {[]byte("k1"), append([]byte("x"), v...)},
		"too short":     {[]byte("k1"), v[:3]},
		"empty":         {[]byte("k1"), nil},
		"checksum only": {[]byte("k1"), v[len(v)-ChecksumSize:]},
	} {
		if _, problem := unseal(c.key, c.sealed); problem == "" {
			t.Errorf("%s: unseal passed", name)
		}
	}
}

// legacyFile writes a file as Umbra did before record checksums: schema version only,
// records unsealed.
func legacyFile(t *testing.T, n int) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "t.db")
	db, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		meta, _ := tx.CreateBucket(metaBucket)
		if err := meta.Put(schemaVersionKey, U64(1)); err != nil {
			return err
		}
		b, _ := tx.CreateBucket([]byte("things"))
		idx, _ := tx.CreateBucket([]byte("index"))
		for i := range n {
			v, _ := proto.Marshal(wrapperspb.String(thingValue(i)))
			if err := b.Put(thingKey(i), v); err != nil {
				return err
			}
			if err := idx.Put(thingKey(i), U64(uint64(i))); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	db.Close()
	return path
}

// TestOpenSealsALegacyFile: a file written before checksums has every record sealed
// once when opened, in steps that resume where a stopped process left off, and its
// index entries (not records) untouched.
func TestOpenSealsALegacyFile(t *testing.T) {
	defer func(n int) { sealChunk = n }(sealChunk)
	sealChunk = 7
	const n = 50
	path := legacyFile(t, n)

	// A process stopped after two steps.
	db, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	for range 2 {
		err := db.Update(func(tx *bolt.Tx) error {
			done, err := sealStep(tx, recordSchema)
			if done {
				t.Error("done after one step")
			}
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	db.Close()

	r, err := Verify(path, recordSchema, nil)
	if err != nil {
		t.Fatal(err)
	}
	if !r.Legacy || len(r.Problems) == 0 {
		t.Errorf("half-sealed file: legacy %v, problems %v; want a legacy file whose sealed records do not decode as unsealed ones", r.Legacy, r.Problems)
	}

	db2, err := Open(path, recordSchema, Options{})
	if err != nil {
		t.Fatal(err)
	}
	err = db2.View(func(tx *bolt.Tx) error {
		b, idx := tx.Bucket([]byte("things")), tx.Bucket([]byte("index"))
		for i := range n {
			raw := b.Get(thingKey(i))
			want, _ := proto.Marshal(wrapperspb.String(thingValue(i)))
			if !bytes.Equal(raw, Seal(thingKey(i), want)) {
				t.Errorf("record %d is not sealed exactly once", i)
			}
			if v, err := ParseU64(idx.Get(thingKey(i))); err != nil || v != uint64(i) {
				t.Errorf("index entry %d changed: %v %v", i, v, err)
			}
		}
		meta := tx.Bucket(metaBucket)
		if meta.Get(sealingBucketKey) != nil || meta.Get(sealingAfterKey) != nil || meta.Get(recordFormatKey) == nil {
			t.Error("migration state left behind, or record format not written")
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	db2.Close()
	if r, err := Verify(path, recordSchema, nil); err != nil || r.Err() != nil || r.Legacy || r.Records["things"] != n {
		t.Errorf("Verify after sealing: %+v, %v", r, err)
	}
}

// TestOpenRefusesAnotherRecordFormat: a file of a later record format is not misread.
func TestOpenRefusesAnotherRecordFormat(t *testing.T) {
	path := filledFile(t, 1, Options{})
	db, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	err = db.Update(func(tx *bolt.Tx) error { return tx.Bucket(metaBucket).Put(recordFormatKey, U64(2)) })
	db.Close()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Open(path, recordSchema, Options{}); err == nil || !strings.Contains(err.Error(), "record format") {
		t.Fatalf("Open: %v, want a record format error", err)
	}
}
