package sdk

import "testing"

// SetTraceSecret shows f every secret value a backup or restore computes, until the
// test ends.
func SetTraceSecret(t testing.TB, f func(name string, value []byte)) {
	traceSecret = f
	t.Cleanup(func() { traceSecret = nil })
}
