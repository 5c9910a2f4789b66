package card

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/umbra-e2ee/umbra/internal/boltdb"
	"github.com/umbra-e2ee/umbra/pkg/e2ee"
	cardv1 "github.com/umbra-e2ee/umbra/proto/umbra/card/v1"
	cardstoragev1 "github.com/umbra-e2ee/umbra/proto/umbra/storage/card/v1"
)

// benchEvents appends n publication events of new identities of app to the card
// event feed, in one transaction, as the card store's Publish writes them (the cards
// themselves are not stored: the log reads only the feed). next numbers the
// identities.
func benchEvents(b *testing.B, s *BoltStore, app string, next *uint64, n int) {
	b.Helper()
	at := timestamppb.New(time.Date(2026, 12, 6, 12, 0, 0, 0, time.UTC))
	err := s.DB().Update(func(tx *bolt.Tx) error {
		events := tx.Bucket(bucketEvents)
		for range n {
			*next++
			id := "u_" + b32.EncodeToString(binary.BigEndian.AppendUint64(make([]byte, 12), *next))
			card := sha256.Sum256([]byte(id))
			seq, err := events.NextSequence()
			if err != nil {
				return err
			}
			if err := boltdb.PutProto(events, boltdb.U64(seq), &cardstoragev1.CardEventRecord{
				Sequence: seq, AppId: app, Identity: id, CardId: card[:],
				Kind: cardstoragev1.CardEventRecordKind_CARD_EVENT_RECORD_KIND_PUBLISHED, OccurredAt: at,
			}); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		b.Fatal(err)
	}
}

// ktBytes is the bytes (keys and values) in the key transparency buckets, and in the
// buckets of cards and their events.
func ktBytes(b *testing.B, s *BoltStore) (kt, cards int) {
	b.Helper()
	err := s.DB().View(func(tx *bolt.Tx) error {
		for _, name := range [][]byte{bucketKTLeaves, bucketKTLogTiles, bucketKTMapTiles, bucketKTMapValues, bucketKTCheckpoints, bucketKTLogKey} {
			_ = tx.Bucket(name).ForEach(func(k, v []byte) error { kt += len(k) + len(v); return nil })
		}
		_ = tx.Bucket(bucketEvents).ForEach(func(k, v []byte) error { cards += len(k) + len(v); return nil })
		return nil
	})
	if err != nil {
		b.Fatal(err)
	}
	return kt, cards
}

// appendBatch is how many card events BenchmarkAppendLog appends at once.
const appendBatch = 10_000

// benchLog returns a service over store whose log holds ten batches of events, written
// by events, with their checkpoint, and how many events it holds.
func benchLog(b *testing.B, store Store, events func(b *testing.B, next *uint64, n int)) (*Server, uint64) {
	b.Helper()
	srv, err := New(store, Config{}, nil)
	if err != nil {
		b.Fatal(err)
	}
	var next uint64
	for range 10 {
		events(b, &next, appendBatch)
	}
	if _, err := srv.PublishCheckpoint(context.Background()); err != nil {
		b.Fatal(err)
	}
	return srv, next
}

// benchAppend is BenchmarkAppendLog's append-and-checkpoint: in each round, a batch of
// events written by events (not timed), then appended to srv's log with their
// checkpoint; next counts the events.
func benchAppend(b *testing.B, srv *Server, events func(b *testing.B, next *uint64, n int), next *uint64) {
	for b.Loop() {
		b.StopTimer()
		events(b, next, appendBatch)
		b.StartTimer()
		cp, err := srv.PublishCheckpoint(context.Background())
		if err != nil || cp.GetSize() != *next {
			b.Fatalf("checkpoint of %d entries, want %d: %v", cp.GetSize(), *next, err)
		}
	}
}

// BenchmarkAppendLog measures appending 10,000 card events to the key transparency log
// and publishing their checkpoint (one transaction: the entries, the log's nodes, the
// map's nodes and values, the signed checkpoint, and the fsync of the commit), on a
// log that already holds 100,000 entries and grows by 10,000 each iteration. The
// baseline, in the same run, is writing the same 10,000 events to the card event feed
// in one transaction: what the card store itself writes for them. It reports the
// bytes the key transparency buckets hold per entry, next to the bytes of the events
// themselves, and the file's growth per entry.
func BenchmarkAppendLog(b *testing.B) {
	dir := b.TempDir()
	path := filepath.Join(dir, "card.db")
	store, err := OpenBoltStore(path)
	if err != nil {
		b.Fatal(err)
	}
	defer store.Close()
	events := func(b *testing.B, next *uint64, n int) { benchEvents(b, store, "app_bench", next, n) }
	srv, next := benchLog(b, store, events)
	b.Run("feed-baseline", func(b *testing.B) {
		// Its own file, so that the log's file is not grown by it.
		base, err := OpenBoltStore(filepath.Join(b.TempDir(), "card.db"))
		if err != nil {
			b.Fatal(err)
		}
		defer base.Close()
		var n uint64
		for b.Loop() {
			benchEvents(b, base, "app_bench", &n, appendBatch)
		}
	})
	b.Run("append-and-checkpoint", func(b *testing.B) {
		before, _ := os.Stat(path)
		entriesBefore := next
		benchAppend(b, srv, events, &next)
		after, _ := os.Stat(path)
		ktb, evb := ktBytes(b, store)
		b.ReportMetric(float64(ktb)/float64(next), "kt-bytes/entry")
		b.ReportMetric(float64(evb)/float64(next), "event-bytes/entry")
		b.ReportMetric(float64(after.Size()-before.Size())/float64(next-entriesBefore), "file-bytes/entry")
	})
}

// bigLogIdentities is the number of identities in the log and map of
// BenchmarkSearchCardsWithProofs: the 1,000,000.
const bigLogIdentities = 1_000_000

// bigLog is a data folder (card.db and the identity service's store) whose key
// transparency log and map hold bigLogIdentities identities: benchIdentities of app
// "bench" with real cards published over gRPC, the others events of another app.
type bigLog struct {
	Dir   string   `json:"-"`
	AppID string   `json:"app_id"`
	Key   string   `json:"app_key"`
	IDs   []string `json:"identities"`
	// Built is how long building it took.
	Built time.Duration `json:"built_ns"`
}

var (
	bigLogOnce sync.Once
	bigLogDir  *bigLog
	bigLogErr  error
)

// openBigLog returns the folder of bigLogIdentities identities. Building it takes a few
// minutes (publishing 1,000 cards, writing 999,000 events, appending 1,000,000 log
// entries in checkpoints of 10,000), so it is built once and kept, like a build
// cache, in $TMPDIR/umbra-bench-kt-1000000-v1 (about 1.5 GB; delete it to rebuild or
// to reclaim the space): later sub-benchmarks, -count runs and benchmark binaries open
// it again. The file "built.json" is written last: a folder without it is rebuilt.
func openBigLog(b *testing.B) *bigLog {
	b.Helper()
	bigLogOnce.Do(func() {
		dir := filepath.Join(os.TempDir(), fmt.Sprintf("umbra-bench-kt-%d-v1", bigLogIdentities))
		marker := filepath.Join(dir, "built.json")
		if raw, err := os.ReadFile(marker); err == nil {
			l := &bigLog{Dir: dir}
			if bigLogErr = json.Unmarshal(raw, l); bigLogErr == nil {
				bigLogDir = l
			}
			return
		}
		if bigLogErr = os.RemoveAll(dir); bigLogErr != nil {
			return
		}
		if bigLogErr = os.MkdirAll(dir, 0o700); bigLogErr != nil {
			return
		}
		// If building fails (b.Fatal), later calls fail too.
		bigLogErr = errors.New("building the log of the benchmark failed")
		start := time.Now()
		e := newEnv(b, envOptions{dir: dir, quiet: true})
		a := e.newApp(b, "bench")
		ids := benchPublish(b, e, a, e2ee.SuiteX25519)
		var next uint64
		for left := bigLogIdentities - benchIdentities; left > 0; left -= 10_000 {
			benchEvents(b, e.store, "app_other", &next, min(left, 10_000))
		}
		cp, err := e.srv.PublishCheckpoint(context.Background())
		if err != nil || cp.GetSize() != bigLogIdentities {
			b.Fatalf("checkpoint of %d entries, want %d: %v", cp.GetSize(), bigLogIdentities, err)
		}
		// Its servers and files closed before the folder is opened again.
		e.stop()
		l := &bigLog{Dir: dir, AppID: a.id, Key: a.key, IDs: ids, Built: time.Since(start)}
		raw, err := json.Marshal(l)
		if err == nil {
			err = os.WriteFile(marker, raw, 0o600)
		}
		if err != nil {
			b.Fatal(err)
		}
		bigLogDir, bigLogErr = l, nil
		b.Logf("built the log of %d identities in %s", bigLogIdentities, l.Built.Round(time.Second))
	})
	if bigLogErr != nil {
		b.Fatal(bigLogErr)
	}
	return bigLogDir
}

// cpuTime is the process's user and system CPU time so far.
func cpuTime(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkSearchCardsWithProofs is the lookup benchmark: with 1,000,000
// identities in the log and the map (openBigLog), 1,000 identities looked up in one
// call:
//
//   - grpc: SearchCards, the lookup without proofs, over loopback gRPC through the
//     production interceptors: the baseline, in the same run;
//   - grpc-proofs: SearchCardsWithProofs of the same identities, one call after
//     another; it reports the bytes on the wire per identity and the process's CPU
//     time per identity (server and client: both are this process);
//   - grpc-proofs-new-checkpoint: the same, each call at a checkpoint no lookup was
//     made at before (the trees' top tiles are read from card.db again, as after each
//     new checkpoint of a busy service);
//   - grpc-proofs-parallel: from several clients at once (GOMAXPROCS goroutines);
//   - store-proofs: Store.ProvedCards alone, without gRPC;
//   - server-encode and client-decode: proto.Marshal and proto.Unmarshal of the
//     answer alone.
//
// Each reports identities/s; the goal for grpc-proofs is at least 50,000.
func BenchmarkSearchCardsWithProofs(b *testing.B) {
	l := openBigLog(b)
	e := newEnv(b, envOptions{dir: l.Dir, quiet: true, cfg: Config{SearchRate: 1e9, SearchBurst: 1 << 30}})
	searcher := e.newUser(b, app{id: l.AppID, key: l.Key}, "searcher")
	ctx := searcher.ctx()
	req := &cardv1.SearchCardsRequest{Identities: l.IDs}
	proofReq := &cardv1.SearchCardsWithProofsRequest{Identities: l.IDs}
	resp, err := e.client.SearchCardsWithProofs(ctx, proofReq)
	if err != nil {
		b.Fatal(err)
	}
	cp, err := e.store.LatestCheckpoint()
	if err != nil || cp.GetSize() != bigLogIdentities || len(resp.GetResults()) != benchIdentities {
		b.Fatalf("a log of %d entries, %d results: %v", cp.GetSize(), len(resp.GetResults()), err)
	}
	for i, r := range resp.GetResults() {
		if r.GetCard() == nil {
			b.Fatalf("no card for identity %d", i)
		}
	}
	b.Run("grpc", func(b *testing.B) {
		for b.Loop() {
			if _, err := e.client.SearchCards(ctx, req); err != nil {
				b.Fatal(err)
			}
		}
		reportIdentities(b)
	})
	b.Run("grpc-proofs", func(b *testing.B) {
		cpu := cpuTime(b)
		for b.Loop() {
			if resp, err = e.client.SearchCardsWithProofs(ctx, proofReq); err != nil {
				b.Fatal(err)
			}
		}
		reportIdentities(b)
		b.ReportMetric(float64((cpuTime(b)-cpu).Microseconds())/float64(b.N*benchIdentities), "cpu-µs/identity")
		// The answer's bytes per identity, and of them the proof's (the rest is the
		// card itself and the checkpoint's share).
		proofs := 0
		for _, r := range resp.GetResults() {
			proofs += proto.Size(r.GetProof())
		}
		b.ReportMetric(float64(proto.Size(resp))/benchIdentities, "bytes/identity")
		b.ReportMetric(float64(proofs)/benchIdentities, "proof-bytes/identity")
	})
	b.Run("grpc-proofs-new-checkpoint", func(b *testing.B) {
		for b.Loop() {
			e.store.tiles.current.Store(nil)
			if _, err := e.client.SearchCardsWithProofs(ctx, proofReq); err != nil {
				b.Fatal(err)
			}
		}
		reportIdentities(b)
	})
	b.Run("grpc-proofs-parallel", func(b *testing.B) {
		benchProofsParallel(b, ctx, e.client, proofReq)
	})
	b.Run("store-proofs", func(b *testing.B) {
		cpu := cpuTime(b)
		for b.Loop() {
			_, proved, err := e.store.ProvedCards(l.AppID, l.IDs)
			if err != nil || len(proved) != benchIdentities {
				b.Fatalf("%d proofs, %v", len(proved), err)
			}
		}
		reportIdentities(b)
		b.ReportMetric(float64((cpuTime(b)-cpu).Microseconds())/float64(b.N*benchIdentities), "cpu-µs/identity")
	})
	b.Run("server-encode", func(b *testing.B) {
		// What the server's side of grpc-proofs spends encoding the answer
		// (proto.Marshal of the response), to tell it from building the proofs.
		cpu := cpuTime(b)
		for b.Loop() {
			if _, err := proto.Marshal(resp); err != nil {
				b.Fatal(err)
			}
		}
		reportIdentities(b)
		b.ReportMetric(float64((cpuTime(b)-cpu).Microseconds())/float64(b.N*benchIdentities), "cpu-µs/identity")
	})
	b.Run("client-decode", func(b *testing.B) {
		// What the client's side of grpc-proofs spends decoding the answer, to tell the
		// server's CPU time in cpu-µs/identity from the client's.
		raw, err := proto.Marshal(resp)
		if err != nil {
			b.Fatal(err)
		}
		cpu := cpuTime(b)
		for b.Loop() {
			if err := proto.Unmarshal(raw, &cardv1.SearchCardsWithProofsResponse{}); err != nil {
				b.Fatal(err)
			}
		}
		reportIdentities(b)
		b.ReportMetric(float64((cpuTime(b)-cpu).Microseconds())/float64(b.N*benchIdentities), "cpu-µs/identity")
	})
}
