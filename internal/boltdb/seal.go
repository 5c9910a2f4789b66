package boltdb

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"hash/crc32"

	bolt "go.etcd.io/bbolt"
	"google.golang.org/protobuf/proto"

	"github.com/umbra-e2ee/umbra/pkg/errs"
)

// Records carry a checksum. bbolt checksums its meta pages only: a flipped bit in a data
// page is read back as if it were what was written. So every record (the value of a
// key in a bucket that Schema.Records names) ends with 4 bytes, big-endian: the CRC-32C
// (Castagnoli) of the key followed by the value. CRC-32C finds every error of up to a
// few bits and all but one in 2^32 of anything else, which is what bit rot and a torn
// or misdirected write need; it is no defence against someone who can write the file
// (an attacker who can would write a matching checksum too), and is not meant to be:
// see docs/threat-model.md. It costs about a nanosecond per 10 bytes with the CPU's
// CRC instruction. Covering the key too means that a record read back under a key it
// was not written for (a damaged key byte) fails as well.

// ChecksumSize is the size of a record's checksum.
const ChecksumSize = 4

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

func checksum(key, value []byte) uint32 {
	return crc32.Update(crc32.Update(0, castagnoli, key), castagnoli, value)
}

// Seal returns value followed by the checksum of key and value. It appends to value,
// so value must be a slice the caller owns.
func Seal(key, value []byte) []byte {
	return binary.BigEndian.AppendUint32(value, checksum(key, value))
}

// Unseal checks the record sealed, read at key in b, and returns its value without the
// checksum (a sub-slice of sealed). A record that fails is an error wrapping
// errs.ErrDamaged, which names the file, the bucket and the key.
func Unseal(b *bolt.Bucket, key, sealed []byte) ([]byte, error) {
	v, problem := unseal(key, sealed)
	if problem != "" {
		return nil, recordDamaged(b, key, sealed, problem)
	}
	return v, nil
}

// unseal returns the value of a sealed record, or what is wrong with it.
func unseal(key, sealed []byte) ([]byte, string) {
	n := len(sealed) - ChecksumSize
	if n < 0 {
		return nil, fmt.Sprintf("is %d bytes, too short for its checksum", len(sealed))
	}
	if binary.BigEndian.Uint32(sealed[n:]) != checksum(key, sealed[:n]) {
		return nil, "fails its checksum"
	}
	return sealed[:n], ""
}

// PutRecord writes value at key, sealed. value must be a slice the caller owns.
func PutRecord(b *bolt.Bucket, key, value []byte) error {
	return b.Put(key, Seal(key, value))
}

// DecodeProto checks the record sealed, read at key in b, and unmarshals it into m.
func DecodeProto(b *bolt.Bucket, key, sealed []byte, m proto.Message) error {
	if problem := decode(key, sealed, m); problem != "" {
		return recordDamaged(b, key, sealed, problem)
	}
	return nil
}

// decode unseals and unmarshals a record, or says what is wrong with it.
func decode(key, sealed []byte, m proto.Message) string {
	v, problem := unseal(key, sealed)
	if problem != "" {
		return problem
	}
	if err := proto.Unmarshal(v, m); err != nil {
		return fmt.Sprintf("passes its checksum but does not decode (%v)", err)
	}
	return ""
}

// recordDamaged describes a damaged record for the log: file, bucket, key, what is wrong.
func recordDamaged(b *bolt.Bucket, key, sealed []byte, what string) error {
	path := "?"
	if tx := b.Tx(); tx != nil && tx.DB() != nil {
		path = tx.DB().Path()
	}
	return errs.Damagedf("%s: the record at key %q in bucket %q %s", path, key, bucketNameOf(b, key, sealed), what)
}

// bucketNameOf finds the name of b among the top-level buckets of its transaction, for an
// error message (a bbolt bucket does not know its name): the one that holds sealed at key.
func bucketNameOf(b *bolt.Bucket, key, sealed []byte) string {
	name := "?"
	_ = b.Tx().ForEach(func(n []byte, c *bolt.Bucket) error {
		if c == b || bytes.Equal(c.Get(key), sealed) {
			name = string(n)
			return errFound
		}
		return nil
	})
	return name
}

var errFound = fmt.Errorf("found")
