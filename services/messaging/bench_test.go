package messaging

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"fmt"
	"path/filepath"
	"runtime/debug"
	"slices"
	"sync"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
	"go.uber.org/zap"

	"github.com/umbra-e2ee/umbra/internal/boltdb"
	"github.com/umbra-e2ee/umbra/pkg/grpcclient"
	messagingv1 "github.com/umbra-e2ee/umbra/proto/umbra/messaging/v1"
	messagingstoragev1 "github.com/umbra-e2ee/umbra/proto/umbra/storage/messaging/v1"
)

// The write-path benchmarks: benchSenders goroutines each send benchEnvelope-byte
// messages and wait for each to be durable (fsync on commit) before sending the next.
const (
	benchSenders  = 32
	benchEnvelope = 1024
)

// BenchmarkWritePath measures durable messages per second through the committer and the
// bbolt store, and in the same run its baseline. Every run measures both, back to back
// on fresh files, alternating which goes first, so that both meet the disk in the same
// state (a virtual disk may slow down under sustained writes), and reports:
//
//   - raw-msgs/s: the limit of bbolt on this machine for the same payloads and
//     concurrency: 32 writers, one goroutine that drains every pending write into one
//     transaction (as the committer does), each write one 1 KiB value under a
//     sequential key, nothing else, the store's bbolt options;
//   - msgs/s: SendOps through the committer into BoltStore: idempotency check, sequence
//     and inbox numbering, the log entry with its fan-out, the deferred index flushes.
//     Each sender has its own direct conversation;
//   - %-of-raw: the ratio.
//
// time-ordered-ids sends client_message_ids that grow with time, as UUIDv7s do;
// random-ids sends random ones (UUIDv4-like), whose idempotency index entries land on
// a random page each.
func BenchmarkWritePath(b *testing.B) {
	for _, ids := range []struct {
		name   string
		random bool
	}{{"time-ordered-ids", false}, {"random-ids", true}} {
		b.Run(ids.name, func(b *testing.B) {
			var raw, store float64
			if benchRuns++; benchRuns%2 == 0 {
				raw, store = benchRaw(b), benchCommitter(b, benchBoltStore(b), ids.random)
			} else {
				store, raw = benchCommitter(b, benchBoltStore(b), ids.random), benchRaw(b)
			}
			b.ReportMetric(raw, "raw-msgs/s")
			b.ReportMetric(store, "msgs/s")
			b.ReportMetric(100*store/raw, "%-of-raw")
			b.ReportMetric(0, "ns/op")
		})
	}
}

// benchRuns alternates the order of the two measurements.
var benchRuns int

// payload is a sender's envelope: random bytes, whose first 8 the sender numbers for
// each message. The store keeps no reference to it once a write has returned, so a
// sender reuses it, in both the baseline and the committer.
func payload() []byte {
	p := make([]byte, benchEnvelope)
	rand.Read(p)
	return p
}

// perSender splits b.N messages between the senders.
func perSender(b *testing.B) int { return (b.N + benchSenders - 1) / benchSenders }

// benchRaw returns the baseline's rate for b.N messages.
func benchRaw(b *testing.B) float64 {
	db, err := boltdb.Open(filepath.Join(b.TempDir(), "raw.db"), boltdb.Schema{Version: 1, Buckets: [][]byte{[]byte("values")}},
		boltdb.Options{NoFreelistSync: true, FreelistType: bolt.FreelistMapType, InitialMmapSize: 1 << 30})
	if err != nil {
		b.Fatal(err)
	}
	defer db.Close()
	var seq uint64
	return rawBatches(b, func(values [][]byte) error {
		return db.Update(func(tx *bolt.Tx) error {
			bk := tx.Bucket([]byte("values"))
			bk.FillPercent = 1
			for _, v := range values {
				seq++
				if err := bk.Put(boltdb.U64(seq), v); err != nil {
					return err
				}
			}
			return nil
		})
	})
}

// rawBatches is the baseline's driver, the same for every engine: benchSenders
// goroutines each write their share of b.N values, waiting for each to commit, and
// one loop commits whatever is queued when it looks, as one batch (commit). It
// returns the values committed per second.
func rawBatches(b *testing.B, commit func(values [][]byte) error) float64 {
	type write struct {
		value []byte
		err   error
		done  chan struct{}
	}
	queue := make(chan *write, queueLen)
	stop := make(chan struct{})
	var loop sync.WaitGroup
	loop.Go(func() {
		for {
			var batch []*write
			select {
			case w := <-queue:
				batch = append(batch, w)
			case <-stop:
				return
			}
		drain:
			for {
				select {
				case w := <-queue:
					batch = append(batch, w)
				default:
					break drain
				}
			}
			values := make([][]byte, len(batch))
			for i, w := range batch {
				values[i] = w.value
			}
			err := commit(values)
			for _, w := range batch {
				w.err = err
				close(w.done)
			}
		}
	})
	per := perSender(b)
	start := time.Now()
	var wg sync.WaitGroup
	for range benchSenders {
		wg.Go(func() {
			value := payload()
			for j := range per {
				binary.BigEndian.PutUint64(value, uint64(j))
				w := &write{value: value, done: make(chan struct{})}
				queue <- w
				<-w.done
				if w.err != nil {
					b.Error(w.err)
					return
				}
			}
		})
	}
	wg.Wait()
	rate := float64(per*benchSenders) / time.Since(start).Seconds()
	close(stop)
	loop.Wait()
	return rate
}

