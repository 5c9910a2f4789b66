// The read of a record that may be missing.

package boltdb

import (
	"errors"

	bolt "go.etcd.io/bbolt"
	"google.golang.org/protobuf/proto"

	"github.com/umbra-e2ee/umbra/pkg/errs"
)

// GetOptional reads the record at key into m and returns m; the zero M (nil), and no
// error, when there is none. A damaged record is an error, as with GetProto.
func GetOptional[M proto.Message](b *bolt.Bucket, key []byte, m M) (M, error) {
	var zero M
	if err := GetProto(b, key, m); err != nil {
		if errors.Is(err, errs.ErrNotFound) {
			return zero, nil
		}
		return zero, err
	}
	return m, nil
}
