// Package storetest holds what the services' store tests share: opening a store for a
// test, and the common parts of the engines that a service's conformance suite runs
// over (open with reopen, replicas). Each service keeps its own storeEngine type, with
// its Store interface and the fields of its own; these build the common fields:
//
//	var boltEngine = storeEngine{
//		open:     storetest.Reopen[Store](storetest.TempFile("backup.db"), openBolt),
//		replicas: storetest.Shared[Store](storetest.TempFile("backup.db"), openBolt),
//	}
//
// S is the service's Store interface, P the engine's store type (*BoltStore,
// *PostgresStore). The package imports no storage engine: where the storage is (a file
// path, a database URL) and how to open it are the caller's.
package storetest

import (
	"path/filepath"
	"testing"
)

// Closer is a store of any engine: Close ends it.
type Closer interface{ Close() error }

// Open opens a store with open, failing t on an error, and closes it when t ends.
func Open[P Closer](t testing.TB, open func() (P, error)) P {
	t.Helper()
	s, err := open()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// TempFile returns a place for a new storage of a bbolt engine: the file name in a
// folder of the test's own.
func TempFile(name string) func(t testing.TB) string {
	return func(t testing.TB) string { return filepath.Join(t.TempDir(), name) }
}

// Reopen returns an engine's open: a store over a new, empty storage (at the place
// fresh returns), and reopen, which closes that store and opens the same storage again.
// open opens a store at a place for a test, closed when the test ends.
func Reopen[S any, P Closer](fresh func(t testing.TB) string, open func(t testing.TB, at string) P) func(t *testing.T) (S, func(t *testing.T) S) {
	return func(t *testing.T) (S, func(t *testing.T) S) {
		at := fresh(t)
		s := open(t, at)
		return as[S](t, s), func(t *testing.T) S {
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
			return as[S](t, open(t, at))
		}
	}
}

// Replicas returns an engine's replicas for an engine that several processes share:
// n stores, each of its own (a pool each), over one new, empty storage.
func Replicas[S any, P any](fresh func(t testing.TB) string, open func(t testing.TB, at string) P) func(t *testing.T, n int) []S {
	return func(t *testing.T, n int) []S {
		at := fresh(t)
		out := make([]S, n)
		for i := range out {
			out[i] = as[S](t, open(t, at))
		}
		return out
	}
}

// Shared returns an engine's replicas for an engine with one writer per storage (a
// bbolt file): one store over one new, empty storage, n times.
func Shared[S any, P any](fresh func(t testing.TB) string, open func(t testing.TB, at string) P) func(t *testing.T, n int) []S {
	return func(t *testing.T, n int) []S {
		s := as[S](t, open(t, fresh(t)))
		out := make([]S, n)
		for i := range out {
			out[i] = s
		}
		return out
	}
}

// as returns the engine's store p as the service's interface S.
func as[S any, P any](t testing.TB, p P) S {
	t.Helper()
	s, ok := any(p).(S)
	if !ok {
		t.Fatalf("storetest: %T does not implement %T", p, (*S)(nil))
	}
	return s
}
