package e2ee

import (
	"crypto/rand"
	"fmt"
	"testing"
)

// The epoch benchmarks create an epoch for 100 and for 1,000 members (a fresh key
// wrapped to each card with HPKE, the digest of the wraps and the signed commit) with
// either suite, on one goroutine and on GOMAXPROCS; and seal and open a 1 KiB group
// message next to a 1 KiB envelope to one recipient. The 100-member epoch is also
// what the TypeScript SDK's benchmark measures (clients/typescript/bench).
//
//	go test -run='^$' -bench='^Benchmark(NewEpoch|GroupMessage)' -count=6 ./pkg/e2ee

var benchEpochMembers = []int{100, 1000}

func BenchmarkNewEpoch(b *testing.B) {
	for _, suite := range []Suite{SuiteX25519, SuiteHybrid} {
		for _, members := range benchEpochMembers {
			for _, workers := range []int{1, 0} {
				name := fmt.Sprintf("suite=%s/members=%d/workers=%d", suite, members, workers)
				if workers == 0 {
					name = fmt.Sprintf("suite=%s/members=%d/workers=GOMAXPROCS", suite, members)
				}
				b.Run(name, func(b *testing.B) {
					signer := newMember(b, suite, alice, 1)
					cards := cardsOf(newMembers(b, members, suite))
					cpu := reportCPUTime(b)
					for b.Loop() {
						var err error
						if workers == 0 {
							_, err = NewEpoch(signer.kp, signer.card.ID, testGroup, 1, nil, testHead, cards, when)
						} else {
							_, err = newEpoch(rand.Reader, workers, signer.kp, signer.card.ID, testGroup, 1, nil, testHead, cards, when)
						}
						if err != nil {
							b.Fatal(err)
						}
					}
					cpu()
					b.ReportMetric(float64(b.Elapsed().Microseconds())/float64(b.N)/float64(members), "µs/member")
				})
			}
		}
	}
}

func BenchmarkOpenEpochKey(b *testing.B) {
	for _, suite := range []Suite{SuiteX25519, SuiteHybrid} {
		b.Run("suite="+suite.String(), func(b *testing.B) {
			signer := newMember(b, suite, alice, 1)
			e, err := NewEpoch(signer.kp, signer.card.ID, testGroup, 1, nil, testHead, []*Card{signer.card}, when)
			if err != nil {
				b.Fatal(err)
			}
			for b.Loop() {
				c, err := VerifyEpochCommit(e.Commit, testGroup, 1, signer.card)
				if err != nil {
					b.Fatal(err)
				}
				if _, err := c.OpenEpochKey(e.WrappedKeys[0], keysOf(signer)); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkGroupMessage(b *testing.B) {
	sender := newMember(b, SuiteX25519, alice, 1)
	rcpt := newMember(b, SuiteX25519, bob, 2)
	key := NewEpochKey()
	plaintext := make([]byte, benchPlaintextSize)
	keys := func(uint64) []byte { return key }
	data, err := SealGroupMessage(sender.kp, sender.card.ID, testGroup, 1, key, plaintext, when)
	if err != nil {
		b.Fatal(err)
	}
	env, err := Encrypt(sender.kp, sender.card.ID, []*Card{rcpt.card}, plaintext, when)
	if err != nil {
		b.Fatal(err)
	}
	b.Run("op=seal/impl=group", func(b *testing.B) {
		b.SetBytes(benchPlaintextSize)
		for b.Loop() {
			if _, err := SealGroupMessage(sender.kp, sender.card.ID, testGroup, 1, key, plaintext, when); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("op=seal/impl=envelope-1-x25519", func(b *testing.B) {
		b.SetBytes(benchPlaintextSize)
		for b.Loop() {
			if _, err := Encrypt(sender.kp, sender.card.ID, []*Card{rcpt.card}, plaintext, when); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("op=open/impl=group", func(b *testing.B) {
		b.SetBytes(benchPlaintextSize)
		for b.Loop() {
			if _, err := OpenGroupMessage(data, testGroup, keys, sender.card); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("op=open/impl=envelope-1-x25519", func(b *testing.B) {
		b.SetBytes(benchPlaintextSize)
		for b.Loop() {
			if _, err := Decrypt(env, keysOf(rcpt), sender.card); err != nil {
				b.Fatal(err)
			}
		}
	})
}
