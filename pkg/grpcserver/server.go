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
	// MaxRecvBytes bounds a request message; 0 means 4 MiB.
	MaxRecvBytes int
	// ShutdownGrace is how long in-flight calls may finish at shutdown; 0 means 10 s.
	ShutdownGrace time.Duration
}

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

// Server is a gRPC server with its health service.
type Server struct {
	*grpc.Server
	Health *health.Server
	health *healthServer // Health with the reasons of SetNotServing
	cfg    Config
	log    *zap.Logger
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
	if cfg.ShutdownGrace == 0 {
		cfg.ShutdownGrace = 10 * time.Second
	}
	m, err := newMetrics(reg)
	if err != nil {
		return nil, err
	}
	opts := []grpc.ServerOption{
		grpc.MaxRecvMsgSize(cfg.MaxRecvBytes),
		grpc.ChainUnaryInterceptor(recoverUnary(log), observeUnary(log, m), errorsUnary(log), authn.UnaryInterceptor()),
		grpc.ChainStreamInterceptor(recoverStream(log), observeStream(log, m), errorsStream(log), authn.StreamInterceptor()),
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
	s := &Server{Server: grpc.NewServer(opts...), Health: health.NewServer(), cfg: cfg, log: log}
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
