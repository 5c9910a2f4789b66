// Package servicetest is what the services' tests share: a test env that runs a
// service in the gRPC server of production (its interceptors, with access tokens and
// app keys checked by a real identity service, and every policy table merged and
// checked) on a loopback listener, optionally behind the REST gateway; the client
// helpers that make apps and users; and the checks every service's tests make (a
// status code, a store left untouched, a store sound once closed).
//
// It imports no service, so that the identity service's own tests can use it;
// identitytest starts the identity service in another service's env.
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
)

// The credentials of a test env: the admin credential and the service token.
const (
	Admin        = "test-admin-credential-0123456789"
	ServiceToken = "test-service-token-0123456789"
)

// Identity is what the server needs of the identity service: the keys that access
// tokens are checked against, their revocations, and the apps' API keys.
type Identity interface {
	auth.KeySet
	auth.RevocationChecker
	auth.AppKeyVerifier
}

// Config is what the server needs.
type Config struct {
	// Identity checks access tokens, app keys and revocations.
	Identity Identity
	// Now is the token verifier's clock.
	Now func() time.Time
	Log *zap.Logger
	// Admin and ServiceToken are the admin credential and the service token.
	Admin, ServiceToken string
}

// NewServer returns a gRPC server on a loopback address with the interceptors of
// production, whose access table merges the system's and policies (the identity
// service's among them when it is served), and that table. Register the services,
// then check the table with grpcserver.CheckPolicies.
func NewServer(t testing.TB, c Config, policies ...auth.Table) (*grpcserver.Server, auth.Table) {
	t.Helper()
	table, err := auth.Merge(append([]auth.Table{grpcserver.SystemPolicies()}, policies...)...)
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

// Verifier checks a closed store file: boltdb.Verify and the service's own checks.
type Verifier func(path string) (*boltdb.Report, error)

// VerifyStores checks each store file in dir that a test env wrote, once closed, with
// its verifier: every record the tests stored went in sealed, every index entry points
// at its record. A file the env never created is passed over.
func VerifyStores(t testing.TB, dir string, verifiers map[string]Verifier) {
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
