package ratelimit

import (
	"fmt"
	"math"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// fakeClock is a settable time source.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

func newLimiter(t *testing.T, cfg Config) (*Limiter, *fakeClock) {
	t.Helper()
	clk := &fakeClock{t: time.Date(2026, 11, 1, 12, 0, 0, 0, time.UTC)}
	cfg.Clock = clk.Now
	l, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return l, clk
}

// allowN calls Allow n times and returns how many were allowed.
func allowN(l *Limiter, key string, n int) int {
	ok := 0
	for range n {
		if a, _ := l.Allow(key); a {
			ok++
		}
	}
	return ok
}

// wantAllowed makes n calls to l.Allow(key) and fails t unless want of them pass.
func wantAllowed(t *testing.T, l *Limiter, key string, n, want int, when string) {
	t.Helper()
	if got := allowN(l, key, n); got != want {
		t.Fatalf("%s: %d of %d calls allowed, want %d", when, got, n, want)
	}
}

func TestBurstThenSteadyRate(t *testing.T) {
	l, clk := newLimiter(t, Config{Rate: 2, Burst: 5})
	wantAllowed(t, l, "alice", 5, 5, "a fresh key, its burst")
	ok, retry := l.Allow("alice")
	if ok || retry != 500*time.Millisecond {
		t.Fatalf("over the burst: ok=%v retryAfter=%s; want refused, retry in 500ms", ok, retry)
	}
	// Half a token's time gives nothing; a whole one gives exactly one.
	clk.Add(250 * time.Millisecond)
	if ok, retry := l.Allow("alice"); ok || retry != 250*time.Millisecond {
		t.Fatalf("after 250ms: ok=%v retryAfter=%s; want refused, retry in 250ms", ok, retry)
	}
	clk.Add(250 * time.Millisecond)
	wantAllowed(t, l, "alice", 3, 1, "after 500ms at 2/s")
	// Ten seconds refill the bucket only up to the burst.
	clk.Add(10 * time.Second)
	wantAllowed(t, l, "alice", 10, 5, "after a long pause")
}

func TestKeysAreIndependent(t *testing.T) {
	l, _ := newLimiter(t, Config{Rate: 1, Burst: 2})
	wantAllowed(t, l, "alice", 3, 2, "alice")
	wantAllowed(t, l, "bob", 3, 2, "bob was limited by alice's calls")
}

func TestSlowRates(t *testing.T) {
	l, clk := newLimiter(t, Config{Rate: 0.1, Burst: 1})
	wantAllowed(t, l, "k", 2, 1, "a fresh key")
	if _, retry := l.Allow("k"); retry != 10*time.Second {
		t.Fatalf("retryAfter = %s, want 10s at 0.1/s", retry)
	}
	clk.Add(9 * time.Second)
	wantAllowed(t, l, "k", 1, 0, "after 9s")
	clk.Add(time.Second)
	wantAllowed(t, l, "k", 1, 1, "after 10s")
}

func TestClockGoingBackwardsGivesNoTokens(t *testing.T) {
	l, clk := newLimiter(t, Config{Rate: 1, Burst: 1})
	allowN(l, "k", 1)
	clk.Add(-time.Hour)
	wantAllowed(t, l, "k", 1, 0, "after the clock went back")
	clk.Add(time.Hour) // back where it was: still no time has passed for the bucket
	wantAllowed(t, l, "k", 1, 0, "back at the original time")
	clk.Add(time.Second)
	wantAllowed(t, l, "k", 1, 1, "a second later")
}

func TestIdleKeysAreEvicted(t *testing.T) {
	l, clk := newLimiter(t, Config{Rate: 10, Burst: 10}) // full again after 1s
	for i := range 100 {
		allowN(l, fmt.Sprint("key", i), 10)
	}
	if l.Len() != 100 {
		t.Fatalf("%d buckets, want 100", l.Len())
	}
	clk.Add(999 * time.Millisecond)
	allowN(l, "fresh", 1)
	if l.Len() != 101 {
		t.Fatalf("buckets not yet full were dropped: %d left, want 101", l.Len())
	}
	clk.Add(time.Millisecond)
	allowN(l, "fresh", 1)
	if l.Len() != 1 {
		t.Fatalf("%d buckets after every other key idled for a refill time; want 1", l.Len())
	}
	// An evicted key comes back with a full bucket, exactly as if it had been kept.
	wantAllowed(t, l, "key7", 11, 10, "evicted key")
}

func TestMaxKeysDropsTheLeastRecentlyUsed(t *testing.T) {
	l, _ := newLimiter(t, Config{Rate: 1, Burst: 1, MaxKeys: 3})
	for _, k := range []string{"a", "b", "c"} {
		allowN(l, k, 1)
	}
	allowN(l, "a", 1) // a is now the most recently used; b the least
	allowN(l, "d", 1)
	if l.Len() != 3 {
		t.Fatalf("%d buckets, want the cap of 3", l.Len())
	}
	// a, c and d are still empty; b was dropped and starts full.
	for k, want := range map[string]int{"a": 0, "c": 0, "d": 0} {
		if got := allowN(l, k, 1); got != want {
			t.Errorf("%s: %d allowed, want %d (its bucket should have been kept)", k, got, want)
		}
	}
	if got := allowN(l, "b", 1); got != 1 {
		t.Errorf("b: %d allowed, want 1 (its bucket should have been dropped)", got)
	}
}

func TestConcurrentCallersShareOneBucket(t *testing.T) {
	l, _ := newLimiter(t, Config{Rate: 1, Burst: 50})
	var allowed atomic.Int64
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			allowed.Add(int64(allowN(l, "shared", 20)))
			allowN(l, fmt.Sprint("own", allowed.Load()), 1)
		})
	}
	wg.Wait()
	if allowed.Load() != 50 {
		t.Fatalf("160 concurrent calls with a frozen clock: %d allowed, want the burst of 50", allowed.Load())
	}
}

