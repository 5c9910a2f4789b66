package e2ee

import (
	"crypto/hpke"
	"crypto/mlkem"
	"testing"
)

// The key-wrap benchmarks take apart what a suite costs in an envelope: the content key
// wrapped with HPKE to one card (wrap: one encapsulation, the key schedule, one AEAD
// seal) and opened by the card's key (unwrap: one decapsulation, the key schedule, one
// AEAD open); and ML-KEM-768 alone (crypto/mlkem), the hybrid KEM's costlier half. The
// TypeScript SDK's benchmark measures the same operations of its own next to these
// (clients/typescript/bench), to say where its envelopes spend their time.
//
//	go test -run='^$' -bench='^Benchmark(KeyWrap|MLKEM768)$' ./pkg/e2ee

func BenchmarkKeyWrap(b *testing.B) {
	for _, suite := range []Suite{SuiteX25519, SuiteHybrid} {
		sender, r := newMember(b, suite, alice, 1), newMember(b, suite, bob, 2)
		info := keyWrapInfo(sender.card.ID, r.card.ID)
		key := make([]byte, 32)
		b.Run("suite="+suite.String()+"/op=wrap", func(b *testing.B) {
			cpu := reportCPUTime(b)
			for b.Loop() {
				if _, _, err := wrapKey("content key", key, r.card, info); err != nil {
					b.Fatal(err)
				}
			}
			cpu()
		})
		enc, wrapped, err := wrapKey("content key", key, r.card, info)
		if err != nil {
			b.Fatal(err)
		}
		b.Run("suite="+suite.String()+"/op=unwrap", func(b *testing.B) {
			cpu := reportCPUTime(b)
			for b.Loop() {
				rcpt, err := hpke.NewRecipient(enc, r.kp.KEM, hpkeKDF(), hpkeAEAD(), info)
				if err != nil {
					b.Fatal(err)
				}
				if _, err := rcpt.Open(nil, wrapped); err != nil {
					b.Fatal(err)
				}
			}
			cpu()
		})
	}
}

func BenchmarkMLKEM768(b *testing.B) {
	dk, err := mlkem.GenerateKey768()
	if err != nil {
		b.Fatal(err)
	}
	ek := dk.EncapsulationKey()
	b.Run("op=encapsulate", func(b *testing.B) {
		cpu := reportCPUTime(b)
		for b.Loop() {
			ek.Encapsulate()
		}
		cpu()
	})
	_, ct := ek.Encapsulate()
	b.Run("op=decapsulate", func(b *testing.B) {
		cpu := reportCPUTime(b)
		for b.Loop() {
			if _, err := dk.Decapsulate(ct); err != nil {
				b.Fatal(err)
			}
		}
		cpu()
	})
}
