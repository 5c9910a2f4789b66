// Package ratelimit is a set of token buckets keyed by string: one bucket per calling
// identity (or whatever the caller keys by), each refilled at a steady rate up to a
// burst.
//
// Memory is bounded. A bucket that has been idle long enough to be full again is no
// different from a bucket that was never created, so it is dropped; and the number of
// buckets is capped, the least recently used one going first when a new key would
// exceed the cap. Dropping a bucket that was not yet full gives its key a fresh burst,
// so the cap should sit well above the number of keys active within one refill time.
package ratelimit

import (
	"container/list"
	"fmt"
	"math"
	"strconv"
	"sync"
	"time"
)

// DefaultMaxKeys is the bucket cap when Config.MaxKeys is 0.
const DefaultMaxKeys = 100_000

// Config says how fast each key may go.
type Config struct {
	// Rate is how many events per second a key may have on average. It must be > 0.
	Rate float64
	// Burst is how many events a key may have at once, and the size of its bucket. It
	// must be >= 1.
	Burst int
	// MaxKeys caps the number of buckets kept; 0 means DefaultMaxKeys.
	MaxKeys int
	// Clock is the time source; nil means time.Now.
	Clock func() time.Time
}

// Limiter hands out tokens per key. It is safe for concurrent use.
type Limiter struct {
	rate    float64
	burst   float64
	maxKeys int
	now     func() time.Time
	// fill is how long an empty bucket takes to become full: a bucket idle that long is
	// dropped.
	fill time.Duration

	mu   sync.Mutex
	keys map[string]*list.Element // of *bucket
	lru  *list.List               // most recently used at the front
}

type bucket struct {
	key    string
	tokens float64
	last   time.Time
}

// New returns a Limiter for cfg.
func New(cfg Config) (*Limiter, error) {
	switch {
	case !(cfg.Rate > 0) || math.IsInf(cfg.Rate, 1):
		return nil, fmt.Errorf("ratelimit: rate %v per second: want a positive finite number", cfg.Rate)
	case cfg.Burst < 1:
		return nil, fmt.Errorf("ratelimit: burst %d: want at least 1", cfg.Burst)
	case cfg.MaxKeys < 0:
		return nil, fmt.Errorf("ratelimit: max keys %d: want 0 (the default) or more", cfg.MaxKeys)
	}
	if cfg.MaxKeys == 0 {
		cfg.MaxKeys = DefaultMaxKeys
	}
	if cfg.Clock == nil {
		cfg.Clock = time.Now
	}
	fill := time.Duration(math.MaxInt64) // a refill slower than a Duration can say: never idle
	if secs := float64(cfg.Burst) / cfg.Rate; secs < float64(math.MaxInt64/int64(time.Second)) {
		fill = time.Duration(secs * float64(time.Second))
	}
	return &Limiter{
		rate:    cfg.Rate,
		burst:   float64(cfg.Burst),
		maxKeys: cfg.MaxKeys,
		now:     cfg.Clock,
		fill:    fill,
		keys:    map[string]*list.Element{},
		lru:     list.New(),
	}, nil
}

// Allow takes one token from key's bucket. If there is none it takes nothing and
// returns false with how long until there will be one.
func (l *Limiter) Allow(key string) (ok bool, retryAfter time.Duration) {
	now := l.now()
	l.mu.Lock()
	defer l.mu.Unlock()

	b := l.touch(key, now)
	if elapsed := now.Sub(b.last); elapsed > 0 {
		b.tokens = min(l.burst, b.tokens+elapsed.Seconds()*l.rate)
		b.last = now
	}
	l.evictIdle(now)
	if b.tokens >= 1 {
		b.tokens--
		return true, 0
	}
	return false, time.Duration(math.Ceil((1 - b.tokens) / l.rate * float64(time.Second)))
}

// touch returns key's bucket, created full if there is none, as the most recently used.
func (l *Limiter) touch(key string, now time.Time) *bucket {
	if e, ok := l.keys[key]; ok {
		l.lru.MoveToFront(e)
		return e.Value.(*bucket)
	}
	if l.lru.Len() >= l.maxKeys {
		l.remove(l.lru.Back())
	}
	b := &bucket{key: key, tokens: l.burst, last: now}
	l.keys[key] = l.lru.PushFront(b)
	return b
}

// evictIdle drops buckets, least recently used first, that have been idle long enough
// to be full again. It stops at the first one that has not, so each call does work only
// for buckets that are actually dropped (amortised O(1)).
func (l *Limiter) evictIdle(now time.Time) {
	for e := l.lru.Back(); e != nil && e != l.lru.Front(); e = l.lru.Back() {
		if now.Sub(e.Value.(*bucket).last) < l.fill {
			return
		}
		l.remove(e)
	}
}

func (l *Limiter) remove(e *list.Element) {
	delete(l.keys, e.Value.(*bucket).key)
	l.lru.Remove(e)
}

// Len returns the number of buckets kept.
func (l *Limiter) Len() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.lru.Len()
}

// String describes the limit, for messages: "10 per second (burst 20)".
func (l *Limiter) String() string {
	return fmt.Sprintf("%s per second (burst %d)", strconv.FormatFloat(l.rate, 'g', -1, 64), int(l.burst))
}

// Available reports whether key's bucket has a token, without taking it, and if not
// how long until it will.
func (l *Limiter) Available(key string) (ok bool, retryAfter time.Duration) {
	now := l.now()
	l.mu.Lock()
	defer l.mu.Unlock()
	e, found := l.keys[key]
	if !found {
		return true, 0 // a new bucket is full
	}
	b := e.Value.(*bucket)
	tokens := b.tokens
	if elapsed := now.Sub(b.last); elapsed > 0 {
		tokens = min(l.burst, tokens+elapsed.Seconds()*l.rate)
	}
	if tokens >= 1 {
		return true, 0
	}
	return false, time.Duration(math.Ceil((1 - tokens) / l.rate * float64(time.Second)))
}
