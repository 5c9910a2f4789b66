package boltdb

import (
	"errors"
	"path/filepath"
	"testing"

	bolt "go.etcd.io/bbolt"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/umbra-e2ee/umbra/pkg/errs"
)

// TestGetOptional: a stored record is read; a missing one is nil and no error; a
// damaged one is still an error.
func TestGetOptional(t *testing.T) {
	db := openTest(t, filepath.Join(t.TempDir(), "t.db"))
	defer db.Close()
	err := db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket([]byte("things"))
		if err := PutProto(b, []byte("here"), wrapperspb.String("v")); err != nil {
			return err
		}
		return b.Put([]byte("damaged"), []byte("not a sealed record"))
	})
	if err != nil {
		t.Fatal(err)
	}
	_ = db.View(func(tx *bolt.Tx) error {
		b := tx.Bucket([]byte("things"))
		if m, err := GetOptional(b, []byte("here"), &wrapperspb.StringValue{}); err != nil || m.GetValue() != "v" {
			t.Errorf("a stored record: %v, %v", m, err)
		}
		if m, err := GetOptional(b, []byte("missing"), &wrapperspb.StringValue{}); err != nil || m != nil {
			t.Errorf("a missing record: %v, %v; want nil and no error", m, err)
		}
		if m, err := GetOptional(b, []byte("damaged"), &wrapperspb.StringValue{}); err == nil || m != nil || !errors.Is(err, errs.ErrDamaged) {
			t.Errorf("a damaged record: %v, %v; want a damage error", m, err)
		}
		return nil
	})
}
