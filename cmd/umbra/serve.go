package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/umbra-e2ee/umbra/clients/web"
	"github.com/umbra-e2ee/umbra/gateway"
	"github.com/umbra-e2ee/umbra/internal/grpcserver"
	"github.com/umbra-e2ee/umbra/internal/node"
	"github.com/umbra-e2ee/umbra/pkg/auth"
	"github.com/umbra-e2ee/umbra/pkg/grpcclient"
	"github.com/umbra-e2ee/umbra/pkg/tlsconf"
	"github.com/umbra-e2ee/umbra/services/backup"
	"github.com/umbra-e2ee/umbra/services/card"
	"github.com/umbra-e2ee/umbra/services/group"
	"github.com/umbra-e2ee/umbra/services/messaging"
)

func runDev(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("dev", stderr)
	// The web chat is served by umbra dev only, with its development sign-in.
	cfg := node.DevConfig{Out: stdout, Web: web.Files()}
	var cors listFlag
	fs.StringVar(&cfg.GRPCAddr, "grpc-addr", "127.0.0.1:9090", "gRPC listen address (loopback)")
	fs.StringVar(&cfg.HTTPAddr, "http-addr", "127.0.0.1:8080", "REST gateway listen address (loopback)")
	fs.StringVar(&cfg.MetricsAddr, "metrics-addr", "127.0.0.1:9100", "HTTP address for Prometheus /metrics, a listener of its own (loopback; empty: none)")
	fs.StringVar(&cfg.DataDir, "data", "./umbra-data", "folder for the services' bbolt files")
	fs.StringVar(&cfg.AdminCredential, "admin-token", "", "admin credential (default: generated once and kept in the data folder)")
	fs.Var(&cors, "cors-origins", "comma-separated browser origins allowed to call the REST API")
	logLevel := fs.String("log-level", "info", "log level: debug, info, warn, error")
	fs.BoolVar(&cfg.Pprof, "pprof", false, "serve Go's profiler at /debug/pprof/ on the REST listener")
	var tuning tuningFlags
	tuning.register(fs)
	var allowEmpty storesFlag
	registerAllowEmpty(fs, &allowEmpty)
	if err := parse(fs, args); err != nil {
		return err
	}
	cfg.CORSOrigins = cors
	cfg.AllowEmptyStores = allowEmpty
	cfg.Tune = tuning.apply
	log, err := newLogger(*logLevel, true, stderr)
	if err != nil {
		return err
	}
	defer log.Sync()
	return node.RunDev(ctx, cfg, log)
}

// serveFlags are the flags of `umbra serve`.
type serveFlags struct {
	grpc        grpcserver.Config
	httpAddr    string
	metricsAddr string
	dataDir     string
	store       string
	peerTLS     tlsconf.Client
	peers       map[string]*string
	adminToken  string
	serviceTok  string
	forwarder   string
	fwdPeers    listFlag
	servicePeer listFlag
	issuer      string
	maxBody     int64
	cors        listFlag
	logLevel    string
	tuning      tuningFlags
	allowEmpty  storesFlag

	backupSecretFlag string
	backupSecretFile string
}

// backupSecret reads the backup service's server secret from --backup-secret-file or
// --backup-secret (UMBRA_BACKUP_SECRET); the service refuses one that is missing or
// short.
func (f *serveFlags) backupSecret() ([]byte, error) {
	var secret []byte
	switch {
	case f.backupSecretFile != "" && f.backupSecretFlag != "":
		return nil, errors.New("give --backup-secret or --backup-secret-file, not both")
	case f.backupSecretFile != "":
		b, err := os.ReadFile(f.backupSecretFile)
		if err != nil {
			return nil, fmt.Errorf("--backup-secret-file: %w", err)
		}
		secret = bytes.TrimSpace(b)
	default:
		secret = []byte(f.backupSecretFlag)
	}
	return secret, nil // its length is the backup service's to check
}

