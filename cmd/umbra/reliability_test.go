package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/resolver"
	"google.golang.org/grpc/resolver/manual"
	"google.golang.org/grpc/status"

	"github.com/umbra-e2ee/umbra/internal/pgtest"
	"github.com/umbra-e2ee/umbra/pkg/grpcclient"
	"github.com/umbra-e2ee/umbra/pkg/sdk"
	identityv1 "github.com/umbra-e2ee/umbra/proto/umbra/identity/v1"
	messagingv1 "github.com/umbra-e2ee/umbra/proto/umbra/messaging/v1"
)

// The reliability tests of issue 16: the messaging service over PostgreSQL, as
// `umbra serve messaging` replicas beside an `umbra serve identity` (on bbolt: the
// database these tests take down is the messaging service's), driven by the Go SDK's
// clients (Sender, Send, Subscribe) under concurrent load. Every one is bounded: a few
// hundred messages, a minute at most.

const (
	fleetAdmin   = "reliability-e2e-admin-credential-0123456789"
	fleetService = "reliability-e2e-service-token-0123456789"
	// messagingHealth is the messaging service's name in gRPC health: NOT_SERVING while
	// its store's database does not answer or is a standby.
	messagingHealth = "umbra.messaging.v1.MessagingService"
)

// pgFleet is an identity service and messaging replicas over one PostgreSQL database,
// each its own `umbra serve` process on loopback.
type pgFleet struct {
	t        *testing.T
	bin      string
	store    string // the messaging replicas' --store
	identity string // the identity service's address
	replicas []*pgReplica
	apiKey   string
	ids      map[string]string // uid -> identity
	idConn   *grpc.ClientConn
}

// pgReplica is one `umbra serve messaging` process.
type pgReplica struct {
	addr    string
	cmd     *exec.Cmd
	exited  chan struct{}
	logPath string
}

// startFleet starts the identity service and n messaging replicas over store, creates
// an app that allows PLAINTEXT direct messages (the load's messages are test bytes),
// and waits until every replica is SERVING.
func startFleet(t *testing.T, store string, n int) *pgFleet {
	t.Helper()
	f := &pgFleet{t: t, bin: e2eBinary(t), store: store, ids: map[string]string{}}
	f.identity = fmt.Sprintf("127.0.0.1:%d", e2eFreePort(t))
	cmd := exec.Command(f.bin, "serve", "identity", "--insecure", "--grpc-addr", f.identity, "--data", t.TempDir(),
		"--admin-token", fleetAdmin, "--service-token", fleetService, "--log-level", "warn")
	cmd.Env = e2eEnv(os.Environ())
	e2eServe(t, "umbra serve identity", cmd, filepath.Join(t.TempDir(), "identity.log"))
	for range n {
		f.replicas = append(f.replicas, &pgReplica{addr: fmt.Sprintf("127.0.0.1:%d", e2eFreePort(t))})
	}
	for i := range f.replicas {
		f.startReplica(i)
	}
	conn, err := grpcclient.Dial(grpcclient.Config{Addr: f.identity})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	f.idConn = conn
	ctx, cancel := context.WithTimeout(metadata.AppendToOutgoingContext(context.Background(), "authorization", "Bearer "+fleetAdmin), 30*time.Second)
	defer cancel()
	app, err := identityv1.NewIdentityServiceClient(conn).CreateApp(ctx, &identityv1.CreateAppRequest{DisplayName: "reliability"}, grpc.WaitForReady(true))
	if err != nil {
		t.Fatal(err)
	}
	f.apiKey = app.GetApiKey()
	for _, r := range f.replicas {
		f.waitHealth(r, healthpb.HealthCheckResponse_SERVING, 30*time.Second)
	}
	mconn := f.dial(f.replicas[0].addr)
	if _, err := messagingv1.NewMessagingServiceClient(mconn).UpdateAppSettings(ctx,
		&messagingv1.UpdateAppSettingsRequest{AppId: app.GetApp().GetAppId(), Settings: &messagingv1.AppSettings{AllowPlaintextDirect: true}}); err != nil {
		t.Fatal(err)
	}
	return f
}

