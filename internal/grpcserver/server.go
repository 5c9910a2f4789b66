// Package grpcserver builds the gRPC server every Umbra role runs: TLS or loopback-only
// plaintext, the auth interceptors, one error mapping, logging, metrics, panic recovery,
// the health and reflection services, and graceful shutdown.
package grpcserver

import (
	"context"
	"errors"
	"fmt"
	"net"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/reflection"

	"github.com/umbra-e2ee/umbra/pkg/auth"
	"github.com/umbra-e2ee/umbra/pkg/tlsconf"
)

// Config is a gRPC listener's configuration.
type Config struct {
	// Addr is the listen address, "127.0.0.1:9090" by default.
	Addr string
	TLS  tlsconf.Server
	// Insecure allows plaintext on an address that is not loopback.
	Insecure bool
	// MaxRecvBytes bounds every request message, the largest any method may receive:
	// gRPC refuses a message that announces more before reading it. 0 means 4 MiB.
	MaxRecvBytes int
	// SmallRecvBytes bounds the requests of methods whose messages hold no bytes and
	// no repeated fields (ids, names, numbers); 0 means DefaultSmallRecvBytes.
	SmallRecvBytes int
	// BulkRecvBytes bounds the requests of the other methods, unless MethodRecvBytes
	// names them; 0 means MaxRecvBytes.
	BulkRecvBytes int
	// MethodRecvBytes bounds the requests of the methods it names (full method
	// names), each at most MaxRecvBytes.
	MethodRecvBytes map[string]int
	// MaxConcurrentStreams bounds the calls in progress on one connection; 0 means
	// DefaultMaxConcurrentStreams.
	MaxConcurrentStreams uint32
	// ShutdownGrace is how long in-flight calls may finish at shutdown; 0 means 10 s.
	ShutdownGrace time.Duration
}

// Defaults of Config.
const (
	DefaultSmallRecvBytes = 64 << 10
	// DefaultMaxConcurrentStreams is far above what one client needs (a stream and a
	// few calls), and leaves room for a REST gateway, whose one connection carries
	// every REST client's calls and streams.
	DefaultMaxConcurrentStreams = 1000
)

// Keepalive. The server pings a connection idle for KeepaliveTime and closes it if the
// ping is not answered within KeepaliveTimeout, so the streams of a client that
// vanished end; it tolerates client pings no more often than KeepaliveMinTime, with or
// without calls in progress, and closes the connection of a client that pings more
// often ("too_many_pings"). pkg/grpcclient pings every grpcclient.KeepaliveTime, above
// KeepaliveMinTime.
const (
	KeepaliveTime    = time.Minute
	KeepaliveTimeout = 20 * time.Second
	KeepaliveMinTime = 20 * time.Second
)

// SystemPolicies are the policies of the methods every server registers itself: health
// checks are public (Kubernetes probes carry no credential), and so is reflection, which
// describes the same API the OpenAPI document publishes.
func SystemPolicies() auth.Table {
	return auth.Table{
		"/grpc.health.v1.Health/Check":                                   auth.Public,
		"/grpc.health.v1.Health/List":                                    auth.Public,
		"/grpc.health.v1.Health/Watch":                                   auth.Public,
		"/grpc.reflection.v1.ServerReflection/ServerReflectionInfo":      auth.Public,
		"/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo": auth.Public,
	}
}

// Server is a gRPC server with its health service. Register services on it (it is a
// grpc.ServiceRegistrar), not on the embedded grpc.Server, so that their unary calls
// are authenticated before their requests are read and their requests are bounded.
type Server struct {
	*grpc.Server
	Health *health.Server
	health *healthServer // Health with the reasons of SetNotServing
	cfg    Config
	log    *zap.Logger
	authn  *auth.Authenticator
	// recvLimits bounds each registered method's requests; written by RegisterService
	// before Serve, read only after.
	recvLimits map[string]int
}