func (f *serveFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&f.grpc.Addr, "grpc-addr", "127.0.0.1:9090", "gRPC listen address")
	fs.StringVar(&f.httpAddr, "http-addr", "127.0.0.1:8080", "REST gateway listen address (gateway and all)")
	fs.StringVar(&f.metricsAddr, "metrics-addr", "", "HTTP address for Prometheus /metrics, a plain-HTTP listener of its own, never the gateway's (empty: none)")
	fs.StringVar(&f.dataDir, "data", "/var/lib/umbra", "folder for the service's bbolt file")
	fs.StringVar(&f.store, "store", "", "keep the service's state in PostgreSQL instead of a bbolt file in --data: a connection string, postgres://user:password@host:5432/database "+
		"(several hosts with target_session_attrs=read-write for failover; prefer UMBRA_STORE or PGPASSWORD: flags show in ps). Services with a PostgreSQL engine today: "+strings.Join(node.PostgresRoles, ", "))
	fs.StringVar(&f.grpc.TLS.CertFile, "tls-cert", "", "server certificate (PEM)")
	fs.StringVar(&f.grpc.TLS.KeyFile, "tls-key", "", "server key (PEM)")
	fs.StringVar(&f.grpc.TLS.ClientCAFile, "tls-client-ca", "", "CA that signs client certificates (enables mTLS)")
	fs.BoolVar(&f.grpc.TLS.RequireClientCert, "tls-require-client-cert", false, "refuse clients without a certificate")
	fs.BoolVar(&f.grpc.Insecure, "insecure", false, "allow plaintext beyond loopback (never in production)")
	fs.StringVar(&f.peerTLS.CAFile, "peer-tls-ca", "", "CA that signs the other services' certificates")
	fs.StringVar(&f.peerTLS.CertFile, "peer-tls-cert", "", "this process's client certificate for mTLS to other services")
	fs.StringVar(&f.peerTLS.KeyFile, "peer-tls-key", "", "key of --peer-tls-cert")
	f.peers = map[string]*string{}
	for _, s := range gateway.Services() {
		f.peers[s] = fs.String(s+"-addr", "", "gRPC address of the "+s+" service (default: this process, or --grpc-addr)")
	}
	fs.StringVar(&f.adminToken, "admin-token", "", "admin credential for CreateApp and other admin calls")
	fs.StringVar(&f.serviceTok, "service-token", "", "shared secret for service-to-service calls (when not using mTLS)")
	fs.StringVar(&f.forwarder, "forwarder-token", "", "shared secret with which the gateway tells the services its clients' addresses, for the failed-credential limit (give the same to the gateway and the services; prefer UMBRA_FORWARDER_TOKEN)")
	fs.Var(&f.fwdPeers, "forwarder-peers", "certificate names of gateways (over mTLS) whose clients' addresses the services believe, for the failed-credential limit (comma-separated)")
	fs.Var(&f.servicePeer, "service-peers", "certificate names accepted as internal callers over mTLS (comma-separated)")
	fs.StringVar(&f.issuer, "issuer", "", "access tokens' issuer (default \"umbra\")")
	fs.Int64Var(&f.maxBody, "max-body-bytes", gateway.DefaultMaxBodyBytes, "largest REST request body")
	fs.Var(&f.cors, "cors-origins", "comma-separated browser origins allowed to call the REST API")
	fs.StringVar(&f.logLevel, "log-level", "info", "log level: debug, info, warn, error")
	fs.StringVar(&f.backupSecretFlag, "backup-secret", "", "the backup service's server secret, at least 32 bytes (prefer --backup-secret-file or UMBRA_BACKUP_SECRET: flags show in ps)")
	fs.StringVar(&f.backupSecretFile, "backup-secret-file", "", "file holding the backup service's server secret (a mounted Kubernetes Secret)")
	f.tuning.register(fs)
	registerAllowEmpty(fs, &f.allowEmpty)
}

// peer returns how to reach service s.
func (f *serveFlags) peer(s string) grpcclient.Config {
	addr := *f.peers[s]
	if addr == "" {
		addr = f.grpc.Addr
	}
	return grpcclient.Config{Addr: addr, TLS: f.peerTLS, Insecure: f.grpc.Insecure, ServiceToken: f.serviceTok}
}

