// The transactions that return what they read or wrote: ViewValue and UpdateValue.

package boltdb

import bolt "go.etcd.io/bbolt"

// ViewValue runs fn in a read transaction (View) and returns its value; when fn or
// the transaction fails, the zero T and the error.
func ViewValue[T any](db *DB, fn func(*bolt.Tx) (T, error)) (T, error) {
	return valueOf(db.View, fn)
}

// UpdateValue is ViewValue in a write transaction (Update): the value of a transaction
// that did not commit is never returned.
func UpdateValue[T any](db *DB, fn func(*bolt.Tx) (T, error)) (T, error) {
	return valueOf(db.Update, fn)
}

func valueOf[T any](run func(func(*bolt.Tx) error) error, fn func(*bolt.Tx) (T, error)) (T, error) {
	var out T
	err := run(func(tx *bolt.Tx) error {
		var err error
		out, err = fn(tx)
		return err
	})
	if err != nil {
		var zero T
		return zero, err
	}
	return out, nil
}
