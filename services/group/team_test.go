// The group most tests start from: an app, its users, and the group "team" of some of them.

package group

import "testing"

// newTeam makes an app with users of names, and creates the group "team" owned by
// the first of them, with the next members-1 as its other members (the rest are not
// in it).
func (e *env) newTeam(t testing.TB, members int, names ...string) (app, string, []*user) {
	t.Helper()
	a := e.newApp(t)
	us := e.newUsers(t, a, true, names...)
	group := e.groupID(t, a, "team")
	e.create(t, us[0], group, us[1:members]...)
	return a, group, us
}
