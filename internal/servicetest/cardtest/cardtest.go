// Package cardtest starts a real card service in another service's test env
// (servicetest.Env), for the users' cards that the group and messaging services check.
// As identitytest, it is apart from servicetest because it imports a service.
package cardtest

import (
	"testing"

	"github.com/umbra-e2ee/umbra/internal/servicetest"
	"github.com/umbra-e2ee/umbra/services/card"
)

// Start opens card.db in e's folder and returns the card service on it with cfg, on
// e's clock; e closes the store and verifies it when it stops. The caller registers
// the service (and serves card.Policies()) with the others.
func Start(t testing.TB, e *servicetest.Env, cfg card.Config) *card.Server {
	t.Helper()
	store := servicetest.OpenFile(t, e, "card.db", card.OpenBoltStore, card.Verify)
	cfg.Clock = e.Clock.Now
	cards, err := card.New(store, cfg, e.Log.Named("card"))
	if err != nil {
		t.Fatal(err)
	}
	return cards
}
