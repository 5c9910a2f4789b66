// Package node runs Umbra roles in one process: the services it is given, on one gRPC
// listener, optionally with the REST gateway beside them. `umbra serve <role>` runs one
// role; `umbra serve all` and `umbra dev` run them all.
package node

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"maps"
	"net"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.uber.org/zap"
	"google.golang.org/grpc"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/umbra-e2ee/umbra/gateway"
	"github.com/umbra-e2ee/umbra/internal/boltdb"
	"github.com/umbra-e2ee/umbra/internal/grpcserver"
	"github.com/umbra-e2ee/umbra/pkg/auth"
	"github.com/umbra-e2ee/umbra/pkg/grpcclient"
	"github.com/umbra-e2ee/umbra/pkg/tlsconf"
	adminv1 "github.com/umbra-e2ee/umbra/proto/umbra/admin/v1"
	identityv1 "github.com/umbra-e2ee/umbra/proto/umbra/identity/v1"
	"github.com/umbra-e2ee/umbra/services/backup"
	"github.com/umbra-e2ee/umbra/services/group"
	"github.com/umbra-e2ee/umbra/services/messaging"
)

// Config is one process's configuration.
type Config struct {
	// Roles are the services to host: any of gateway.Services().
	Roles []string
	// DataDir holds each hosted service's bbolt file (<role>.db), and ManifestFile,
	// the list of the stores created there.
	DataDir string
	// AllowEmptyStores names stores that may start empty although the data folder
	// held them and their file is now missing or empty (see stores.go); without it
	// such a store is refused.
	AllowEmptyStores []string
	// GRPC is the services' listener.
	GRPC grpcserver.Config
	// Gateway, when set, runs the REST gateway in this process in front of the hosted
	// services (its Upstreams are filled in to point at GRPC's listener).
	Gateway *gateway.Config
	// MetricsAddr, when set, serves /metrics on its own plain-HTTP listener
	// (gateway.ServeMetrics). The gateway's listener never serves them: it is the
	// public one.
	MetricsAddr string
	// Identity says how to reach the identity service for signing keys and
	// revocations. A process that hosts the identity role (alone, or with others as in
	// `umbra dev` and `serve all`) checks tokens against the identity service's own
	// store, so a revocation holds on the next call; any other process follows the
	// identity service's revocation feed over gRPC, within auth.DefaultRevocationPoll.
	Identity grpcclient.Config
	// AdminCredential enables the admin methods (CreateApp...).
	AdminCredential string
	// ServiceToken authenticates services to each other's internal methods (when not
	// using mTLS), and is sent on this process's calls to other services.
	ServiceToken string
	// ServicePeers are the certificate names accepted as internal callers over mTLS.
	ServicePeers []string
	// ForwarderToken is the secret with which a REST gateway vouches for its clients'
	// addresses (auth.Config.ForwarderToken). An in-process gateway gets a random one
	// when it is empty.
	ForwarderToken string
	// ForwarderPeers are the certificate names of gateways whose clients' addresses
	// are believed over mTLS (auth.Config.ForwarderPeers).
	ForwarderPeers []string
	// AuthFailures limits failed credentials per source; the zero value is the
	// defaults.
	AuthFailures auth.FailureLimit
	// Issuer is the access tokens' "iss".
	Issuer string
	// CardSearchRate and CardSearchBurst limit SearchCards per calling identity (calls
	// per second on average, and at once); 0 means the card service's defaults.
	CardSearchRate  float64
	CardSearchBurst int
	// Group says how the messaging service reaches the group service, with the
	// ServiceToken. A process that hosts the group role reaches its own listener; left
	// empty otherwise, group conversations are refused.
	Group grpcclient.Config
	// Messaging tunes the messaging service (envelope limit, send rate, retention,
	// streams); the zero value is its defaults.
	Messaging messaging.Config
	// Card says how the group service (members' active cards and card events) and the
	// messaging service (whose card a message's sender card is) reach the card service,
	// and MessagingPeer how the group and backup services reach the messaging service
	// (events into members' streams). A process that hosts the role reaches its own
	// listener.
	Card          grpcclient.Config
	MessagingPeer grpcclient.Config
	// Backup configures the backup service; its Secret is required when the process
	// hosts the backup role.
	Backup backup.Config
	// GroupTuning tunes the group service; the zero value is its defaults.
	GroupTuning group.Config
	// Ready, when set, is called once every listener is up, with their addresses.
	Ready func(ctx context.Context, addrs Addrs) error
	// StoreProbeInterval is how often a store whose writes fail tries a probe write,
	// to turn its service ready again without waiting for a client; 0 means
	// boltdb.DefaultProbeInterval.
	StoreProbeInterval time.Duration
	// StoresOpen, when set, is called with every hosted service's store by role once
	// they are open, before serving: tests fail their writes through it
	// (boltdb.DB.FailCommits).
	StoresOpen func(map[string]*boltdb.DB)
}

