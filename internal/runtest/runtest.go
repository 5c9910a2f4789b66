// Package runtest runs a server's Run inside a test: in a goroutine with a context of
// its own until it says it is ready, then stopped (its context ends, as on SIGTERM)
// within a bound, by the test or else when the test ends. It serves the node's tests
// and nodetest, which each wrote that start and stop.
package runtest

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"
)

// How long a run may take to be ready, and to return once its context ends.
const (
	readyWithin = 30 * time.Second
	stopWithin  = 20 * time.Second
)

// Running is a run started by Start, ready.
type Running[A any] struct {
	// Ready is what the run passed to its ready hook (its addresses).
	Ready A
	name  string
	once  sync.Once
	err   error
	stop  func() error
}

// Start runs run in a goroutine and waits until it calls ready, its hook for being
// ready (ready returns nil). When run returns first, Start returns its error; when it is
// not ready within 30 s, the test fails. A run that is started is stopped when the test
// ends, unless the test stops it first; the test fails when it then returns an error or
// does not return within 20 s. name names the run in the test's failures.
func Start[A any](t testing.TB, name string, run func(ctx context.Context, ready func(context.Context, A) error) error) (*Running[A], error) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	ready := make(chan A, 1)
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, func(_ context.Context, a A) error {
			ready <- a
			return nil
		})
	}()
	r := &Running[A]{name: name}
	select {
	case r.Ready = <-ready:
	case err := <-done:
		cancel()
		return nil, err
	case <-time.After(readyWithin):
		cancel()
		t.Fatalf("%s not ready after %v", name, readyWithin)
	}
	r.stop = func() error {
		cancel()
		select {
		case err := <-done:
			return err
		case <-time.After(stopWithin):
			return fmt.Errorf("%s did not stop within %v", name, stopWithin)
		}
	}
	t.Cleanup(func() {
		stopped := true
		r.once.Do(func() {
			stopped = false
			r.err = r.stop()
		})
		if !stopped && r.err != nil {
			t.Errorf("%s stopped with %v", name, r.err)
		}
	})
	return r, nil
}

// MustStart is Start, failing the test when run returns before it is ready.
func MustStart[A any](t testing.TB, name string, run func(ctx context.Context, ready func(context.Context, A) error) error) *Running[A] {
	t.Helper()
	r, err := Start(t, name, run)
	if err != nil {
		t.Fatalf("%s returned before it was ready: %v", name, err)
	}
	return r
}

// Stop ends the run's context and returns what run returned, or an error when it has
// not returned within 20 s. Only the first call stops it; later calls return the same.
func (r *Running[A]) Stop() error {
	r.once.Do(func() { r.err = r.stop() })
	return r.err
}

// StopChecked is Stop, failing the test (and going on) when it returns an error.
func (r *Running[A]) StopChecked(t testing.TB) {
	t.Helper()
	if err := r.Stop(); err != nil {
		t.Errorf("%s: %v", r.name, err)
	}
}
