// The read of one row's one column, found or not.

package pgdb

import (
	"context"
	"errors"

	"github.com/jackc/pgx/v5"
)

// RowQuerier runs a query that returns at most one row: a transaction, a connection or
// a pool.
type RowQuerier interface {
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

// GetBytes reads the one column of the row query finds (a record's bytes); found is
// false, and err nil, when it finds none.
func GetBytes(ctx context.Context, q RowQuerier, query string, args ...any) (b []byte, found bool, err error) {
	switch err := q.QueryRow(ctx, query, args...).Scan(&b); {
	case errors.Is(err, pgx.ErrNoRows):
		return nil, false, nil
	case err != nil:
		return nil, false, err
	}
	return b, true, nil
}
