// Package servicetest builds, for a service's tests, the gRPC server a service runs in:
// the production interceptors, with access tokens and app keys checked by a real
// identity service, and every policy table merged and checked.
package servicetest

import (
	"errors"
	"io/fs"
	"path/filepath"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"

	"github.com/umbra-e2ee/umbra/internal/boltdb"
	"github.com/umbra-e2ee/umbra/internal/grpcserver"
	"github.com/umbra-e2ee/umbra/pkg/auth"
	"github.com/umbra-e2ee/umbra/services/identity"
)

// Config is what the server needs.
type Config struct {
	// Identity checks access tokens, app keys and revocations; its policies are
	// merged in.
	Identity *identity.Server
	// Now is the token verifier's clock.
	Now func() time.Time
	Log *zap.Logger
	// Admin and ServiceToken are the admin credential and the service token.
	Admin, ServiceToken string
}

// NewServer returns a gRPC server on a loopback address with the interceptors of
// production, whose access table merges the system's, the identity service's and
// policies, and that table. Register the services, then check the table with
// grpcserver.CheckPolicies.
func NewServer(t testing.TB, c Config, policies ...auth.Table) (*grpcserver.Server, auth.Table) {
	t.Helper()
	table, err := auth.Merge(append([]auth.Table{grpcserver.SystemPolicies(), identity.Policies()}, policies...)...)
	if err != nil {
		t.Fatal(err)
	}
	authn := auth.New(auth.Config{
		Policies:        table,
		Tokens:          auth.NewVerifier(c.Identity, c.Identity, "", c.Now),
		AppKeys:         c.Identity,
		AdminCredential: c.Admin,
		ServiceToken:    c.ServiceToken,
		// The services' tables of bad requests send many wrong credentials from one
		// address; the failure limit has tests of its own (pkg/auth).
		Failures: auth.FailureLimit{Burst: -1},
	})
	gs, err := grpcserver.New(grpcserver.Config{Addr: "127.0.0.1:0"}, authn, c.Log, nil)
	if err != nil {
		t.Fatal(err)
	}
	return gs, table
}

// Log returns a logger that writes to the test's log, or one that discards when quiet
// (benchmarks and load tests log a line per call otherwise).
func Log(t testing.TB, quiet bool) *zap.Logger {
	if quiet {
		return zap.NewNop()
	}
	return zaptest.NewLogger(t)
}

// Identity opens identity.db in dir and returns the identity service on it, with now
// for its clock; the caller closes the store.
func Identity(t testing.TB, dir string, now func() time.Time, log *zap.Logger) (*identity.Server, *identity.BoltStore) {
	t.Helper()
	store, err := identity.OpenBoltStore(filepath.Join(dir, "identity.db"))
	if err != nil {
		t.Fatal(err)
	}
	ids, err := identity.New(store, identity.Config{Clock: now}, log.Named("identity"))
	if err != nil {
		store.Close()
		t.Fatal(err)
	}
	return ids, store
}

// VerifyStores checks each store file in dir that a test env wrote, once closed, with
// its verifier (boltdb.Verify and the service's own checks): every record the tests
// stored went in sealed, every index entry points at its record. A file the env never
// created is passed over.
func VerifyStores(t testing.TB, dir string, verifiers map[string]func(path string) (*boltdb.Report, error)) {
	t.Helper()
	for name, verify := range verifiers {
		r, err := verify(filepath.Join(dir, name))
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			t.Errorf("verify %s: %v", name, err)
			continue
		}
		if err := r.Err(); err != nil {
			t.Errorf("verify %s: %v", name, err)
		}
	}
}
