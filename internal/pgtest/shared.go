// The shared cluster of a test binary, and the databases and clusters a test asks for.

package pgtest

import (
	"errors"
	"os"
	"sync"
	"testing"
)

// The shared cluster of a test binary, started by the first test that needs it.
var shared struct {
	once    sync.Once
	cluster *Cluster
	err     error
}

// Main runs the tests of a package, then stops the shared cluster if one started.
func Main(m *testing.M) {
	code := m.Run()
	if shared.cluster != nil {
		shared.cluster.Close()
	}
	os.Exit(code)
}

// Unavailable skips t, or fails it when UMBRA_TEST_POSTGRES=require, when err is
// ErrNoBinaries; any other error fails t.
func Unavailable(t testing.TB, err error) {
	t.Helper()
	switch {
	case !errors.Is(err, ErrNoBinaries):
		t.Fatal(err)
	case os.Getenv(RequireEnv) == "require":
		t.Fatalf("%v (%s=require: PostgreSQL tests may not be skipped)", err, RequireEnv)
	default:
		t.Skipf("%v (set %s=require to fail instead)", err, RequireEnv)
	}
}

// Shared returns the test binary's cluster, starting it on first use. The package's
// TestMain must call Main, which stops it.
func Shared(t testing.TB) *Cluster {
	t.Helper()
	shared.once.Do(func() { shared.cluster, shared.err = Start(Options{}) })
	if shared.err != nil {
		Unavailable(t, shared.err)
	}
	return shared.cluster
}

// NewDatabase returns a new, empty database of the shared cluster, dropped when t ends.
func NewDatabase(t testing.TB) *Database {
	t.Helper()
	c := Shared(t)
	db, err := c.CreateDatabase()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Exec("postgres", "DROP DATABASE IF EXISTS "+db.Name+" WITH (FORCE)") })
	return db
}

// NewCluster starts a cluster of t's own (to stop, kill or restart), closed when t ends.
func NewCluster(t testing.TB, opts Options) *Cluster {
	t.Helper()
	c, err := Start(opts)
	if err != nil {
		Unavailable(t, err)
	}
	t.Cleanup(c.Close)
	return c
}
