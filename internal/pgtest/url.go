package pgtest

import "testing"

// NewURL returns the URL of a new, empty database of the shared cluster, dropped when t
// ends: the place of a new storage for a PostgreSQL engine (see internal/storetest).
func NewURL(t testing.TB) string {
	t.Helper()
	return NewDatabase(t).URL
}