// benchBoltStore opens a new bbolt store for a benchmark.
func benchBoltStore(b *testing.B) Store {
	store, err := OpenBoltStore(filepath.Join(b.TempDir(), "messaging.db"), StoreOptions{})
	if err != nil {
		b.Fatal(err)
	}
	return store
}

// benchCommitter returns the committer's rate for b.N messages into store, which it
// closes; randomIDs makes the client message ids random instead of time-ordered.
func benchCommitter(b *testing.B, store Store, randomIDs bool) float64 {
	c := newCommitter(store, time.Now, DefaultRetention, newNotifier(DefaultMaxStreams, DefaultDeliveryCacheBytes), zap.NewNop())
	ctx, cancel := context.WithCancel(context.Background())
	var loop sync.WaitGroup
	loop.Go(func() { c.run(ctx) })
	defer func() {
		cancel()
		loop.Wait()
		store.Close()
	}()
	app := "app_" + fmt.Sprintf("%026d", 0)
	per := perSender(b)
	start := time.Now()
	var wg sync.WaitGroup
	for i := range benchSenders {
		sender, peer := testIdentity(2*i), testIdentity(2*i+1)
		conv := directID(app, sender, peer)
		wg.Go(func() {
			card := make([]byte, SenderCardIDLen)
			env := payload()
			for j := range per {
				binary.BigEndian.PutUint64(env, uint64(j))
				cmid := fmt.Sprintf("%016x-%08x", time.Now().UnixNano(), j)
				if randomIDs {
					cmid = rand.Text()
				}
				op := &Op{Send: &SendOp{
					AppID: app, Sender: sender, ConversationID: conv, Kind: kindDirect,
					ClientMessageID: cmid, MessageKind: messagingstoragev1.StoredMessageKind_STORED_MESSAGE_KIND_ENCRYPTED,
					SenderCardID: card, Envelope: env, Recipients: sortedPair(sender, peer),
				}}
				if err := c.submit(ctx, op); err != nil || op.Err != nil {
					b.Error(err, op.Err)
					return
				}
			}
		})
	}
	wg.Wait()
	return float64(per*benchSenders) / time.Since(start).Seconds()
}

// benchUsers starts a service over a store opened with opts, with no send limit to
// speak of, and returns it with benchSenders senders and as many receivers, the ith
// sender writing to the ith receiver.
func benchUsers(b *testing.B, opts StoreOptions) (e *env, senders, receivers []user) {
	e = newEnv(b, envOptions{quiet: true, store: opts, cfg: Config{SendRate: 1e6, SendBurst: 1 << 20}})
	a := e.newApp(b)
	uids := make([]string, 2*benchSenders)
	for i := range benchSenders {
		uids[i], uids[benchSenders+i] = fmt.Sprint("sender", i), fmt.Sprint("receiver", i)
	}
	us := e.newUsers(b, a, uids...)
	return e, us[:benchSenders], us[benchSenders:]
}

// receive opens a Subscribe stream for each receiver and, once all are live, reads per
// messages from each in the background, handing the ith receiver's to got(i, ...).
// Wait on the group returned for all of them.
func receive(b *testing.B, e *env, receivers []user, per int, got func(int, *messagingv1.SubscribeResponse)) *sync.WaitGroup {
	var wg sync.WaitGroup
	for i, r := range receivers {
		s := e.subscribe(b, r, nil, 0)
		s.untilCaughtUp(b)
		wg.Go(func() {
			for range per {
				got(i, s.nextItem(b))
			}
		})
	}
	return &wg
}