// Addrs are the addresses a running node listens on.
type Addrs struct {
	GRPC    string
	Gateway string
	// Metrics is empty when the node serves no metrics.
	Metrics string
}

// hosted is one service running in this process.
type hosted struct {
	name     string
	grpcName string
	register func(grpc.ServiceRegistrar)
	policies auth.Table
	close    func() error
	// run, when set, is a background loop started with the server.
	run func(ctx context.Context)
	// db is the service's bbolt file, for online backups; nil for a service with none.
	db *boltdb.DB
}

// deps are what a service may need from its process.
type deps struct {
	dataDir string
	log     *zap.Logger
	cfg     Config
	// identity is set when the process hosts the identity service.
	identity interface {
		auth.AppKeyVerifier
		auth.KeySet
		auth.RevocationChecker
	}
	// revocations is the process's revocation checker, for services that check tokens
	// again later (a long-lived stream); set before any service but identity is built.
	revocations auth.RevocationChecker
	// tokens is the process's access-token verifier, which also verifies reset grants
	// (the card service's); set before any service but identity is built.
	tokens *auth.Verifier
}

// Run hosts cfg.Roles until ctx ends.
func Run(ctx context.Context, cfg Config, log *zap.Logger) error {
	if log == nil {
		log = zap.NewNop()
	}
	if len(cfg.Roles) == 0 {
		return errors.New("node: no roles to run")
	}
	for _, r := range cfg.Roles {
		if !slices.Contains(gateway.Services(), r) {
			return fmt.Errorf("node: unknown role %q (roles: %v)", r, gateway.Services())
		}
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()

	if cfg.GRPC.Addr == "" {
		cfg.GRPC.Addr = "127.0.0.1:9090"
	}
	lis, err := net.Listen("tcp", cfg.GRPC.Addr)
	if err != nil {
		return fmt.Errorf("node: listen on %s: %w", cfg.GRPC.Addr, err)
	}
	defer lis.Close()
	addrs := Addrs{GRPC: lis.Addr().String()}
	if cfg.Identity.Addr == "" && slices.Contains(cfg.Roles, gateway.Identity) {
		// Hosted here: reach it at this listener, as any other client would.
		cfg.Identity = grpcclient.Config{Addr: loopbackAddr(addrs.GRPC)}
	}
	if cfg.Group.Addr == "" && slices.Contains(cfg.Roles, gateway.Group) {
		cfg.Group = grpcclient.Config{Addr: loopbackAddr(addrs.GRPC)}
	}
	if cfg.Card.Addr == "" && slices.Contains(cfg.Roles, gateway.Card) {
		cfg.Card = grpcclient.Config{Addr: loopbackAddr(addrs.GRPC)}
	}
	if cfg.MessagingPeer.Addr == "" && slices.Contains(cfg.Roles, gateway.Messaging) {
		cfg.MessagingPeer = grpcclient.Config{Addr: loopbackAddr(addrs.GRPC)}
	}

	if err := checkStores(cfg.DataDir, cfg.Roles, cfg.AllowEmptyStores, log); err != nil {
		return err
	}
	d := &deps{dataDir: cfg.DataDir, log: log, cfg: cfg}
	var services []*hosted
	defer func() {
		for _, s := range slices.Backward(services) {
			if err := s.close(); err != nil {
				log.Error("close store", zap.String("service", s.name), zap.Error(err))
			}
		}
	}()
	build := func(r string) error {
		// A damaged file panics or faults in bbolt while the service opens it and
		// reads it first: Protect makes that an error naming the file.
		var s *hosted
		err := boltdb.Protect(dbPath(d, r), func() error {
			var err error
			s, err = builders[r](d)
			return err
		})
		if err != nil {
			return fmt.Errorf("node: start %s: %w", r, err)
		}
		services = append(services, s)
		return recordStore(cfg.DataDir, r)
	}
	// Identity first: the token verifier of the process uses it when it is here, and
	// the other services get the verifier's revocation checker.
	if slices.Contains(cfg.Roles, gateway.Identity) {
		if err := build(gateway.Identity); err != nil {
			return err
		}
	}
	var background []func(ctx context.Context)
	tokens, feed, closeIdentity, err := tokenVerifier(d)
	if err != nil {
		return err
	}
	defer closeIdentity()
	d.tokens = tokens
	d.revocations = d.identity
	if feed != nil {
		d.revocations = feed
		background = append(background, feed.Run)
	}
	for _, r := range cfg.Roles {
		if r != gateway.Identity {
			if err := build(r); err != nil {
				return err
			}
		}
	}

	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	metrics := promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg})

	tables := []auth.Table{grpcserver.SystemPolicies(), adminPolicies()}
	admin := &adminServer{stores: map[string]*boltdb.DB{}}
	for _, s := range services {
		if s.db != nil {
			admin.stores[s.name] = s.db
		}
		tables = append(tables, s.policies)
		if s.run != nil {
			background = append(background, s.run)
		}
	}
	table, err := auth.Merge(tables...)
	if err != nil {
		return err
	}
	if cfg.Gateway != nil && cfg.ForwarderToken == "" {
		cfg.ForwarderToken = rand.Text()
	}
	acfg := auth.Config{
		Policies:        table,
		Tokens:          tokens,
		AdminCredential: cfg.AdminCredential,
		ServiceToken:    cfg.ServiceToken,
		ServicePeers:    cfg.ServicePeers,
		Failures:        cfg.AuthFailures,
		ForwarderToken:  cfg.ForwarderToken,
		ForwarderPeers:  cfg.ForwarderPeers,
	}
	if d.identity != nil {
		acfg.AppKeys = d.identity
	}
	srv, err := grpcserver.New(requestLimits(cfg.GRPC, cfg.Messaging), auth.New(acfg), log.Named("grpc"), reg)
	if err != nil {
		return err
	}
	for _, s := range services {
		s.register(srv)
	}
	adminv1.RegisterAdminServiceServer(srv, admin)
	if err := grpcserver.CheckPolicies(srv.Server, table); err != nil {
		return fmt.Errorf("node: %w", err)
	}
	for _, s := range services {
		srv.Health.SetServingStatus(s.grpcName, healthpb.HealthCheckResponse_SERVING)
	}
	writeFailures, err := writeFailuresMetric(reg)
	if err != nil {
		return err
	}
	for _, s := range services {
		if s.db != nil {
			watchStore(s, srv, writeFailures, cfg.StoreProbeInterval, log.Named(s.name))
		}
	}
	if cfg.StoresOpen != nil {
		cfg.StoresOpen(maps.Clone(admin.stores))
	}

	var wg sync.WaitGroup
	errc := make(chan error, 4)
	// fail stops what has started and returns err.
	fail := func(err error) error {
		cancel()
		wg.Wait()
		return err
	}
	wg.Go(func() { errc <- srv.Serve(ctx, lis) })
	if feed != nil {
		// Access tokens are refused until the revocation feed has been read once; wait
		// for it (briefly) so the node is usable as soon as it says it is ready.
		firstSync(ctx, feed, log)
	}
	for _, f := range background {
		wg.Go(func() { f(ctx) })
	}

	if cfg.Gateway != nil {
		gcfg := *cfg.Gateway
		gcfg.ForwarderToken = cfg.ForwarderToken
		gcfg.Upstreams = map[string]grpcclient.Config{}
		for _, name := range gateway.Services() {
			gcfg.Upstreams[name] = grpcclient.Config{Addr: loopbackAddr(addrs.GRPC), Insecure: true}
		}
		if cfg.GRPC.TLS.Enabled() {
			return fail(errors.New("node: an in-process gateway talks to its services over loopback plaintext; run the gateway on its own (umbra serve gateway) to use TLS between them"))
		}
		g, err := gateway.New(ctx, gcfg, log.Named("gateway"))
		if err != nil {
			return fail(err)
		}
		defer g.Close()
		if gcfg.Addr == "" {
			gcfg.Addr = "127.0.0.1:8080"
		}
		if !gcfg.TLS.Enabled() {
			if err := tlsconf.CheckPlaintext("HTTP listener", gcfg.Addr, gcfg.Insecure); err != nil {
				return fail(err)
			}
		}
		glis, err := net.Listen("tcp", gcfg.Addr)
		if err != nil {
			return fail(fmt.Errorf("gateway: listen on %s: %w", gcfg.Addr, err))
		}
		addrs.Gateway = glis.Addr().String()
		wg.Go(func() { errc <- g.Serve(ctx, glis) })
	}
	if cfg.MetricsAddr != "" {
		mlis, err := net.Listen("tcp", cfg.MetricsAddr)
		if err != nil {
			return fail(fmt.Errorf("metrics: listen on %s: %w (another process has it? --metrics-addr '' serves no metrics)", cfg.MetricsAddr, err))
		}
		addrs.Metrics = mlis.Addr().String()
		wg.Go(func() { errc <- gateway.ServeMetrics(ctx, mlis, metrics) })
	}
	log.Info("serving", zap.Strings("roles", cfg.Roles), zap.String("grpc", addrs.GRPC), zap.String("gateway", addrs.Gateway), zap.String("metrics", addrs.Metrics))

	if cfg.Ready != nil {
		if err := cfg.Ready(ctx, addrs); err != nil {
			return fail(err)
		}
	}
	var first error
	select {
	case <-ctx.Done():
	case first = <-errc:
		cancel()
	}
	wg.Wait()
	log.Info("stopped")
	return first
}

