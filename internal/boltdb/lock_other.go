//go:build !unix

package boltdb

import (
	"errors"
	"fmt"
	"time"

	bolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"
)

// CheckUnused returns an error wrapping ErrLocked when another process has the bbolt
// file at path open. Without flock it asks bbolt, which reads the file's meta pages.
func CheckUnused(path string) error {
	db, err := bolt.Open(path, 0o600, &bolt.Options{ReadOnly: true, Timeout: 500 * time.Millisecond})
	if errors.Is(err, berrors.ErrTimeout) {
		return fmt.Errorf("%s is open in a running process (%w)", path, ErrLocked)
	}
	if err == nil {
		db.Close()
	}
	return nil
}