func TestNewRefusesBadConfig(t *testing.T) {
	for _, cfg := range []Config{
		{Rate: 0, Burst: 1},
		{Rate: -1, Burst: 1},
		{Rate: math.NaN(), Burst: 1},
		{Rate: math.Inf(1), Burst: 1},
		{Rate: 1, Burst: 0},
		{Rate: 1, Burst: 1, MaxKeys: -1},
	} {
		if _, err := New(cfg); err == nil {
			t.Errorf("New(%+v) accepted a bad config", cfg)
		}
	}
	// A very slow rate is valid: its buckets are simply never idle.
	l, err := New(Config{Rate: 1e-12, Burst: 1 << 30})
	if err != nil {
		t.Fatal(err)
	}
	if ok, _ := l.Allow("k"); !ok {
		t.Error("first call refused")
	}
}

func TestString(t *testing.T) {
	l, _ := newLimiter(t, Config{Rate: 0.5, Burst: 3})
	if got, want := l.String(), "0.5 per second (burst 3)"; got != want {
		t.Errorf("String() = %q, want %q", got, want)
	}
}

// TestAvailableTakesNothing: Available says whether Allow would succeed, and when it
// will, without taking a token or creating a bucket.
func TestAvailableTakesNothing(t *testing.T) {
	l, clk := newLimiter(t, Config{Rate: 1, Burst: 2})
	if ok, _ := l.Available("k"); !ok || l.Len() != 0 {
		t.Fatalf("a new key: available %v with %d buckets; want true and none", ok, l.Len())
	}
	l.Allow("k")
	l.Allow("k")
	for range 3 {
		if ok, retry := l.Available("k"); ok || retry != time.Second {
			t.Fatalf("an empty bucket: %v, retry %s; want false, 1s", ok, retry)
		}
	}
	clk.Add(500 * time.Millisecond)
	if ok, retry := l.Available("k"); ok || retry != 500*time.Millisecond {
		t.Fatalf("half a token: %v, retry %s; want false, 500ms", ok, retry)
	}
	clk.Add(500 * time.Millisecond)
	if ok, _ := l.Available("k"); !ok {
		t.Fatal("a refilled token is not available")
	}
	if ok, _ := l.Allow("k"); !ok {
		t.Fatal("Available took the token it reported")
	}
}
