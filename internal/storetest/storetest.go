// Package storetest holds what the services' store tests share: opening a store for a
// test, the engines that a service's conformance suite runs over, and the running of
// the suite. A service's suite embeds Engine in a storeEngine of its own when its
// engines differ in more (a snapshot, a poisoned storage):
//
//	var boltEngine = storeEngine{Engine: storetest.File[Store]("backup.db", openBolt)}
//	var postgresEngine = storeEngine{Engine: storetest.Database[Store](pgtest.NewURL, openPostgres)}
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

// Opener returns a test's opener of the store at a place (a file's path) with open (a
// service's OpenBoltStore): as Open does, failing t on an error and closing the store
// when t ends. It is what File takes.
func Opener[P Closer](open func(at string) (P, error)) func(t testing.TB, at string) P {
	return func(t testing.TB, at string) P {
		t.Helper()
		return Open(t, func() (P, error) { return open(at) })
	}
}

// Engine opens stores of one engine for a conformance suite.
type Engine[S any] struct {
	// Open returns a new, empty store, and reopen, which closes it and opens the same
	// storage again.
	Open func(t *testing.T) (s S, reopen func(t *testing.T) S)
	// Replicas returns n stores over one new, empty storage, to use at once: what
	// several replicas of the service share. An engine with one writer per storage
	// returns one store n times.
	Replicas func(t *testing.T, n int) []S
}

// File returns the engine of a file with one writer (bbolt): each storage is the file
// name in a folder of the test's own, and its replicas are one store, shared. open
// opens a store at a path for a test, closed when the test ends.
func File[S any, P Closer](name string, open func(t testing.TB, path string) P) Engine[S] {
	fresh := func(t testing.TB) string { return filepath.Join(t.TempDir(), name) }
	return Engine[S]{Open: reopenable[S](fresh, open), Replicas: shared[S](fresh, open)}
}

// Database returns the engine of a database that several processes share: each
// storage a new database that fresh returns the URL of, and each replica a store (a
// pool) of its own over it. open opens a store at a URL for a test, closed when the
// test ends.
func Database[S any, P Closer](fresh func(t testing.TB) string, open func(t testing.TB, url string) P) Engine[S] {
	return Engine[S]{Open: reopenable[S](fresh, open), Replicas: each[S](fresh, open)}
}

// Case is one test of a conformance suite over engines of type E: its name and its
// function. (An alias of a struct type, so that a suite's table lists its cases as
// {"Name", testName}.)
type Case[E any] = struct {
	Name string
	Test func(t *testing.T, e E)
}

// Run runs each case over e, as parallel subtests.
func Run[E any](t *testing.T, e E, cases []Case[E]) {
	for _, tc := range cases {
		t.Run(tc.Name, func(t *testing.T) {
			t.Parallel()
			tc.Test(t, e)
		})
	}
}

func reopenable[S any, P Closer](fresh func(t testing.TB) string, open func(t testing.TB, at string) P) func(t *testing.T) (S, func(t *testing.T) S) {
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

func each[S any, P any](fresh func(t testing.TB) string, open func(t testing.TB, at string) P) func(t *testing.T, n int) []S {
	return func(t *testing.T, n int) []S {
		at := fresh(t)
		out := make([]S, n)
		for i := range out {
			out[i] = as[S](t, open(t, at))
		}
		return out
	}
}

func shared[S any, P any](fresh func(t testing.TB) string, open func(t testing.TB, at string) P) func(t *testing.T, n int) []S {
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
