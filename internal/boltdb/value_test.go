package boltdb

import (
	"errors"
	"path/filepath"
	"testing"

	bolt "go.etcd.io/bbolt"
)

// TestValueOfATransaction: ViewValue and UpdateValue return fn's value when the
// transaction succeeds, and the zero value with the error when it fails; a failed
// update writes nothing.
func TestValueOfATransaction(t *testing.T) {
	db := openTest(t, filepath.Join(t.TempDir(), "t.db"))
	defer db.Close()
	things := []byte("things")
	put := func(tx *bolt.Tx) ([]byte, error) {
		v := []byte("v")
		return v, tx.Bucket(things).Put([]byte("k"), v)
	}
	if v, err := UpdateValue(db, put); err != nil || string(v) != "v" {
		t.Fatalf("UpdateValue = %q, %v; want \"v\"", v, err)
	}
	get := func(tx *bolt.Tx) ([]byte, error) {
		return append([]byte(nil), tx.Bucket(things).Get([]byte("k"))...), nil
	}
	if v, err := ViewValue(db, get); err != nil || string(v) != "v" {
		t.Fatalf("ViewValue = %q, %v; want \"v\"", v, err)
	}
	boom := errors.New("boom")
	v, err := UpdateValue(db, func(tx *bolt.Tx) ([]byte, error) {
		if err := tx.Bucket(things).Put([]byte("k"), []byte("w")); err != nil {
			return nil, err
		}
		return []byte("w"), boom
	})
	if !errors.Is(err, boom) || v != nil {
		t.Errorf("a failed UpdateValue = %q, %v; want nothing and boom", v, err)
	}
	if v, err := ViewValue(db, get); err != nil || string(v) != "v" {
		t.Errorf("after a failed update the value is %q, %v; want \"v\" still", v, err)
	}
	if v, err := ViewValue(db, func(*bolt.Tx) ([]byte, error) { return []byte("x"), boom }); !errors.Is(err, boom) || v != nil {
		t.Errorf("a failed ViewValue = %q, %v; want nothing and boom", v, err)
	}
}