// dialPeer connects to another Umbra service for its internal methods: with the
// process's service token, waiting for the peer while it starts.
func dialPeer(d *deps, c grpcclient.Config) (*grpc.ClientConn, error) {
	if c.Addr == "" {
		return nil, errors.New("no address")
	}
	c.ServiceToken, c.Peer = d.cfg.ServiceToken, true
	return grpcclient.Dial(c)
}

// optionalPeer dials the peer c for a service whose log is log, when c has an address,
// and adds the connection to closers. Without an address it logs without (what the
// service does without that peer) and returns nil.
func optionalPeer(d *deps, log *zap.Logger, c grpcclient.Config, closers *closers, without string) (*grpc.ClientConn, error) {
	if c.Addr == "" {
		log.Warn(without)
		return nil, nil
	}
	conn, err := dialPeer(d, c)
	if err != nil {
		return nil, err
	}
	*closers = append(*closers, conn.Close)
	return conn, nil
}

// closers are what a service built so far must release, in order.
type closers []func() error

// close runs them all, last first.
func (c closers) close() error {
	var errs []error
	for _, f := range slices.Backward(c) {
		errs = append(errs, f())
	}
	return errors.Join(errs...)
}

// loopbackAddr turns a wildcard listen address into one a client can dial.
func loopbackAddr(addr string) string {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return addr
	}
	if ip := net.ParseIP(host); host == "" || ip != nil && ip.IsUnspecified() {
		host = "127.0.0.1"
	}
	return net.JoinHostPort(host, port)
}

