package backup

import (
	"crypto/rand"
	"fmt"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/cloudflare/circl/oprf"

	backupv1 "github.com/umbra-e2ee/umbra/proto/umbra/backup/v1"
)

// BenchmarkEvaluate measures the service's OPRF evaluations per second, in parallel
// on every core (evals/s is the figure to read):
//
//   - baseline: one ristretto255 scalar multiplication, the floor of any evaluation;
//   - oprf-circl: circl's oprf.VerifiableServer.Evaluate, for comparison;
//   - oprf: the service's evaluation and its DLEQ proof with a cached key;
//   - oprf-derive: the same with the key derived for every call (no cache);
//   - rpc-backup: Evaluate(BACKUP) over loopback gRPC with token checks, a bbolt read
//     and a cached key;
//   - rpc-restore: Evaluate(RESTORE), which also spends an attempt: a bbolt write,
//     fsync'd, per call.
//
// go test -run x -bench Evaluate -benchtime 2s ./services/backup/
func BenchmarkEvaluate(b *testing.B) {
	g := suite.Group()
	element := g.HashToElement([]byte("benchmark input"), []byte("benchmark"))
	blindedBytes, err := element.MarshalBinaryCompress()
	if err != nil {
		b.Fatal(err)
	}
	b.Run("baseline", func(b *testing.B) {
		k := g.RandomScalar(rand.Reader)
		evalsInParallel(b, func() func() error {
			out := g.NewElement()
			return func() error {
				out.Mul(element, k)
				return nil
			}
		})
	})
	b.Run("oprf-circl", func(b *testing.B) {
		priv, err := derivePrivate([]byte(testSecret), keyRef{app: "app_a", identity: "u_b", slot: 1, version: 1})
		if err != nil {
			b.Fatal(err)
		}
		priv.Public() // cached inside priv before the goroutines share it
		server := oprf.NewVerifiableServer(suite, priv)
		req := &oprf.EvaluationRequest{Elements: []oprf.Blinded{element}}
		evalsInParallel(b, func() func() error {
			return func() error {
				ev, err := server.Evaluate(req)
				if err != nil {
					return err
				}
				_, err = ev.Proof.MarshalBinary()
				return err
			}
		})
	})
	for _, cache := range []int{DefaultKeyCacheSize, -1} {
		name := "oprf"
		if cache < 0 {
			name = "oprf-derive"
		}
		b.Run(name, func(b *testing.B) {
			keys := newKeyDeriver([]byte(testSecret), cache)
			ref := keyRef{app: "app_aaaaaaaaaaaaaaaaaaaaaaaaaa", identity: "u_aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", slot: 1, version: 1}
			evalsInParallel(b, func() func() error {
				return func() error {
					k, err := keys.key(ref)
					if err != nil {
						return err
					}
					_, _, err = k.evaluate(element)
					return err
				}
			})
		})
	}
	for _, purpose := range []backupv1.EvaluationPurpose{forBackup, forRestore} {
		name := "rpc-backup"
		if purpose == forRestore {
			name = "rpc-restore"
		}
		b.Run(name, func(b *testing.B) {
			e := newEnv(b, envOptions{quiet: true, cfg: Config{EvaluateRate: 1e9, EvaluateBurst: 1 << 30, MaxAttempts: MaxMaxAttempts}})
			a := e.newApp(b)
			// Enough identities that none runs out of attempts (each has 1,000).
			users := make([]user, 64)
			for i := range users {
				users[i] = e.newUser(b, a, fmt.Sprintf("user %d", i))
				if purpose == forRestore {
					e.mustBackUp(b, users[i], password, "pw", 0)
				}
			}
			var next atomic.Uint64
			b.ResetTimer()
			evalsInParallel(b, func() func() error {
				return func() error {
					u := users[next.Add(1)%uint64(len(users))]
					_, err := e.client.Evaluate(u.ctx(), &backupv1.EvaluateRequest{Slot: password, Purpose: purpose, BlindedElement: blindedBytes})
					return err
				}
			})
		})
	}
}

// evalsInParallel runs b.N evaluations on every core, each goroutine calling the
// evaluation newEval gives it (with the goroutine's own state, if any) and stopping at
// its first error, and reports their rate (reportRate).
func evalsInParallel(b *testing.B, newEval func() func() error) {
	cpu := cpuTime()
	b.RunParallel(func(pb *testing.PB) {
		eval := newEval()
		for pb.Next() {
			if err := eval(); err != nil {
				b.Error(err)
				return
			}
		}
	})
	reportRate(b, cpu)
}

// reportRate reports evaluations per second of wall time, and per second of the
// process's CPU time since cpuStart: on a machine shared with other work the second
// figure, times the number of cores, is what the cores would do on their own.
func reportRate(b *testing.B, cpuStart time.Duration) {
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "evals/s")
	if used := cpuTime() - cpuStart; used > 0 {
		b.ReportMetric(float64(b.N)/used.Seconds(), "evals/cpu-s")
	}
}

// cpuTime is the user and system CPU time of the process so far.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