// startReplica starts messaging replica i (again, after a kill, on the same address).
// It is stopped with SIGTERM when the test ends, unless it was killed.
func (f *pgFleet) startReplica(i int) {
	t := f.t
	t.Helper()
	r := f.replicas[i]
	r.logPath = filepath.Join(t.TempDir(), fmt.Sprintf("messaging-%d.log", i+1))
	logOut, err := os.Create(r.logPath)
	if err != nil {
		t.Fatal(err)
	}
	r.cmd = exec.Command(f.bin, "serve", "messaging", "--insecure", "--grpc-addr", r.addr, "--data", t.TempDir(),
		"--store", f.store, "--identity-addr", f.identity, "--card-addr", "127.0.0.1:1",
		"--admin-token", fleetAdmin, "--service-token", fleetService,
		"--send-rate", "100000", "--send-burst", "100000", "--log-level", "warn")
	r.cmd.Env = e2eEnv(os.Environ())
	r.cmd.Stdout, r.cmd.Stderr = logOut, logOut
	if err := r.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	r.exited = exited
	cmd := r.cmd
	go func() { cmd.Wait(); logOut.Close(); close(exited) }()
	t.Cleanup(func() {
		select {
		case <-exited:
		default:
			cmd.Process.Signal(syscall.SIGTERM)
			select {
			case <-exited:
				if code := cmd.ProcessState.ExitCode(); code != 0 {
					t.Errorf("messaging replica %d exited %d after SIGTERM", i+1, code)
				}
			case <-time.After(15 * time.Second):
				cmd.Process.Kill()
				<-exited
				t.Errorf("messaging replica %d did not stop within 15 s of SIGTERM", i+1)
			}
		}
		if t.Failed() {
			b, _ := os.ReadFile(r.logPath)
			t.Logf("messaging replica %d's log:\n%s", i+1, b)
		}
	})
}

// kill kills the replica with SIGKILL and waits for it.
func (r *pgReplica) kill(t *testing.T) {
	t.Helper()
	if err := r.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	<-r.exited
}

func (f *pgFleet) dial(addr string) *grpc.ClientConn {
	f.t.Helper()
	conn, err := grpcclient.Dial(grpcclient.Config{Addr: addr})
	if err != nil {
		f.t.Fatal(err)
	}
	f.t.Cleanup(func() { conn.Close() })
	return conn
}

// health returns the replica's messaging service's state in gRPC health.
func (f *pgFleet) health(r *pgReplica) (healthpb.HealthCheckResponse_ServingStatus, error) {
	conn, err := grpcclient.Dial(grpcclient.Config{Addr: r.addr})
	if err != nil {
		return 0, err
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	resp, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{Service: messagingHealth}, grpc.WaitForReady(true))
	return resp.GetStatus(), err
}

