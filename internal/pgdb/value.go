// The transactions that return what they read or wrote: ViewValue and UpdateValue.

package pgdb

import (
	"context"

	"github.com/jackc/pgx/v5"
)

// ViewValue runs fn in a read-only transaction (View) and returns its value; when fn or
// the transaction fails, the zero T and the error.
func ViewValue[T any](db *DB, fn func(ctx context.Context, tx pgx.Tx) (T, error)) (T, error) {
	return valueOf(db.View, fn)
}

// UpdateValue is ViewValue in a read-committed transaction (Update), which may run fn
// more than once: the value is that of the run that committed, and never one of a
// transaction that did not.
func UpdateValue[T any](db *DB, fn func(ctx context.Context, tx pgx.Tx) (T, error)) (T, error) {
	return valueOf(db.Update, fn)
}

func valueOf[T any](run func(func(context.Context, pgx.Tx) error) error, fn func(context.Context, pgx.Tx) (T, error)) (T, error) {
	var out T
	err := run(func(ctx context.Context, tx pgx.Tx) error {
		var err error
		out, err = fn(ctx, tx)
		return err
	})
	if err != nil {
		var zero T
		return zero, err
	}
	return out, nil
}
