package node

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"slices"
	"sync"

	"go.uber.org/zap"

	"github.com/umbra-e2ee/umbra/gateway"
	"github.com/umbra-e2ee/umbra/internal/grpcserver"
	"github.com/umbra-e2ee/umbra/pkg/grpcclient"
	"github.com/umbra-e2ee/umbra/pkg/tlsconf"
)

// serve runs the gRPC server on lis, the services' background loops, and the gateway
// and the metrics listener when cfg asks for them, then calls cfg.Ready; it returns
// once ctx has ended or a server has failed, and everything has stopped.
func serve(ctx context.Context, cfg Config, lis net.Listener, srv *grpcserver.Server, svcs *services, metrics http.Handler, log *zap.Logger) error {
	r := newRunner(ctx)
	addrs := Addrs{GRPC: lis.Addr().String()}
	r.serve(func(ctx context.Context) error { return srv.Serve(ctx, lis) })
	if svcs.feed != nil {
		// Access tokens are refused until the revocation feed has been read once; wait
		// for it (briefly) so the node is usable as soon as it says it is ready.
		firstSync(r.ctx, svcs.feed, log)
	}
	for _, loop := range svcs.background() {
		r.loop(loop)
	}
	if cfg.Gateway != nil {
		addr, err := startGateway(r, cfg, addrs.GRPC, log)
		if err != nil {
			return r.stop(err)
		}
		addrs.Gateway = addr
	}
	if cfg.MetricsAddr != "" {
		mlis, err := net.Listen("tcp", cfg.MetricsAddr)
		if err != nil {
			return r.stop(fmt.Errorf("metrics: listen on %s: %w (another process has it? --metrics-addr '' serves no metrics)", cfg.MetricsAddr, err))
		}
		addrs.Metrics = mlis.Addr().String()
		r.serve(func(ctx context.Context) error { return gateway.ServeMetrics(ctx, mlis, metrics) })
	}
	log.Info("serving", zap.Strings("roles", cfg.Roles), zap.String("grpc", addrs.GRPC), zap.String("gateway", addrs.Gateway), zap.String("metrics", addrs.Metrics))

	if cfg.Ready != nil {
		if err := cfg.Ready(r.ctx, addrs); err != nil {
			return r.stop(err)
		}
	}
	err := r.wait()
	log.Info("stopped")
	return err
}

// startGateway runs the REST gateway of cfg.Gateway on r, in front of the services at
// grpcAddr, and returns its address.
func startGateway(r *runner, cfg Config, grpcAddr string, log *zap.Logger) (string, error) {
	if cfg.GRPC.TLS.Enabled() {
		return "", errors.New("node: an in-process gateway talks to its services over loopback plaintext; run the gateway on its own (umbra serve gateway) to use TLS between them")
	}
	gcfg := *cfg.Gateway
	gcfg.ForwarderToken = cfg.ForwarderToken
	gcfg.Upstreams = map[string]grpcclient.Config{}
	for _, name := range gateway.Services() {
		gcfg.Upstreams[name] = grpcclient.Config{Addr: loopbackAddr(grpcAddr), Insecure: true}
	}
	g, err := gateway.New(r.ctx, gcfg, log.Named("gateway"))
	if err != nil {
		return "", err
	}
	r.atStop(g.Close)
	if gcfg.Addr == "" {
		gcfg.Addr = "127.0.0.1:8080"
	}
	if !gcfg.TLS.Enabled() {
		if err := tlsconf.CheckPlaintext("HTTP listener", gcfg.Addr, gcfg.Insecure); err != nil {
			return "", err
		}
	}
	glis, err := net.Listen("tcp", gcfg.Addr)
	if err != nil {
		return "", fmt.Errorf("gateway: listen on %s: %w", gcfg.Addr, err)
	}
	r.serve(func(ctx context.Context) error { return g.Serve(ctx, glis) })
	return glis.Addr().String(), nil
}

// A runner runs a node's servers and background loops until its context ends or a
// server fails.
type runner struct {
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
	// errc receives each server's end: one slot per listener (gRPC, gateway,
	// metrics) and a spare, so that no server blocks on it.
	errc chan error
	// stopped are called once everything has stopped, last first.
	stopped []func()
}

func newRunner(ctx context.Context) *runner {
	ctx, cancel := context.WithCancel(ctx)
	return &runner{ctx: ctx, cancel: cancel, errc: make(chan error, 4)}
}

// serve runs a server until the runner's context ends.
func (r *runner) serve(f func(ctx context.Context) error) {
	r.wg.Go(func() { r.errc <- f(r.ctx) })
}

// loop runs a background loop until the runner's context ends.
func (r *runner) loop(f func(ctx context.Context)) {
	r.wg.Go(func() { f(r.ctx) })
}

// atStop has f called once everything has stopped.
func (r *runner) atStop(f func()) { r.stopped = append(r.stopped, f) }

// wait returns once the runner's context has ended, or a server has failed (the
// first server's error), and everything has stopped.
func (r *runner) wait() error {
	var first error
	select {
	case <-r.ctx.Done():
	case first = <-r.errc:
	}
	return r.stop(first)
}

// stop stops what has started, and returns err.
func (r *runner) stop(err error) error {
	r.cancel()
	r.wg.Wait()
	for _, f := range slices.Backward(r.stopped) {
		f()
	}
	return err
}
