// Package identitytest starts a real identity service in another service's test env
// (servicetest.Env), for the apps, users and access tokens that every service's tests
// need. It is apart from servicetest because it imports the identity service, whose
// own tests use servicetest.
package identitytest

import (
	"testing"

	"github.com/umbra-e2ee/umbra/internal/servicetest"
	"github.com/umbra-e2ee/umbra/services/identity"
)

// Start opens identity.db in e's folder and returns the identity service on it, with
// e's clock; e closes the store and verifies it when it stops. The caller registers
// the service (and serves identity.Policies()) with the others.
func Start(t testing.TB, e *servicetest.Env) *identity.Server {
	t.Helper()
	store := servicetest.OpenFile(t, e, "identity.db", identity.OpenBoltStore, identity.Verify)
	ids, err := identity.New(store, identity.Config{Clock: e.Clock.Now}, e.Log.Named("identity"))
	if err != nil {
		t.Fatal(err)
	}
	return ids
}