// New builds a server that authenticates with authn (whose table must include
// SystemPolicies) and reports to reg. Register the services on it, then call Serve.
func New(cfg Config, authn *auth.Authenticator, log *zap.Logger, reg prometheus.Registerer) (*Server, error) {
	if cfg.Addr == "" {
		cfg.Addr = "127.0.0.1:9090"
	}
	if cfg.MaxRecvBytes == 0 {
		cfg.MaxRecvBytes = 4 << 20
	}
	if cfg.SmallRecvBytes == 0 {
		cfg.SmallRecvBytes = DefaultSmallRecvBytes
	}
	if cfg.BulkRecvBytes == 0 {
		cfg.BulkRecvBytes = cfg.MaxRecvBytes
	}
	if cfg.MaxConcurrentStreams == 0 {
		cfg.MaxConcurrentStreams = DefaultMaxConcurrentStreams
	}
	for m, n := range cfg.MethodRecvBytes {
		if n < 1 || n > cfg.MaxRecvBytes {
			return nil, fmt.Errorf("grpcserver: request limit of %s: %d bytes: want 1 to the server's %d", m, n, cfg.MaxRecvBytes)
		}
	}
	if cfg.SmallRecvBytes < 1 || cfg.SmallRecvBytes > cfg.MaxRecvBytes || cfg.BulkRecvBytes < 1 || cfg.BulkRecvBytes > cfg.MaxRecvBytes {
		return nil, fmt.Errorf("grpcserver: request limits %d (small) and %d (bulk) bytes: want 1 to the server's %d", cfg.SmallRecvBytes, cfg.BulkRecvBytes, cfg.MaxRecvBytes)
	}
	if cfg.ShutdownGrace == 0 {
		cfg.ShutdownGrace = 10 * time.Second
	}
	m, err := newMetrics(reg)
	if err != nil {
		return nil, err
	}
	s := &Server{Health: health.NewServer(), cfg: cfg, log: log, authn: authn, recvLimits: map[string]int{}}
	opts := []grpc.ServerOption{
		grpc.MaxRecvMsgSize(cfg.MaxRecvBytes),
		grpc.InTapHandle(m.tap(authn.TapHandle())),
		grpc.MaxConcurrentStreams(cfg.MaxConcurrentStreams),
		grpc.KeepaliveParams(keepalive.ServerParameters{Time: KeepaliveTime, Timeout: KeepaliveTimeout}),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: KeepaliveMinTime, PermitWithoutStream: true}),
		grpc.ChainUnaryInterceptor(recoverUnary(log), observeUnary(log, m), errorsUnary(log), authn.UnaryInterceptor(), s.limitUnary),
		grpc.ChainStreamInterceptor(recoverStream(log), observeStream(log, m), errorsStream(log), authn.StreamInterceptor(), s.limitStream),
	}
	if cfg.TLS.Enabled() {
		tc, err := cfg.TLS.Config()
		if err != nil {
			return nil, err
		}
		opts = append(opts, grpc.Creds(credentials.NewTLS(tc)))
	} else if err := tlsconf.CheckPlaintext("gRPC listener", cfg.Addr, cfg.Insecure); err != nil {
		return nil, err
	}
	s.Server = grpc.NewServer(opts...)
	s.health = &healthServer{Server: s.Health, reasons: map[string]string{}}
	healthpb.RegisterHealthServer(s.Server, s.health)
	reflection.Register(s.Server)
	return s, nil
}

// Serve serves on lis until ctx ends, then stops gracefully: new calls are refused,
// health turns NOT_SERVING, and calls in flight get ShutdownGrace to finish.
func (s *Server) Serve(ctx context.Context, lis net.Listener) error {
	errc := make(chan error, 1)
	go func() { errc <- s.Server.Serve(lis) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	s.Health.Shutdown()
	done := make(chan struct{})
	go func() { s.GracefulStop(); close(done) }()
	select {
	case <-done:
	case <-time.After(s.cfg.ShutdownGrace):
		s.log.Warn("grace period over; closing remaining calls", zap.Duration("grace", s.cfg.ShutdownGrace))
		s.Stop()
	}
	if err := <-errc; err != nil && !errors.Is(err, grpc.ErrServerStopped) {
		return err
	}
	return nil
}

// CheckPolicies returns an error naming every method registered on srv that has no
// policy in table. Servers call it before serving, and tests call it too.
func CheckPolicies(srv *grpc.Server, table auth.Table) error {
	var missing []error
	for svc, info := range srv.GetServiceInfo() {
		for _, m := range info.Methods {
			name := "/" + svc + "/" + m.Name
			if _, ok := table[name]; !ok {
				missing = append(missing, fmt.Errorf("method %s has no access policy", name))
			}
		}
	}
	return errors.Join(missing...)
}