func runServe(ctx context.Context, args []string, _, stderr io.Writer) error {
	roles := append(gateway.Services(), "gateway", "all")
	if len(args) == 0 || !slices.Contains(roles, args[0]) {
		return usagef(stderr, "usage: umbra serve <%s> [flags]", strings.Join(roles, "|"))
	}
	role := args[0]
	fs := newFlagSet("serve "+role, stderr)
	var f serveFlags
	f.register(fs)
	if err := parse(fs, args[1:]); err != nil {
		return err
	}
	log, err := newLogger(f.logLevel, false, stderr)
	if err != nil {
		return err
	}
	defer log.Sync()

	if !f.grpc.TLS.Enabled() && !f.grpc.Insecure {
		return errors.New("umbra serve needs TLS (--tls-cert and --tls-key, and --tls-client-ca for mTLS between services) or, for a trusted network only, --insecure")
	}
	gw := &gateway.Config{
		Addr:         f.httpAddr,
		TLS:          tlsconf.Server{CertFile: f.grpc.TLS.CertFile, KeyFile: f.grpc.TLS.KeyFile},
		Insecure:     f.grpc.Insecure,
		MaxBodyBytes: f.maxBody,
		CORSOrigins:  f.cors,
	}
	gw.ForwarderToken = f.forwarder
	if role == "gateway" {
		// Clients reach every service's gRPC methods at the gateway's --grpc-addr too.
		gw.GRPCAddr = f.grpc.Addr
		gw.Policies = node.Policies()
		gw.Upstreams = map[string]grpcclient.Config{}
		for _, s := range gateway.Services() {
			p := f.peer(s)
			p.ServiceToken = "" // the gateway is no service: it never calls internal methods
			gw.Upstreams[s] = p
		}
		reg := prometheus.NewRegistry()
		reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
		gw.Metrics, gw.MetricsAddr = promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg}), f.metricsAddr
		return gateway.Run(ctx, *gw, log.Named("gateway"))
	}
	cfg := node.Config{
		Roles:           []string{role},
		DataDir:         f.dataDir,
		Store:           f.store,
		GRPC:            f.grpc,
		MetricsAddr:     f.metricsAddr,
		AdminCredential: f.adminToken,
		ServiceToken:    f.serviceTok,
		ServicePeers:    f.servicePeer,
		ForwarderToken:  f.forwarder,
		ForwarderPeers:  f.fwdPeers,
		Issuer:          f.issuer,
	}
	cfg.AllowEmptyStores = f.allowEmpty
	f.tuning.apply(&cfg)
	switch role {
	case "all":
		cfg.Roles = gateway.Services()
		if f.httpAddr != "" {
			cfg.Gateway = gw
		}
	case gateway.Identity:
	default:
		if *f.peers[gateway.Identity] == "" {
			return fmt.Errorf("--identity-addr is required: the %s service verifies tokens with the identity service", role)
		}
		cfg.Peers.Identity = f.peer(gateway.Identity)
	}
	if role == gateway.Messaging && *f.peers[gateway.Group] != "" {
		// Group conversations are refused without it.
		cfg.Peers.Group = f.peer(gateway.Group)
	}
	// The peers a role calls and cannot do without.
	for _, need := range requiredPeers[role] {
		if *f.peers[need] == "" {
			return fmt.Errorf("--%s-addr is required: the %s service calls the %s service", need, role, need)
		}
	}
	switch role {
	case gateway.Group:
		cfg.Peers.Card, cfg.Peers.Messaging = f.peer(gateway.Card), f.peer(gateway.Messaging)
	case gateway.Messaging:
		cfg.Peers.Card = f.peer(gateway.Card)
	case gateway.Backup:
		cfg.Peers.Messaging = f.peer(gateway.Messaging)
	}
	if role == gateway.Backup || role == "all" {
		secret, err := f.backupSecret()
		if err != nil {
			return err
		}
		cfg.Backup.Secret = secret
	}
	return node.Run(ctx, cfg, log)
}