// waitHealth waits until the replica's state is want, and returns how long it took.
func (f *pgFleet) waitHealth(r *pgReplica, want healthpb.HealthCheckResponse_ServingStatus, within time.Duration) time.Duration {
	f.t.Helper()
	began := time.Now()
	for {
		got, err := f.health(r)
		if err == nil && got == want {
			return time.Since(began)
		}
		if time.Since(began) > within {
			f.t.Fatalf("messaging at %s is %v (%v) %v on; want %v", r.addr, got, err, within, want)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// users resolves uids to identities in the fleet's app.
func (f *pgFleet) users(uids ...string) {
	f.t.Helper()
	ctx, cancel := context.WithTimeout(metadata.AppendToOutgoingContext(context.Background(), "authorization", "Bearer "+f.apiKey), 30*time.Second)
	defer cancel()
	resp, err := identityv1.NewIdentityServiceClient(f.idConn).ResolveIdentities(ctx, &identityv1.ResolveIdentitiesRequest{Uids: uids})
	if err != nil {
		f.t.Fatal(err)
	}
	for _, uid := range uids {
		f.ids[uid] = resp.GetUsers()[uid]
	}
}

// token issues an access token for the user uid.
func (f *pgFleet) token(ctx context.Context, uid string) (string, error) {
	ctx = metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+f.apiKey)
	resp, err := identityv1.NewIdentityServiceClient(f.idConn).IssueToken(ctx, &identityv1.IssueTokenRequest{Identity: f.ids[uid]})
	return resp.GetAccessToken(), err
}

var fleetResolvers atomic.Int64

// client returns an SDK client of the user uid that knows the messaging replicas at
// addrs, in order: it uses the first that answers (gRPC's pick_first), and moves to
// the next when it is lost, as a client behind a list of addresses (DNS, a load
// balancer) does.
func (f *pgFleet) client(uid string, addrs ...string) *sdk.Client {
	f.t.Helper()
	r := manual.NewBuilderWithScheme(fmt.Sprintf("umbra-replicas-%d", fleetResolvers.Add(1)))
	var state resolver.State
	for _, a := range addrs {
		state.Addresses = append(state.Addresses, resolver.Address{Addr: a})
	}
	r.InitialState(state)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := sdk.New(ctx, sdk.Config{
		Addr:         r.Scheme() + ":///messaging",
		Insecure:     true, // loopback, behind a name the plaintext check cannot read
		Token:        func(ctx context.Context) (string, error) { return f.token(ctx, uid) },
		KeystorePath: filepath.Join(f.t.TempDir(), "keystore"),
		NoPassphrase: true,
		DialOptions:  []grpc.DialOption{grpc.WithResolvers(r)},
	})
	if err != nil {
		f.t.Fatal(err)
	}
	f.t.Cleanup(func() { c.Close() })
	return c
}

// sentMsg is an acknowledged message: its client_message_id and its sequence in the
// conversation.
type sentMsg struct {
	cmid string
	seq  uint64
}

// gotMsg is a message a subscriber received.
type gotMsg struct {
	inbox  uint64
	sender string
	seq    uint64
	cmid   string
}

// load is senders sending to readers, each reader subscribed, until stop.
type load struct {
	f        *pgFleet
	senders  []string // uids
	readers  []string
	to       map[string]string // sender uid -> reader uid
	mu       sync.Mutex
	acked    map[string][]sentMsg // by sender uid, in order
	received map[string][]gotMsg  // by reader uid, in order
	total    atomic.Int64
	stopping chan struct{}
	wg       sync.WaitGroup
	subs     sync.WaitGroup
	endSubs  context.CancelFunc
	failures atomic.Int64
}

// maxPerSender bounds each sender's messages.
const maxPerSender = 400

// startLoad starts nSenders senders and nReaders readers, each client knowing every
// replica of the fleet. Even senders use a Sender (SendStream, window messages
// ahead), odd ones Client.Send one at a time; sender i sends to reader i % nReaders,
// up to maxPerSender messages. With two readers and two replicas, sender i is on
// replica i % 2 (while it answers) and its reader on the other: each message is
// delivered live across replicas (Store.Watch).
func startLoad(t *testing.T, f *pgFleet, nSenders, nReaders, window int) *load {
	t.Helper()
	l := &load{f: f, to: map[string]string{}, acked: map[string][]sentMsg{}, received: map[string][]gotMsg{}, stopping: make(chan struct{})}
	for i := range nReaders {
		l.readers = append(l.readers, fmt.Sprintf("reader-%d", i))
	}
	for i := range nSenders {
		uid := fmt.Sprintf("sender-%d", i)
		l.senders = append(l.senders, uid)
		l.to[uid] = l.readers[i%nReaders]
	}
	f.users(append(slices.Clone(l.readers), l.senders...)...)
	subCtx, endSubs := context.WithCancel(context.Background())
	l.endSubs = endSubs
	// addrs are the replicas, those from home on first.
	addrs := func(home int) []string {
		var out []string
		for j := range f.replicas {
			out = append(out, f.replicas[(home+j)%len(f.replicas)].addr)
		}
		return out
	}
	for i, uid := range l.readers {
		c := f.client(uid, addrs(i+1)...)
		ready := make(chan struct{})
		var once sync.Once
		l.subs.Go(func() {
			err := c.Subscribe(subCtx, sdk.SubscribeOptions{FromStart: true}, func(item *messagingv1.SubscribeResponse) error {
				once.Do(func() { close(ready) })
				if m := item.GetMessage(); m != nil {
					l.mu.Lock()
					l.received[uid] = append(l.received[uid], gotMsg{inbox: item.GetInboxSequence(), sender: m.GetSender(), seq: m.GetSequence(), cmid: m.GetClientMessageId()})
					l.mu.Unlock()
				}
				return nil
			})
			if !errors.Is(err, context.Canceled) {
				t.Errorf("%s's subscription ended: %v", uid, err)
			}
		})
		select {
		case <-ready: // the caught-up heartbeat: subscribed
		case <-time.After(30 * time.Second):
			t.Fatalf("%s got nothing from its subscription within 30 s", uid)
		}
	}
	for i, uid := range l.senders {
		c := f.client(uid, addrs(i)...)
		req := func(n int) *messagingv1.SendRequest {
			cmid := fmt.Sprintf("%s-%05d", uid, n)
			return &messagingv1.SendRequest{
				ConversationId: f.ids[l.to[uid]], ClientMessageId: cmid,
				Header:   &messagingv1.MessageHeader{Kind: messagingv1.MessageKind_MESSAGE_KIND_PLAINTEXT},
				Envelope: []byte(cmid),
			}
		}
		ack := func(cmid string, resp *messagingv1.SendResponse, err error) bool {
			if err != nil {
				t.Errorf("%s: %s not stored: %v", uid, cmid, err)
				l.failures.Add(1)
				return false
			}
			l.mu.Lock()
			l.acked[uid] = append(l.acked[uid], sentMsg{cmid, resp.GetSequence()})
			l.mu.Unlock()
			l.total.Add(1)
			return true
		}
		if i%2 == 1 {
			l.wg.Go(func() {
				for n := 0; n < maxPerSender; n++ {
					select {
					case <-l.stopping:
						return
					default:
					}
					r := req(n)
					ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
					resp, err := c.Send(ctx, r)
					cancel()
					if !ack(r.GetClientMessageId(), resp, err) {
						return
					}
				}
			})
			continue
		}
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		t.Cleanup(cancel)
		s, err := c.NewSender(ctx, window)
		if err != nil {
			t.Fatal(err)
		}
		type sending struct {
			p    *sdk.Pending
			cmid string
		}
		pending := make(chan sending, window)
		l.wg.Go(func() { // replies, in order
			for p := range pending {
				resp, err := p.p.Wait(ctx)
				if !ack(p.cmid, resp, err) {
					for range pending {
					}
					return
				}
			}
		})
		l.wg.Go(func() {
			defer close(pending)
			for n := 0; ; n++ {
				stop := n == maxPerSender
				if !stop {
					select {
					case <-l.stopping:
						stop = true
					default:
					}
				}
				if stop {
					if err := s.Close(ctx); err != nil {
						t.Errorf("%s: closing its Sender: %v", uid, err)
					}
					return
				}
				r := req(n)
				p, err := s.Send(ctx, r)
				if err != nil {
					t.Errorf("%s: Sender.Send: %v", uid, err)
					return
				}
				pending <- sending{p, r.GetClientMessageId()}
			}
		})
	}
	return l
}

// waitAcked waits until at least n messages are acknowledged in all, within d.
func (l *load) waitAcked(t *testing.T, n int64, d time.Duration) {
	t.Helper()
	deadline := time.Now().Add(d)
	for l.total.Load() < n {
		if time.Now().After(deadline) {
			t.Fatalf("%d messages acknowledged %v on; want %d", l.total.Load(), d, n)
		}
		if l.failures.Load() > 0 {
			t.FailNow()
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// counts returns how many messages each sender has had acknowledged and each reader
// received so far.
func (l *load) counts() map[string]int {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := map[string]int{}
	for _, uid := range l.senders {
		out[uid] = len(l.acked[uid])
	}
	for _, uid := range l.readers {
		out[uid] = len(l.received[uid])
	}
	return out
}

// waitEveryone waits, within d, until every sender has had n more messages
// acknowledged than in before and every reader has received n more: each client is
// served again, whichever replica it was on.
func (l *load) waitEveryone(t *testing.T, before map[string]int, n int, d time.Duration) {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		now := l.counts()
		var behind []string
		for uid, c := range before {
			if now[uid] < c+n {
				behind = append(behind, fmt.Sprintf("%s (%d, was %d)", uid, now[uid], c))
			}
		}
		if len(behind) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%v on, these clients have not got %d more messages through: %v", d, n, behind)
		}
		if l.failures.Load() > 0 {
			t.FailNow()
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// stop ends the sending (every message sent is acknowledged first), waits until each
// reader has received every message sent to it, then ends the subscriptions.
func (l *load) stop(t *testing.T) {
	t.Helper()
	close(l.stopping)
	l.wg.Wait()
	want := map[string]int{}
	l.mu.Lock()
	for uid, acked := range l.acked {
		want[l.to[uid]] += len(acked)
	}
	l.mu.Unlock()
	deadline := time.Now().Add(30 * time.Second)
	for _, reader := range l.readers {
		for {
			l.mu.Lock()
			got := len(l.received[reader])
			l.mu.Unlock()
			if got >= want[reader] {
				break
			}
			if time.Now().After(deadline) {
				t.Errorf("%s received %d messages of %d 30 s after the senders stopped", reader, got, want[reader])
				break
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	l.endSubs()
	l.subs.Wait()
}

// verify checks, through History on a replica, that every acknowledged message is
// stored exactly once, in the order it was acknowledged, at the sequence it was
// acknowledged with, the conversation without a gap; and that every reader received
// each message of its inbox exactly once, in order, without a gap.
func (l *load) verify(t *testing.T, addr string) {
	t.Helper()
	f := l.f
	conn := f.dial(addr)
	client := messagingv1.NewMessagingServiceClient(conn)
	total := 0
	for _, uid := range l.senders {
		tok, err := f.token(context.Background(), uid)
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(metadata.AppendToOutgoingContext(context.Background(), "authorization", "Bearer "+tok), 30*time.Second)
		stored := history(t, ctx, client, f.ids[l.to[uid]])
		cancel()
		total += len(l.acked[uid])
		wantStoredAsAcked(t, uid, stored, l.acked[uid])
	}
	delivered := 0
	for _, reader := range l.readers {
		got := l.received[reader]
		delivered += len(got)
		last := map[string]uint64{}
		for j, m := range got {
			if m.inbox != uint64(j+1) {
				t.Fatalf("%s: item %d of its subscription is inbox %d; want %d (no gap, no duplicate)", reader, j, m.inbox, j+1)
			}
			if m.seq != last[m.sender]+1 {
				t.Fatalf("%s: %s at sequence %d after %d from the same sender", reader, m.cmid, m.seq, last[m.sender])
			}
			last[m.sender] = m.seq
		}
	}
	if delivered != total {
		t.Errorf("the readers received %d messages; %d were acknowledged", delivered, total)
	}
}

// TestFailoverWithoutLoss: a PostgreSQL primary with a synchronous standby on
// loopback, two messaging replicas whose connection string names both hosts
// (target_session_attrs=read-write), senders and subscribers on both replicas. The
// primary is killed with SIGKILL mid-run and the standby promoted: the replicas
// reconnect by themselves, every acknowledged message is stored exactly once and in
// order, every subscriber resumes without a gap or a duplicate, and live delivery
// across replicas works again (no fall-back to polling).
func TestFailoverWithoutLoss(t *testing.T) {
	failover(t, "killed", (*pgtest.Cluster).Kill, 30*time.Second)
}

// TestFailoverFrozenPrimary is TestFailoverWithoutLoss with a primary that hangs
// instead (SIGSTOP: a host that lost its network or froze), the harder case: its
// connections neither answer nor break, so the replicas learn of the loss only
// through their timeouts.
func TestFailoverFrozenPrimary(t *testing.T) {
	// A write in flight waits its operation timeout (15 s), a new connection the
	// connection timeout on the silent host (5 s), the clients their back-off (up to
	// 5 s), and pgx's closing of connections to the frozen host can hold the pool's
	// places up to 15 s: 29 to 40 s measured.
	failover(t, "frozen", (*pgtest.Cluster).Freeze, 55*time.Second)
}

// failover runs the failover test with the primary lost by lose; every client must be
// served again within that long of the loss.
func failover(t *testing.T, how string, lose func(*pgtest.Cluster), within time.Duration) {
	primary := pgtest.NewCluster(t, pgtest.Options{})
	standby := pgtest.NewStandby(t, primary)
	db := primary.NewDatabase(t)
	f := startFleet(t, pgtest.MultiHostURL(db.Name, primary, standby), 2)
	// Killed before the replicas stop: a frozen primary would hold up their pools'
	// closing connections to it.
	t.Cleanup(primary.Kill)
	l := startLoad(t, f, 6, 2, 8)
	l.waitAcked(t, 300, 30*time.Second)
	lostAt, before := l.total.Load(), l.counts()
	lose(primary)
	began := time.Now()
	// Until the standby is promoted there is no primary: the replicas see it (not
	// ready), and nothing is acknowledged meanwhile.
	for _, r := range f.replicas {
		f.waitHealth(r, healthpb.HealthCheckResponse_NOT_SERVING, 15*time.Second)
	}
	down := time.Since(began)
	if err := standby.Promote(); err != nil {
		t.Fatal(err)
	}
	promoted := time.Since(began)
	l.waitEveryone(t, before, 20, within-time.Since(began))
	recovered := time.Since(began)
	l.stop(t)
	for _, r := range f.replicas {
		f.waitHealth(r, healthpb.HealthCheckResponse_SERVING, 10*time.Second)
	}
	l.verify(t, f.replicas[1].addr)
	live := f.liveAcross(t)
	t.Logf("%d messages acknowledged before the primary was %s, %d in all; both replicas not ready %v after, the standby promoted at %v, every sender and reader 20 more messages through at %v; then delivered across replicas in %v",
		lostAt, how, l.total.Load(), down.Round(time.Millisecond), promoted.Round(time.Millisecond), recovered.Round(time.Millisecond), live)
}

// liveWithin is how soon a message stored through one replica reaches a subscriber on
// another when the wake-ups work: far below the poll (2 s) that stands in for a lost
// one.
const liveWithin = 300 * time.Millisecond

// liveAcross sends five messages through the first replica to a subscriber on the
// second, one at a time, and fails unless at least four arrive within liveWithin: live
// delivery across replicas works, rather than the poll. It returns the latencies.
func (f *pgFleet) liveAcross(t *testing.T) []time.Duration {
	t.Helper()
	f.users("live-sender", "live-reader")
	reader := f.client("live-reader", f.replicas[1].addr)
	got := make(chan string, 8)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	subscribed := make(chan struct{})
	var once sync.Once
	go func() {
		done <- reader.Subscribe(ctx, sdk.SubscribeOptions{FromStart: true}, func(item *messagingv1.SubscribeResponse) error {
			once.Do(func() { close(subscribed) })
			if m := item.GetMessage(); m != nil {
				got <- m.GetClientMessageId()
			}
			return nil
		})
	}()
	defer func() {
		cancel()
		<-done
	}()
	select {
	case <-subscribed:
	case <-time.After(15 * time.Second):
		t.Fatal("the live reader's subscription gave nothing within 15 s")
	}
	tok, err := f.token(context.Background(), "live-sender")
	if err != nil {
		t.Fatal(err)
	}
	client := messagingv1.NewMessagingServiceClient(f.dial(f.replicas[0].addr))
	var took []time.Duration
	late := 0
	for i := range 5 {
		cmid := fmt.Sprint("live-", i)
		sctx, scancel := context.WithTimeout(metadata.AppendToOutgoingContext(context.Background(), "authorization", "Bearer "+tok), 15*time.Second)
		_, err := client.Send(sctx, &messagingv1.SendRequest{
			ConversationId: f.ids["live-reader"], ClientMessageId: cmid,
			Header:   &messagingv1.MessageHeader{Kind: messagingv1.MessageKind_MESSAGE_KIND_PLAINTEXT},
			Envelope: []byte(cmid),
		})
		scancel()
		sent := time.Now()
		if err != nil {
			t.Fatal(err)
		}
		select {
		case id := <-got:
			if id != cmid {
				t.Fatalf("the live reader got %s; want %s", id, cmid)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("%s did not reach the reader on the other replica within 10 s", cmid)
		}
		d := time.Since(sent)
		took = append(took, d.Round(time.Millisecond))
		if d > liveWithin {
			late++
		}
	}
	if late > 1 {
		t.Errorf("%d of 5 messages took longer than %v to reach a subscriber on the other replica (%v): live delivery across replicas is not working, only the poll", late, liveWithin, took)
	}
	return took
}

// TestMessagingReplicaLoss: two messaging replicas over one PostgreSQL, senders and
// subscribers spread over both, each client knowing both addresses. One replica is
// killed with SIGKILL mid-run: its clients reconnect to the other by themselves
// (SendStream resent from the first message without a reply, Send retried with the
// same client_message_id, Subscribe resumed from its cursor), and nothing acknowledged
// is lost, stored twice, or delivered out of order.
func TestMessagingReplicaLoss(t *testing.T) {
	cluster := pgtest.NewCluster(t, pgtest.Options{})
	db := cluster.NewDatabase(t)
	f := startFleet(t, db.URL, 2)
	l := startLoad(t, f, 6, 2, 8)
	l.waitAcked(t, 300, 30*time.Second)
	killedAt, before := l.total.Load(), l.counts()
	began := time.Now()
	f.replicas[0].kill(t)
	l.waitEveryone(t, before, 20, 40*time.Second)
	recovered := time.Since(began)
	l.stop(t)
	l.verify(t, f.replicas[1].addr)
	t.Logf("%d messages acknowledged before a replica was killed, %d in all; every sender and reader 20 more messages through %v after the kill",
		killedAt, l.total.Load(), recovered.Round(time.Millisecond))
}

// downBound is how fast a request fails while the database is down: a refused
// connection is immediate, and the bound leaves room for a loaded machine.
const downBound = 2 * time.Second

// TestDatabaseDown: two messaging replicas over one PostgreSQL, a subscriber on one.
// The database is stopped: requests (Send, SendStream, History) fail fast with
// UNAVAILABLE, within downBound, storing nothing, and both replicas turn not ready.
// The database is started again: both turn ready and serve by themselves, without a
// restart of umbra, and a message sent through one reaches the subscriber on the
// other live.
func TestDatabaseDown(t *testing.T) {
	cluster := pgtest.NewCluster(t, pgtest.Options{})
	db := cluster.NewDatabase(t)
	f := startFleet(t, db.URL, 2)
	a, b := f.replicas[0], f.replicas[1]
	f.users("alice", "bob")
	aliceTok, err := f.token(context.Background(), "alice")
	if err != nil {
		t.Fatal(err)
	}
	asAlice := func(ctx context.Context) context.Context {
		return metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+aliceTok)
	}
	client := messagingv1.NewMessagingServiceClient(f.dial(a.addr))
	send := func(cmid string) (*messagingv1.SendResponse, error) {
		ctx, cancel := context.WithTimeout(asAlice(context.Background()), 30*time.Second)
		defer cancel()
		return client.Send(ctx, &messagingv1.SendRequest{
			ConversationId: f.ids["bob"], ClientMessageId: cmid,
			Header:   &messagingv1.MessageHeader{Kind: messagingv1.MessageKind_MESSAGE_KIND_PLAINTEXT},
			Envelope: []byte(cmid),
		})
	}

	// bob subscribes on the other replica, with the SDK (which resumes by itself).
	bob := f.client("bob", b.addr)
	got := make(chan *messagingv1.Message, 16)
	subCtx, endSub := context.WithCancel(context.Background())
	subDone := make(chan error, 1)
	go func() {
		subDone <- bob.Subscribe(subCtx, sdk.SubscribeOptions{FromStart: true}, func(item *messagingv1.SubscribeResponse) error {
			if m := item.GetMessage(); m != nil {
				got <- m
			}
			return nil
		})
	}()
	defer func() {
		endSub()
		if err := <-subDone; !errors.Is(err, context.Canceled) {
			t.Errorf("bob's subscription: %v", err)
		}
	}()
	receive := func(cmid string, within time.Duration) time.Duration {
		t.Helper()
		began := time.Now()
		select {
		case m := <-got:
			if m.GetClientMessageId() != cmid {
				t.Fatalf("bob received %s; want %s", m.GetClientMessageId(), cmid)
			}
		case <-time.After(within):
			t.Fatalf("bob did not receive %s within %v", cmid, within)
		}
		return time.Since(began)
	}
	if _, err := send("before"); err != nil {
		t.Fatal(err)
	}
	receive("before", 10*time.Second)

	cluster.Stop()
	notReady := map[string]time.Duration{}
	for _, r := range f.replicas {
		notReady[r.addr] = f.waitHealth(r, healthpb.HealthCheckResponse_NOT_SERVING, 10*time.Second)
	}
	var slowest time.Duration
	timed := func(what string, call func() error) {
		t.Helper()
		began := time.Now()
		err := call()
		took := time.Since(began)
		slowest = max(slowest, took)
		if status.Code(err) != codes.Unavailable {
			t.Errorf("%s with the database down: %v; want UNAVAILABLE", what, err)
		}
		if took > downBound {
			t.Errorf("%s with the database down took %v; want it to fail within %v", what, took, downBound)
		}
	}
	for i := range 3 {
		timed("Send", func() error { _, err := send(fmt.Sprint("down-", i)); return err })
		timed("History", func() error {
			ctx, cancel := context.WithTimeout(asAlice(context.Background()), 30*time.Second)
			defer cancel()
			_, err := client.History(ctx, &messagingv1.HistoryRequest{ConversationId: f.ids["bob"]})
			return err
		})
		timed("SendStream", func() error {
			ctx, cancel := context.WithTimeout(asAlice(context.Background()), 30*time.Second)
			defer cancel()
			ss, err := client.SendStream(ctx)
			if err != nil {
				return err
			}
			if err := ss.Send(&messagingv1.SendStreamRequest{Send: &messagingv1.SendRequest{
				ConversationId: f.ids["bob"], ClientMessageId: fmt.Sprint("down-stream-", i),
				Header:   &messagingv1.MessageHeader{Kind: messagingv1.MessageKind_MESSAGE_KIND_PLAINTEXT},
				Envelope: []byte("down"),
			}}); err != nil {
				return err
			}
			r, err := ss.Recv()
			if err == nil {
				return fmt.Errorf("a reply: %v", r)
			}
			return err
		})
	}

	if err := cluster.Restart(); err != nil {
		t.Fatal(err)
	}
	ready := map[string]time.Duration{}
	for _, r := range f.replicas {
		ready[r.addr] = f.waitHealth(r, healthpb.HealthCheckResponse_SERVING, 15*time.Second)
	}
	// Ready means serving: the first request after it succeeds.
	sentAt := time.Now()
	sent, err := send("after")
	if err != nil {
		t.Fatalf("Send once the database is back and the replica ready: %v", err)
	}
	if sent.GetSequence() != 2 {
		t.Errorf("the message after the restart has sequence %d; want 2 (nothing stored while the database was down)", sent.GetSequence())
	}
	receive("after", 10*time.Second)
	live := time.Since(sentAt)
	select {
	case m := <-got:
		t.Errorf("bob received %s as well", m.GetClientMessageId())
	case <-time.After(200 * time.Millisecond):
	}
	t.Logf("database down: not ready after %v (replica 1) and %v (replica 2), the slowest failing request %v; back: ready after %v and %v, a message delivered across replicas in %v",
		notReady[a.addr].Round(time.Millisecond), notReady[b.addr].Round(time.Millisecond), slowest.Round(time.Millisecond),
		ready[a.addr].Round(time.Millisecond), ready[b.addr].Round(time.Millisecond), live.Round(time.Millisecond))
}