// BenchmarkSendToDeliver measures send-to-deliver latency over real gRPC on loopback,
// through the production interceptors: 32 senders, each paced to send 1 KiB envelopes
// so that all together send 2,000 msgs/s, each to its own receiver, who reads a
// Subscribe stream. Latency runs from just before Send to the stream's delivery. It
// reports p50, p99 and max in milliseconds, and the rate reached.
func BenchmarkSendToDeliver(b *testing.B) {
	const rate = 2000.0
	e, senders, receivers := benchUsers(b, StoreOptions{})
	per := perSender(b)
	var sent sync.Map // client_message_id -> time.Time
	latencies := make([][]time.Duration, benchSenders)
	delivered := receive(b, e, receivers, per, func(i int, it *messagingv1.SubscribeResponse) {
		start, _ := sent.Load(it.GetMessage().GetClientMessageId())
		latencies[i] = append(latencies[i], time.Since(start.(time.Time)))
	})
	interval := time.Duration(float64(benchSenders) / rate * float64(time.Second))
	b.ResetTimer()
	var wg sync.WaitGroup
	for i, s := range senders {
		wg.Go(func() {
			env := payload()
			time.Sleep(interval * time.Duration(i) / benchSenders) // spread the senders' ticks
			tick := time.NewTicker(interval)
			defer tick.Stop()
			for j := range per {
				<-tick.C
				cmid := fmt.Sprint(i, "-", j)
				sent.Store(cmid, time.Now())
				if _, err := e.client.Send(s.ctx(), s.sendReq(receivers[i].identity, cmid, string(env))); err != nil {
					b.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	delivered.Wait()
	b.StopTimer()
	var all []time.Duration
	for _, l := range latencies {
		all = append(all, l...)
	}
	slices.Sort(all)
	ms := func(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
	b.ReportMetric(ms(all[len(all)/2]), "p50-ms")
	b.ReportMetric(ms(all[len(all)*99/100]), "p99-ms")
	b.ReportMetric(ms(all[len(all)-1]), "max-ms")
	b.ReportMetric(float64(len(all))/b.Elapsed().Seconds(), "msgs/s")
	b.ReportMetric(0, "ns/op")
}

// BenchmarkEndToEndCeiling asks how much of the raw rate the whole system could reach on
// this machine if durability cost nothing. In one run it measures, on fresh files:
//
//   - durable-msgs/s: 32 senders, each with a SendStream over loopback gRPC (four
//     connections, one per 8 senders, as `umbra bench messaging --stream` makes), each
//     sending a 1 KiB envelope and waiting for its durable acknowledgement before the
//     next, to 32 receivers who read them from Subscribe streams; the server runs the
//     production interceptors, the committer and the store;
//   - no-fsync-msgs/s: the same with the store opened without fsync (bbolt NoSync),
//     which nothing but this benchmark does: the rate the rest of the system allows;
//   - raw-msgs/s: BenchmarkWritePath's baseline, bbolt's limit for the same payloads
//     and concurrency;
//
// and each of the first two as a percentage of raw. Client and server share the
// machine's cores, as they do in `umbra bench messaging` against `umbra dev`.
func BenchmarkEndToEndCeiling(b *testing.B) {
	defer debug.SetGCPercent(debug.SetGCPercent(400)) // as the umbra binary sets it
	raw := benchRaw(b)
	durable := benchEndToEnd(b, StoreOptions{})
	noSync := benchEndToEnd(b, StoreOptions{NoSync: true})
	b.ReportMetric(raw, "raw-msgs/s")
	b.ReportMetric(durable, "durable-msgs/s")
	b.ReportMetric(noSync, "no-fsync-msgs/s")
	b.ReportMetric(100*durable/raw, "durable-%-of-raw")
	b.ReportMetric(100*noSync/raw, "no-fsync-%-of-raw")
	b.ReportMetric(0, "ns/op")
}

// benchEndToEnd returns the rate of b.N messages sent over SendStreams and delivered
// over Subscribe streams, with the store opened with opts.
func benchEndToEnd(b *testing.B, opts StoreOptions) float64 {
	e, senders, receivers := benchUsers(b, opts)
	defer e.stop()
	clients := make([]messagingv1.MessagingServiceClient, benchSenders/8)
	for i := range clients {
		conn, err := grpcclient.Dial(grpcclient.Config{Addr: e.conn.Target()})
		if err != nil {
			b.Fatal(err)
		}
		defer conn.Close()
		clients[i] = messagingv1.NewMessagingServiceClient(conn)
	}
	per := perSender(b)
	delivered := receive(b, e, receivers, per, func(int, *messagingv1.SubscribeResponse) {})
	start := time.Now()
	var wg sync.WaitGroup
	for i, s := range senders {
		wg.Go(func() {
			ctx, cancel := context.WithCancel(s.ctx())
			defer cancel()
			stream, err := clients[i/8].SendStream(ctx)
			if err != nil {
				b.Error(err)
				return
			}
			env := payload()
			for j := range per {
				binary.BigEndian.PutUint64(env, uint64(j))
				req := s.sendReq(receivers[i].identity, fmt.Sprint(j), "")
				req.Envelope = env
				if err := stream.Send(&messagingv1.SendStreamRequest{Send: req}); err != nil {
					b.Error(err)
					return
				}
				resp, err := stream.Recv()
				if err != nil || resp.GetSent() == nil {
					b.Error(err, resp.GetError())
					return
				}
			}
		})
	}
	wg.Wait()
	delivered.Wait()
	return float64(per*benchSenders) / time.Since(start).Seconds()
}
