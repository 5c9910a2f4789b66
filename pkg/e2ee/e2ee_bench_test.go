package e2ee

import (
	"bytes"
	"fmt"
	"io"
	"testing"

	"filippo.io/age"
)

// The envelope benchmarks encrypt (and sign) and decrypt (and verify) 1 KiB to 1, 10
// and 100 recipients with both suites, next to filippo.io/age encrypting the same
// plaintext to as many X25519 recipients (and, for the hybrid suite, as many age
// ML-KEM-768+X25519 recipients) in the same run. Decryption is measured as the first
// recipient of the list and as the last: age tries the stanzas in order (one X25519
// per stanza until one opens), an Umbra envelope is searched by card id (one
// decapsulation).
//
//	go test -run='^$' -bench='^Benchmark(Encrypt|Decrypt)$' -count=6 ./pkg/e2ee > bench.txt
//	benchstat -col /impl bench.txt

var benchRecipientCounts = []int{1, 10, 100}

const benchPlaintextSize = 1024

// benchImpl is one way of encrypting to n recipients and decrypting as one of them.
type benchImpl struct {
	name  string
	setup func(b *testing.B, n int) (encrypt func() []byte, decrypt func(data []byte, recipient int) []byte)
}

func benchImpls() []benchImpl {
	umbra := func(suite Suite) func(b *testing.B, n int) (func() []byte, func([]byte, int) []byte) {
		return func(b *testing.B, n int) (func() []byte, func([]byte, int) []byte) {
			sender := newMember(b, suite, alice, 1)
			rcpts := newMembers(b, n, suite)
			cards := cardsOf(rcpts)
			plaintext := make([]byte, benchPlaintextSize)
			enc := func() []byte {
				data, err := Encrypt(sender.kp, sender.card.ID, cards, plaintext, when)
				if err != nil {
					b.Fatal(err)
				}
				return data
			}
			dec := func(data []byte, i int) []byte {
				pt, err := Decrypt(data, keysOf(rcpts[i]), sender.card)
				if err != nil {
					b.Fatal(err)
				}
				return pt
			}
			return enc, dec
		}
	}
	ageImpl := func(hybrid bool) func(b *testing.B, n int) (func() []byte, func([]byte, int) []byte) {
		return func(b *testing.B, n int) (func() []byte, func([]byte, int) []byte) {
			identities := make([]age.Identity, n)
			recipients := make([]age.Recipient, n)
			for i := range n {
				if hybrid {
					id, err := age.GenerateHybridIdentity()
					if err != nil {
						b.Fatal(err)
					}
					identities[i], recipients[i] = id, id.Recipient()
				} else {
					id, err := age.GenerateX25519Identity()
					if err != nil {
						b.Fatal(err)
					}
					identities[i], recipients[i] = id, id.Recipient()
				}
			}
			plaintext := make([]byte, benchPlaintextSize)
			enc := func() []byte {
				var out bytes.Buffer
				w, err := age.Encrypt(&out, recipients...)
				if err != nil {
					b.Fatal(err)
				}
				if _, err := w.Write(plaintext); err != nil {
					b.Fatal(err)
				}
				if err := w.Close(); err != nil {
					b.Fatal(err)
				}
				return out.Bytes()
			}
			dec := func(data []byte, i int) []byte {
				r, err := age.Decrypt(bytes.NewReader(data), identities[i])
				if err != nil {
					b.Fatal(err)
				}
				pt, err := io.ReadAll(r)
				if err != nil {
					b.Fatal(err)
				}
				return pt
			}
			return enc, dec
		}
	}
	return []benchImpl{
		{"umbra-x25519", umbra(SuiteX25519)},
		{"age-x25519", ageImpl(false)},
		{"umbra-hybrid", umbra(SuiteHybrid)},
		{"age-hybrid", ageImpl(true)},
	}
}

func BenchmarkEncrypt(b *testing.B) {
	for _, n := range benchRecipientCounts {
		for _, impl := range benchImpls() {
			b.Run(fmt.Sprintf("recipients=%d/impl=%s", n, impl.name), func(b *testing.B) {
				enc, _ := impl.setup(b, n)
				b.SetBytes(benchPlaintextSize)
				b.ReportAllocs()
				var size int
				cpu := reportCPUTime(b)
				for b.Loop() {
					size = len(enc())
				}
				cpu()
				b.ReportMetric(float64(size), "out-bytes")
			})
		}
	}
}

func BenchmarkDecrypt(b *testing.B) {
	for _, n := range benchRecipientCounts {
		for _, impl := range benchImpls() {
			positions := []string{"first", "last"}
			if n == 1 {
				positions = positions[:1]
			}
			for _, pos := range positions {
				b.Run(fmt.Sprintf("recipients=%d/as=%s/impl=%s", n, pos, impl.name), func(b *testing.B) {
					enc, dec := impl.setup(b, n)
					data := enc()
					i := 0
					if pos == "last" {
						i = n - 1
					}
					if got := dec(data, i); len(got) != benchPlaintextSize {
						b.Fatalf("decrypted %d bytes", len(got))
					}
					b.SetBytes(benchPlaintextSize)
					b.ReportAllocs()
					cpu := reportCPUTime(b)
					for b.Loop() {
						dec(data, i)
					}
					cpu()
				})
			}
		}
	}
}
