//go:build unix

package e2ee

import (
	"syscall"
	"testing"
	"time"
)

// reportCPUTime starts counting the process's CPU time (user and system, every thread:
// the garbage collector's too) and returns the function that, called after the
// benchmark's loop, reports it per operation as cpu-ns/op. On a machine shared with
// other work, wall time per operation grows with the load and CPU time much less:
// the TypeScript SDK's benchmark (clients/typescript/bench) compares both.
func reportCPUTime(b *testing.B) func() {
	start := processCPUTime(b)
	return func() {
		b.ReportMetric(float64(processCPUTime(b)-start)/float64(b.N), "cpu-ns/op")
	}
}

func processCPUTime(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
