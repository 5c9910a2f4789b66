package messaging

import (
	"testing"
	"time"

	"github.com/umbra-e2ee/umbra/internal/pgtest"
)

// TestPostgresWatchFrozenServer: a listening connection to a server that stopped
// answering without closing it (a host frozen or cut off: no reset, no reply; the old
// primary after a failover) is found dead by a ping after a quiet poll, and Watch
// listens again on a new connection. Without the ping it would wait on the dead one
// for as long as TCP keepalive takes (minutes), and learn of the other replicas'
// messages only by polling. A server that answers keeps its connection.
func TestPostgresWatchFrozenServer(t *testing.T) {
	c := pgtest.NewCluster(t, pgtest.Options{})
	db, err := c.CreateDatabase()
	if err != nil {
		t.Fatal(err)
	}
	const poll = 200 * time.Millisecond
	s := openPostgresPoll(t, db.URL, poll)
	watcher(t, s, cfID(2))
	waitListening(t, s, 1)
	time.Sleep(10 * poll) // quiet polls, each with a ping answered
	if n := s.listening.Load(); n != 1 {
		t.Fatalf("Watch listened %d times on a server that answers; want once", n)
	}
	c.Freeze()
	time.Sleep(poll + listenPing + time.Second)
	c.Thaw()
	waitListening(t, s, 2)
}