// requiredPeers are the services each role calls besides identity.
var requiredPeers = map[string][]string{
	gateway.Group:     {gateway.Card, gateway.Messaging},
	gateway.Backup:    {gateway.Messaging},
	gateway.Messaging: {gateway.Card}, // the sender card of every ENCRYPTED message
}

// tuningFlags are the services' limits, the same for `umbra dev` and `umbra serve`.
type tuningFlags struct {
	searchRate  float64
	searchBurst int
	ktInterval  time.Duration
	ktOrigin    string
	groupRate   float64
	groupBurst  int
	messaging   messaging.Config
	backup      backup.Config
	// streams is --max-concurrent-streams.
	streams      *uint
	authFailures auth.FailureLimit
}

func (t *tuningFlags) register(fs *flag.FlagSet) {
	fs.Float64Var(&t.searchRate, "card-search-rate", card.DefaultSearchRate, "SearchCards calls per second one identity may make on average")
	fs.IntVar(&t.searchBurst, "card-search-burst", card.DefaultSearchBurst, "SearchCards calls one identity may make at once")
	fs.DurationVar(&t.ktInterval, "kt-interval", card.DefaultCheckpointInterval, "how often the card service appends new card events to its key transparency log and signs a checkpoint")
	fs.StringVar(&t.ktOrigin, "kt-origin", "", `the key transparency log's origin (its checkpoints' first line and its log key's name), e.g. "kt.chat.example.com"; fixed at the card store's first start (default "umbra/kt/<log key id>")`)
	fs.Float64Var(&t.groupRate, "group-call-rate", group.DefaultCallRate, "group service calls per second one identity may make on average, all methods together")
	fs.IntVar(&t.groupBurst, "group-call-burst", group.DefaultCallBurst, "group service calls one identity may make at once")
	fs.Float64Var(&t.messaging.SendRate, "send-rate", messaging.DefaultSendRate, "messages per second one identity may send on average")
	fs.IntVar(&t.messaging.SendBurst, "send-burst", messaging.DefaultSendBurst, "messages one identity may send at once")
	fs.IntVar(&t.messaging.MaxEnvelopeBytes, "max-envelope-bytes", messaging.DefaultMaxEnvelopeBytes, "largest message envelope")
	fs.DurationVar(&t.messaging.Retention, "retention", messaging.DefaultRetention, "how long messages and events are kept")
	fs.IntVar(&t.backup.MaxAttempts, "backup-max-attempts", backup.DefaultMaxAttempts, "failed restores before a backup slot is erased")
	fs.Int64Var(&t.messaging.DeliveryCacheBytes, "delivery-cache-bytes", messaging.DefaultDeliveryCacheBytes, "bytes of recent items kept in memory for live delivery, all streams together (-1: none)")
	var streams uint
	fs.UintVar(&streams, "max-concurrent-streams", grpcserver.DefaultMaxConcurrentStreams, "calls in progress on one gRPC connection (a REST gateway's one connection carries all its clients' calls)")
	t.streams = &streams
	fs.IntVar(&t.authFailures.Burst, "auth-failure-burst", auth.DefaultFailureBurst, "failed app keys, admin credentials or service tokens one address may have at once before it is refused for a while (-1: no limit)")
	fs.DurationVar(&t.authFailures.Refill, "auth-failure-refill", auth.DefaultFailureRefill, "how long one failed credential of an address takes to be forgiven")
}

func (t *tuningFlags) apply(cfg *node.Config) {
	cfg.Card.SearchRate, cfg.Card.SearchBurst = t.searchRate, t.searchBurst
	cfg.Card.CheckpointInterval, cfg.Card.LogOrigin = t.ktInterval, t.ktOrigin
	cfg.Group.CallRate, cfg.Group.CallBurst = t.groupRate, t.groupBurst
	cfg.Messaging = t.messaging
	cfg.GRPC.MaxConcurrentStreams = uint32(min(*t.streams, math.MaxUint32))
	cfg.AuthFailures = t.authFailures
	// The secret is not a tuning: umbra dev generates it, umbra serve reads it.
	cfg.Backup.MaxAttempts = t.backup.MaxAttempts
}
