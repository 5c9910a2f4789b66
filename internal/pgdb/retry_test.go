package pgdb

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
)

func TestRetryableAndRetryPause(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want bool
	}{
		{&pgconn.PgError{Code: "40001"}, true},
		{fmt.Errorf("wrapped: %w", &pgconn.PgError{Code: "40P01"}), true},
		{&pgconn.PgError{Code: "23505"}, false},
		{errors.New("not the database's"), false},
		{nil, false},
	} {
		t.Run(fmt.Sprint(tc.err), func(t *testing.T) {
			if got := Retryable(tc.err); got != tc.want {
				t.Errorf("Retryable(%v) = %v, want %v", tc.err, got, tc.want)
			}
		})
	}
	t.Run("pause", func(t *testing.T) {
		start := time.Now()
		if !RetryPause(context.Background(), 1) {
			t.Fatal("RetryPause with a live context = false")
		}
		if d := time.Since(start); d < 2*time.Millisecond {
			t.Errorf("the first pause lasted %v, want at least 2ms", d)
		}
	})
	t.Run("canceled", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		if RetryPause(ctx, 10) {
			t.Error("RetryPause with a canceled context = true")
		}
	})
}