// tokenVerifier returns the access-token verifier of the process, and the revocation
// feed it follows when it reaches the identity service remotely. A process that hosts
// the identity service asks it directly, whatever else it hosts: a revocation is in
// its store once RevokeTokens has answered, so every service of the process refuses
// the revoked tokens from the next call on (the README's walk-through relies on it).
func tokenVerifier(d *deps) (*auth.Verifier, *auth.RevocationFeed, func(), error) {
	if d.identity != nil {
		return auth.NewVerifier(d.identity, d.identity, d.cfg.Issuer, nil), nil, func() {}, nil
	}
	icfg := d.cfg.Identity
	icfg.ServiceToken, icfg.Peer = d.cfg.ServiceToken, true
	conn, err := grpcclient.Dial(icfg)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("node: identity service: %w", err)
	}
	remote := auth.Remote{Client: identityv1.NewIdentityServiceClient(conn)}
	feed := auth.NewRevocationFeed(remote, nil)
	return auth.NewVerifier(remote, feed, d.cfg.Issuer, nil), feed, func() { conn.Close() }, nil
}

// firstSync reads the revocation feed once, retrying for a few seconds; a failure is
// logged and left to the feed's own loop.
func firstSync(ctx context.Context, feed *auth.RevocationFeed, log *zap.Logger) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	for {
		err := feed.Sync(ctx)
		if err == nil {
			return
		}
		select {
		case <-ctx.Done():
			log.Warn("revocation feed not read yet; access tokens are refused until it is", zap.Error(err))
			return
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func dbPath(d *deps, name string) string { return filepath.Join(d.dataDir, name+".db") }
