package servicetest

import (
	"context"
	"net"
	"net/http/httptest"
	"slices"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap"
	"google.golang.org/grpc"

	"github.com/umbra-e2ee/umbra/gateway"
	"github.com/umbra-e2ee/umbra/internal/clocktest"
	"github.com/umbra-e2ee/umbra/internal/grpcserver"
	"github.com/umbra-e2ee/umbra/pkg/auth"
	"github.com/umbra-e2ee/umbra/pkg/grpcclient"
)

// Options vary an Env. The zero value is the defaults in a fresh folder.
type Options struct {
	// Dir is the data folder; empty means a new t.TempDir().
	Dir string
	// Clock is shared with a previous env; nil means a new one at the current time,
	// truncated to the second.
	Clock *clocktest.Clock
	// Quiet discards logs (benchmarks and load tests log a line per call otherwise).
	Quiet bool
}

// Env is the plumbing of a service's test env, the shape of `umbra dev`: a data
// folder, a clock, and a loopback listener on which Serve serves the services behind
// the production interceptors. A test env builds its stores and services on it,
// registering what they must close (OnStop) and check (Verify), then serves them.
//
// Stop, which runs when the test ends (or earlier, when a test calls it), closes in
// this order: the gateway, the clients' connections, the background loops (the last
// started first), the servers, the peers' connections and listeners, what OnStop
// registered (the last first); then it verifies the store files.
type Env struct {
	// Dir is the data folder and Clock the time source of the services and of the
	// token verifier.
	Dir   string
	Clock *clocktest.Clock
	Log   *zap.Logger
	// Addr is the address Serve serves on, known before the services are built, so
	// that they can dial each other through it as in a cluster.
	Addr string

	t   testing.TB
	lis net.Listener

	serveCtx  context.Context
	stopServe context.CancelFunc
	serving   sync.WaitGroup

	mu        sync.Mutex // guards what follows, which Stop reads
	gateway   []func()   // closes the gateway and its httptest server
	conns     []*grpc.ClientConn
	loops     []func() // each stops one background loop and waits for it
	peers     []*grpc.ClientConn
	listeners []net.Listener
	closers   []func() error
	verifiers map[string]Verifier

	stopOnce sync.Once
}

// NewEnv returns an Env with its folder, clock, logger and listener; it stops when the
// test ends.
func NewEnv(t testing.TB, o Options) *Env {
	t.Helper()
	if o.Dir == "" {
		o.Dir = t.TempDir()
	}
	if o.Clock == nil {
		o.Clock = clocktest.New(time.Now().Truncate(time.Second))
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	e := &Env{
		Dir: o.Dir, Clock: o.Clock, Log: newLog(t, o.Quiet), Addr: lis.Addr().String(),
		t: t, lis: lis, listeners: []net.Listener{lis}, verifiers: map[string]Verifier{},
	}
	e.serveCtx, e.stopServe = context.WithCancel(context.Background())
	t.Cleanup(e.Stop)
	return e
}

// NewServer returns a gRPC server on a loopback address with the interceptors of
// production, checking access tokens, app keys and revocations with ids (on the env's
// clock) and the test credentials, and its access table, which merges the system's
// and policies (the identity service's among them when it is served). Register the
// services, then check the table with grpcserver.CheckPolicies (Serve does all this).
func (e *Env) NewServer(ids Identity, policies ...auth.Table) (*grpcserver.Server, auth.Table) {
	e.t.Helper()
	table, err := auth.Merge(append([]auth.Table{grpcserver.SystemPolicies()}, policies...)...)
	if err != nil {
		e.t.Fatal(err)
	}
	authn := auth.New(auth.Config{
		Policies:        table,
		Tokens:          auth.NewVerifier(ids, ids, "", e.Clock.Now),
		AppKeys:         ids,
		AdminCredential: Admin,
		ServiceToken:    ServiceToken,
		// The services' tables of bad requests send many wrong credentials from one
		// address; the failure limit has tests of its own (pkg/auth).
		Failures: auth.FailureLimit{Burst: -1},
	})
	gs, err := grpcserver.New(grpcserver.Config{Addr: "127.0.0.1:0"}, authn, e.Log, nil)
	if err != nil {
		e.t.Fatal(err)
	}
	return gs, table
}

// Serve builds the env's server (NewServer with ids and policies), registers the
// services on it, checks that every registered method has a policy, and serves it on
// Addr until the env stops.
func (e *Env) Serve(ids Identity, policies []auth.Table, register ...func(grpc.ServiceRegistrar)) {
	e.t.Helper()
	gs, table := e.NewServer(ids, policies...)
	for _, r := range register {
		r(gs.Server)
	}
	if err := grpcserver.CheckPolicies(gs.Server, table); err != nil {
		e.t.Fatal(err)
	}
	e.ServeOn(gs, e.lis)
}

// Listen returns another loopback listener, closed when the env stops.
func (e *Env) Listen() net.Listener {
	e.t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		e.t.Fatal(err)
	}
	return keep(e, &e.listeners, lis)
}

