// Package node runs Umbra roles in one process: the services it is given, on one gRPC
// listener, optionally with the REST gateway beside them. `umbra serve <role>` runs one
// role; `umbra serve all` and `umbra dev` run them all.
package node

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"net"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.uber.org/zap"
	"google.golang.org/grpc"

	"github.com/umbra-e2ee/umbra/gateway"
	"github.com/umbra-e2ee/umbra/internal/boltdb"
	"github.com/umbra-e2ee/umbra/internal/grpcserver"
	"github.com/umbra-e2ee/umbra/pkg/auth"
	"github.com/umbra-e2ee/umbra/pkg/grpcclient"
	identityv1 "github.com/umbra-e2ee/umbra/proto/umbra/identity/v1"
	"github.com/umbra-e2ee/umbra/services/backup"
	"github.com/umbra-e2ee/umbra/services/card"
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
	// Store, when set, is a PostgreSQL connection string (postgres://...): the hosted
	// services keep their state in that database, each in a schema of its own
	// (umbra_<service>), instead of bbolt files in DataDir. Every hosted service must
	// have a PostgreSQL engine (PostgresRoles); one without is refused at start.
	Store string
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
	// Peers say how this process's services reach the services it does not host.
	Peers Peers
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
	// Issuer is the access tokens' "iss": the identity service's only setting, which
	// every process's token verifier checks too.
	Issuer string
	// Card, Backup, Group and Messaging configure each service when the process hosts
	// it; the zero value of each is its defaults, but Backup's Secret is required. The
	// node fills in what it provides: Card's Grants (the process's token verifier) and
	// Messaging's Revocations (its revocation checker), unless they are set.
	Card      card.Config
	Backup    backup.Config
	Group     group.Config
	Messaging messaging.Config
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

// Peers say how a process's services reach the services it does not host, as internal
// callers with Config.ServiceToken. An empty field of a service the process hosts means
// its own listener.
type Peers struct {
	// Identity serves signing keys and revocations. A process that hosts the identity
	// service (alone, or with others as in `umbra dev` and `serve all`) checks tokens
	// against its store, so a revocation holds on the next call; any other process
	// follows the identity service's revocation feed over gRPC, within
	// auth.DefaultRevocationPoll.
	Identity grpcclient.Config
	// Card serves the group service (members' active cards, card events) and the
	// messaging service (whose card a message's sender card is).
	Card grpcclient.Config
	// Group serves the messaging service; without it group conversations are refused.
	Group grpcclient.Config
	// Messaging serves the group and backup services (events into members' streams).
	Messaging grpcclient.Config
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
	// ready, set for a store in PostgreSQL, checks that its database answers and
	// accepts writes (pgdb.DB.Ready), for the service's readiness.
	ready func(ctx context.Context) error
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

// Run hosts cfg.Roles until ctx ends. It starts the process in phases: the gRPC
// listener, the services over their stores, the gRPC server that serves them, and
// the servers and loops that run until ctx ends (serve).
func Run(ctx context.Context, cfg Config, log *zap.Logger) error {
	if log == nil {
		log = zap.NewNop()
	}
	if err := checkRoles(cfg.Roles); err != nil {
		return err
	}
	lis, err := listenGRPC(&cfg.GRPC)
	if err != nil {
		return err
	}
	defer lis.Close()
	cfg.Peers = cfg.Peers.hostedAt(cfg.Roles, loopbackAddr(lis.Addr().String()))
	if cfg.Gateway != nil && cfg.ForwarderToken == "" {
		cfg.ForwarderToken = rand.Text()
	}

	if cfg.Store != "" {
		if err := checkPostgres(cfg); err != nil {
			return err
		}
	} else if err := checkStores(cfg.DataDir, cfg.Roles, cfg.AllowEmptyStores, log); err != nil {
		return err
	}
	svcs, err := startServices(cfg, log)
	if err != nil {
		return err
	}
	defer svcs.close()

	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	srv, err := newGRPCServer(cfg, svcs, reg, log)
	if err != nil {
		return err
	}
	if err := watchStores(cfg, svcs, srv, reg, log); err != nil {
		return err
	}
	return serve(ctx, cfg, lis, srv, svcs, promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg}), log)
}

