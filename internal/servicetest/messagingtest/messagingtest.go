// Package messagingtest starts a real messaging service in another service's test env
// (servicetest.Env), for the event streams that the backup and group services write
// to. As identitytest, it is apart from servicetest because it imports a service.
package messagingtest

import (
	"testing"

	"github.com/umbra-e2ee/umbra/internal/servicetest"
	"github.com/umbra-e2ee/umbra/services/messaging"
)

// Start opens messaging.db in e's folder and returns the messaging service on it with
// its peers cards and groups (nil when the test sends no messages) and cfg, on e's
// clock; e closes the store and verifies it when it stops. The caller registers the
// service (and serves messaging.Policies()) with the others, and runs its loops.
func Start(t testing.TB, e *servicetest.Env, cards messaging.Cards, groups messaging.Groups, cfg messaging.Config) *messaging.Server {
	t.Helper()
	store := servicetest.OpenFile(t, e, "messaging.db", openBolt, messaging.Verify)
	cfg.Clock = e.Clock.Now
	msg, err := messaging.New(store, cards, groups, cfg, e.Log.Named("messaging"))
	if err != nil {
		t.Fatal(err)
	}
	return msg
}

// openBolt opens the bbolt store at path with the default options.
func openBolt(path string) (*messaging.BoltStore, error) {
	return messaging.OpenBoltStore(path, messaging.StoreOptions{})
}
