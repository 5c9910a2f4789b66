// The shapes of record kinds that the services' copy plans (Copy) share: their loads and
// the SQL of their bbolt keys.

package pgdb

import (
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5"
)

// A Load queues the statements that write one pair (CopyKind.Load).
type Load = func(b *pgx.Batch, key, value []byte) error

// KeySQL is the SQL of a bbolt key made by boltdb.Key from text columns, rebuilt from
// them: each as its bytes, joined by a zero byte.
func KeySQL(cols ...string) string {
	s := make([]string, len(cols))
	for i, c := range cols {
		s[i] = "convert_to(" + c + ", 'UTF8')"
	}
	return strings.Join(s, ` || '\x00'::bytea || `)
}

// Insert queues one row of table: args are the values of cols, in order.
func Insert(b *pgx.Batch, table string, cols []string, args []any) error {
	if len(args) != len(cols) {
		return fmt.Errorf("%d values for the %d columns of %s", len(args), len(cols), table)
	}
	v := make([]string, len(cols))
	for i := range cols {
		v[i] = fmt.Sprintf("$%d", i+1)
	}
	b.Queue("INSERT INTO "+table+" ("+strings.Join(cols, ", ")+") VALUES ("+strings.Join(v, ", ")+")", args...)
	return nil
}

// InsertRow is the Load of a kind whose key is n text ids, the first n of cols, and
// whose value is the record, the last; extra, when set, reads the columns between from
// the record.
func InsertRow(table string, n int, cols []string, extra func(value []byte) ([]any, error)) Load {
	return func(b *pgx.Batch, key, value []byte) error {
		parts, err := SplitKey(key, n)
		if err != nil {
			return err
		}
		args := make([]any, 0, len(cols))
		for _, p := range parts {
			args = append(args, p)
		}
		if extra != nil {
			more, err := extra(value)
			if err != nil {
				return err
			}
			args = append(args, more...)
		}
		return Insert(b, table, cols, append(args, value))
	}
}

// InsertNumbered is the Load of a kind whose key is text ids, a zero byte and a u64,
// and whose value is the record: cols are the ids', the number's and the record's.
func InsertNumbered(table string, cols ...string) Load {
	return func(b *pgx.Batch, key, value []byte) error {
		parts, err := SplitKey(key, len(cols)-1)
		if err != nil {
			return err
		}
		n, err := CopyU64([]byte(parts[len(parts)-1]))
		if err != nil {
			return err
		}
		args := make([]any, 0, len(cols))
		for _, p := range parts[:len(parts)-1] {
			args = append(args, p)
		}
		return Insert(b, table, cols, append(args, n, value))
	}
}

// InsertBytes is the Load of a kind whose key and value go into keyCol and valueCol as
// they are.
func InsertBytes(table, keyCol, valueCol string) Load {
	return func(b *pgx.Batch, key, value []byte) error {
		return Insert(b, table, []string{keyCol, valueCol}, []any{key, value})
	}
}

// InsertU64 is the Load of a kind whose key is a u64 (boltdb.U64), numCol's bigint,
// and whose value goes into valueCol.
func InsertU64(table, numCol, valueCol string) Load {
	return func(b *pgx.Batch, key, value []byte) error {
		n, err := CopyU64(key)
		if err != nil {
			return err
		}
		return Insert(b, table, []string{numCol, valueCol}, []any{n, value})
	}
}

// SetCounter is the Load of a bucket's sequence (the "<bucket>.sequence" kind, its
// value a u64): statement sets the counter that goes on from it to $1.
func SetCounter(statement string) Load {
	return func(b *pgx.Batch, _, value []byte) error {
		last, err := CopyU64(value)
		if err != nil {
			return err
		}
		b.Queue(statement, last)
		return nil
	}
}
