// The pause before running again a transaction the database aborted for a concurrent
// one: InTx's, and that of the stores that run their own transactions outside it.

package pgdb

import (
	"context"
	"math/rand/v2"
	"time"
)

// RetryPause waits before attempt's next run (a growing pause, at most
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
