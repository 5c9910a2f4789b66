package pgdb

import (
	"bytes"
	"context"
	"errors"
	"testing"

	"github.com/jackc/pgx/v5"
)

// TestGetBytesAndValues: GetBytes tells a row from none (and an empty value from
// none); ViewValue and UpdateValue return fn's value, or the zero value with the error,
// and a failed update writes nothing.
func TestGetBytesAndValues(t *testing.T) {
	_, db := notesDB(t, "('a', '\\x0102'), ('empty', '')")
	ctx := context.Background()
	for _, tc := range []struct {
		id    string
		want  []byte
		found bool
	}{
		{"a", []byte{1, 2}, true},
		{"empty", []byte{}, true},
		{"none", nil, false},
	} {
		b, found, err := GetBytes(ctx, db.Pool, "SELECT body FROM notes WHERE id = $1", tc.id)
		if err != nil || found != tc.found || !bytes.Equal(b, tc.want) || (b == nil) != (tc.want == nil) {
			t.Errorf("GetBytes(%s) = %x, %v, %v; want %x, %v", tc.id, b, found, err, tc.want, tc.found)
		}
	}
	if _, _, err := GetBytes(ctx, db.Pool, "SELECT body FROM no_such_table"); err == nil {
		t.Error("GetBytes over a missing table: no error")
	}

	read := func(ctx context.Context, tx pgx.Tx) ([]byte, error) {
		b, _, err := GetBytes(ctx, tx, "SELECT body FROM notes WHERE id = 'a'")
		return b, err
	}
	if b, err := ViewValue(db, read); err != nil || !bytes.Equal(b, []byte{1, 2}) {
		t.Fatalf("ViewValue = %x, %v; want 0102", b, err)
	}
	boom := errors.New("boom")
	b, err := UpdateValue(db, func(ctx context.Context, tx pgx.Tx) ([]byte, error) {
		if _, err := tx.Exec(ctx, "UPDATE notes SET body = '\\x03' WHERE id = 'a'"); err != nil {
			return nil, err
		}
		return []byte{3}, boom
	})
	if !errors.Is(err, boom) || b != nil {
		t.Errorf("a failed UpdateValue = %x, %v; want nothing and boom", b, err)
	}
	if b, err := ViewValue(db, read); err != nil || !bytes.Equal(b, []byte{1, 2}) {
		t.Errorf("after a failed update the value is %x, %v; want 0102 still", b, err)
	}
	if b, err := UpdateValue(db, func(ctx context.Context, tx pgx.Tx) ([]byte, error) { return []byte{4}, nil }); err != nil || !bytes.Equal(b, []byte{4}) {
		t.Errorf("UpdateValue = %x, %v; want 04", b, err)
	}
}
