// Running again a transaction the database aborted for a concurrent one, for the
// stores that run their own transactions outside InTx.

package pgdb

import (
	"context"
	"math/rand/v2"
	"time"
)

// Retryable reports whether err is a transaction the database aborted for a
// concurrent one (a serialization failure or a deadlock), which may succeed when run
// again: the errors InTx runs its transaction again for.
func Retryable(err error) bool { return retryable(err) }

// RetryPause waits before attempt's next run, as InTx does (a growing pause, at most
// 100 ms, with a random part); false when ctx ended first.
func RetryPause(ctx context.Context, attempt int) bool {
	backoff := min(time.Duration(1<<attempt)*time.Millisecond, 100*time.Millisecond)
	select {
	case <-ctx.Done():
		return false
	case <-time.After(backoff + rand.N(backoff)):
		return true
	}
}
