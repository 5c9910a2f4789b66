package card

import (
	"errors"
	"fmt"
	"runtime"
	"sync/atomic"
	"testing"
)

// TestInParallelCoversEveryLookupOnce: a batch's lookups are shared among the cores
// in contiguous shares that together cover each lookup exactly once, whatever the
// batch's size and the number of cores, and an error of any share is the batch's.
func TestInParallelCoversEveryLookupOnce(t *testing.T) {
	for _, procs := range []int{1, 2, 3, 8} {
		for _, n := range []int{0, 1, minProofsPerWorker - 1, minProofsPerWorker, 2*minProofsPerWorker + 1, 1000} {
			t.Run(fmt.Sprintf("procs=%d/n=%d", procs, n), func(t *testing.T) {
				defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(procs))
				seen := make([]atomic.Int32, n)
				var shares atomic.Int32
				err := inParallel(n, func(lo, hi int) error {
					shares.Add(1)
					if hi-lo < min(n, minProofsPerWorker) {
						t.Errorf("a share of %d lookups [%d, %d)", hi-lo, lo, hi)
					}
					for i := lo; i < hi; i++ {
						seen[i].Add(1)
					}
					return nil
				})
				if err != nil {
					t.Fatal(err)
				}
				for i := range seen {
					if c := seen[i].Load(); c != 1 {
						t.Fatalf("lookup %d made %d times", i, c)
					}
				}
				if want := max(1, min(procs, n/minProofsPerWorker)); int(shares.Load()) != want {
					t.Errorf("%d shares, want %d", shares.Load(), want)
				}
				bad := errors.New("a lookup failed")
				err = inParallel(n, func(lo, hi int) error {
					if lo <= n-1 && n-1 < hi {
						return bad
					}
					return nil
				})
				if n > 0 && !errors.Is(err, bad) {
					t.Errorf("the last share's error was lost: %v", err)
				}
			})
		}
	}
}