// PostgresRoles are the services that have a PostgreSQL engine (all five since issue 16;
// a service added later is refused with --store until its engine is built).
var PostgresRoles = []string{gateway.Identity, gateway.Card, gateway.Backup, gateway.Group, gateway.Messaging}

// checkPostgres refuses a connection string that is not PostgreSQL's, and a role whose
// service has no PostgreSQL engine yet: never a start that looks like it works.
func checkPostgres(cfg Config) error {
	if !strings.HasPrefix(cfg.Store, "postgres://") && !strings.HasPrefix(cfg.Store, "postgresql://") {
		return errors.New("node: --store takes a PostgreSQL connection string, postgres://user:password@host:port/database (leave it empty for bbolt files in --data)")
	}
	for _, r := range cfg.Roles {
		if !slices.Contains(PostgresRoles, r) {
			return fmt.Errorf("the %s service has no PostgreSQL engine yet; see issue 16 (services with one: %s; run the %s service over bbolt, with --data and no --store)",
				r, strings.Join(PostgresRoles, ", "), r)
		}
	}
	if len(cfg.AllowEmptyStores) > 0 {
		return errors.New("node: --allow-empty-store is about bbolt files in --data; a store in PostgreSQL has no file to lose")
	}
	return nil
}

// checkRoles refuses an empty or unknown role.
func checkRoles(roles []string) error {
	if len(roles) == 0 {
		return errors.New("node: no roles to run")
	}
	for _, r := range roles {
		if !slices.Contains(gateway.Services(), r) {
			return fmt.Errorf("node: unknown role %q (roles: %v)", r, gateway.Services())
		}
	}
	return nil
}

// listenGRPC opens the services' listener, at 127.0.0.1:9090 when c has no address.
func listenGRPC(c *grpcserver.Config) (net.Listener, error) {
	if c.Addr == "" {
		c.Addr = "127.0.0.1:9090"
	}
	lis, err := net.Listen("tcp", c.Addr)
	if err != nil {
		return nil, fmt.Errorf("node: listen on %s: %w", c.Addr, err)
	}
	return lis, nil
}

// hostedAt returns p with every service of roles that p has no address for reached at
// addr, this process's own listener, as any other client would reach it.
func (p Peers) hostedAt(roles []string, addr string) Peers {
	for role, peer := range map[string]*grpcclient.Config{
		gateway.Identity:  &p.Identity,
		gateway.Card:      &p.Card,
		gateway.Group:     &p.Group,
		gateway.Messaging: &p.Messaging,
	} {
		if peer.Addr == "" && slices.Contains(roles, role) {
			*peer = grpcclient.Config{Addr: addr}
		}
	}
	return p
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

// optionalPeer dials the peer service (named peer) at c for a service whose log is
// log, when c has an address, adds the connection to closers, and returns the service's
// client of the peer over it (client). Without an address it logs without (what the
// service does without that peer) and returns the zero C: a nil interface, which the
// service reads as no peer. When the dial fails it releases closers, as the service
// being built gives up.
func optionalPeer[C any](d *deps, log *zap.Logger, peer string, c grpcclient.Config, closers *closers, without string, client func(*grpc.ClientConn) C) (C, error) {
	var none C
	if c.Addr == "" {
		log.Warn(without)
		return none, nil
	}
	conn, err := dialPeer(d, c)
	if err != nil {
		closers.close()
		return none, fmt.Errorf("%s service: %w", peer, err)
	}
	*closers = append(*closers, conn.Close)
	return client(conn), nil
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
	icfg := d.cfg.Peers.Identity
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

// StorePath is the bbolt file of the store name (a service's: "card") in the data
// folder dir.
func StorePath(dir, name string) string { return filepath.Join(dir, name+".db") }

func dbPath(d *deps, name string) string { return StorePath(d.dataDir, name) }
