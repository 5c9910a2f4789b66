//go:build !unix

package e2ee

import "testing"

// reportCPUTime reports nothing where getrusage is missing: see cputime_unix_bench_test.go.
func reportCPUTime(*testing.B) func() { return func() {} }
