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

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"

	"github.com/umbra-e2ee/umbra/internal/boltdb"
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

// newLog returns a logger that writes to the test's log, or one that discards when quiet
// (benchmarks and load tests log a line per call otherwise).
func newLog(t testing.TB, quiet bool) *zap.Logger {
	if quiet {
		return zap.NewNop()
	}
	return zaptest.NewLogger(t)
}

// Verifier checks a closed store file: boltdb.Verify and the service's own checks.
type Verifier func(path string) (*boltdb.Report, error)

// verifyStores checks each store file in dir that a test env wrote, once closed, with
// its verifier: every record the tests stored went in sealed, every index entry points
// at its record. A file the env never created is passed over.
func verifyStores(t testing.TB, dir string, verifiers map[string]Verifier) {
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
