package kt

import (
	"encoding/binary"
	"fmt"
	"sync"
	"testing"

	"google.golang.org/protobuf/proto"

	ktv1 "github.com/umbra-e2ee/umbra/proto/umbra/kt/v1"
)

// benchIdentities is the size of the directory the lookup benchmarks prove against:
// every identity has published one card, so the log has as many entries.
const benchIdentities = 1_000_000

func benchIdentity(i int) string { return fmt.Sprintf("u_%032d", i) }

var (
	bigOnce sync.Once
	big     *Memory
	bigCP   *Checkpoint
	bigErr  error
)

// bigDirectory builds, once per process, the log and map of 1,000,000 identities in
// memory, in batches of 100,000 entries (about 20 s here).
func bigDirectory(b *testing.B) (*Memory, *Checkpoint) {
	b.Helper()
	bigOnce.Do(func() {
		big = NewMemory()
		const batch = 100_000
		for start := 0; start < benchIdentities; start += batch {
			leaves := make([][]byte, batch)
			for i := range leaves {
				key := MapKey("app_bench", benchIdentity(start+i))
				card := binary.BigEndian.AppendUint64(make([]byte, 24), uint64(start+i))
				if leaves[i], bigErr = EncodeLeaf(&ktv1.LogLeaf{Version: Version, MapKey: key[:], Kind: ktv1.LogEventKind_LOG_EVENT_KIND_PUBLICATION,
					CardId: card, OccurredAtUnixNanos: 1_796_000_000_000_000_000 + int64(start+i)}); bigErr != nil {
					return
				}
			}
			if bigCP, bigErr = big.Append("bench", leaves...); bigErr != nil {
				return
			}
		}
	})
	if bigErr != nil {
		b.Fatal(bigErr)
	}
	return big, bigCP
}

// BenchmarkLookupProof measures, with 1,000,000 identities in the map and the log, a
// lookup proof per identity: its size on the wire (the LookupProof message: map value
// and proof, log entry and inclusion proof), the server's work to make it in memory,
// and the client's verification (VerifyLookup: map proof, entry checks, inclusion).
func BenchmarkLookupProof(b *testing.B) {
	m, cp := bigDirectory(b)
	const sample = 1024
	proofs := make([]*ktv1.LookupProof, sample)
	size, siblings := 0, 0
	for i := range proofs {
		p, err := m.Prove("app_bench", benchIdentity(i*977))
		if err != nil {
			b.Fatal(err)
		}
		proofs[i] = p
		size += proto.Size(p)
		siblings += len(p.GetMapProof().GetSiblingHashes()) / HashSize
	}
	b.Run("prove", func(b *testing.B) {
		i := 0
		for b.Loop() {
			if _, err := m.Prove("app_bench", benchIdentity(i%benchIdentities)); err != nil {
				b.Fatal(err)
			}
			i += 7919
		}
	})
	b.Run("verify", func(b *testing.B) {
		i := 0
		for b.Loop() {
			p := proofs[i%sample]
			if _, err := VerifyLookup(cp, "app_bench", p.GetIdentity(), p); err != nil {
				b.Fatal(err)
			}
			i++
		}
		b.ReportMetric(float64(size)/sample, "proof-bytes")
		b.ReportMetric(float64(siblings)/sample, "map-siblings")
	})
}
