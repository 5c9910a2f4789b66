package messaging

import (
	"fmt"
	"testing"
)

// The users most tests start from.

// aliceAndBob makes two users of a new app, alice and bob.
func (e *env) aliceAndBob(t testing.TB) (alice, bob user) {
	t.Helper()
	us := e.newUsers(t, e.newApp(t), "alice", "bob")
	return us[0], us[1]
}

// hubAndSenders makes n+1 users of a for a load test: the hub, and n senders.
func (e *env) hubAndSenders(t testing.TB, a app, n int) (user, []user) {
	t.Helper()
	uids := []string{"hub"}
	for i := range n {
		uids = append(uids, fmt.Sprint("sender", i))
	}
	us := e.newUsers(t, a, uids...)
	return us[0], us[1:]
}