// ServeOn serves gs on lis until the env stops.
func (e *Env) ServeOn(gs *grpcserver.Server, lis net.Listener) {
	e.serving.Go(func() { gs.Serve(e.serveCtx, lis) })
}

// Run runs loop, a service's background work, until the env stops or the returned
// function, which waits for loop to return, is called.
func (e *Env) Run(loop func(ctx context.Context)) (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { loop(ctx); close(done) }()
	stop = sync.OnceFunc(func() { cancel(); <-done })
	return keep(e, &e.loops, stop)
}

// Dial returns a client's connection to Addr with opts, closed when the env stops,
// before anything else.
func (e *Env) Dial(opts ...grpc.DialOption) *grpc.ClientConn {
	e.t.Helper()
	conn, err := grpcclient.Dial(grpcclient.Config{Addr: e.Addr}, opts...)
	if err != nil {
		e.t.Fatal(err)
	}
	return keep(e, &e.conns, conn)
}

// DialPeer returns a service's connection to another, with the service token: to
// cfg.Addr, or Addr when it is empty. It is closed when the env stops, once the
// servers have stopped.
func (e *Env) DialPeer(cfg grpcclient.Config) *grpc.ClientConn {
	e.t.Helper()
	if cfg.Addr == "" {
		cfg.Addr = e.Addr
	}
	cfg.ServiceToken = ServiceToken
	conn, err := grpcclient.Dial(cfg)
	if err != nil {
		e.t.Fatal(err)
	}
	return keep(e, &e.peers, conn)
}

// Gateway starts the REST gateway, with every service upstream at Addr, on an
// httptest server, and returns its URL.
func (e *Env) Gateway() string {
	e.t.Helper()
	up := map[string]grpcclient.Config{}
	for _, s := range gateway.Services() {
		up[s] = grpcclient.Config{Addr: e.Addr}
	}
	g, err := gateway.New(e.serveCtx, gateway.Config{Upstreams: up}, e.Log.Named("gateway"))
	if err != nil {
		e.t.Fatal(err)
	}
	hs := httptest.NewServer(g.Handler())
	keep(e, &e.gateway, func() { hs.Close(); g.Close() })
	return hs.URL
}

// keep appends v to list, one of the env's lists of what Stop closes, under the lock,
// and returns v.
func keep[T any](e *Env, list *[]T, v T) T {
	e.mu.Lock()
	defer e.mu.Unlock()
	*list = append(*list, v)
	return v
}

// OnStop has the env call close (a store's Close) once every server and loop has
// stopped; an error fails the test.
func (e *Env) OnStop(close func() error) { keep(e, &e.closers, close) }

// Verify has the env check the store file name in Dir with verify once it is closed:
// every record the tests stored went in sealed, every index entry points at its
// record. A file the env never created is passed over.
func (e *Env) Verify(name string, verify Verifier) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.verifiers[name] = verify
}

// Stop stops everything the env started, closes what it was given, and verifies the
// stores, in the order the type's comment gives. Calls after the first do nothing.
func (e *Env) Stop() {
	e.stopOnce.Do(func() {
		e.mu.Lock()
		defer e.mu.Unlock()
		for _, close := range e.gateway {
			close()
		}
		for _, c := range e.conns {
			c.Close()
		}
		for _, stop := range slices.Backward(e.loops) {
			stop()
		}
		e.stopServe()
		e.serving.Wait()
		for _, c := range e.peers {
			c.Close()
		}
		for _, l := range e.listeners {
			l.Close()
		}
		for _, close := range slices.Backward(e.closers) {
			if err := close(); err != nil {
				e.t.Errorf("close a store: %v", err)
			}
		}
		verifyStores(e.t, e.Dir, e.verifiers)
	})
}
