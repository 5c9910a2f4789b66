// Package grpcclient dials Umbra services: with TLS (and a client certificate for mTLS)
// when configured, plaintext only to loopback unless the operator allows it, and with
// the service token on every call when one service calls another's internal methods.
package grpcclient

import (
	"context"
	"fmt"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/metadata"

	"github.com/umbra-e2ee/umbra/pkg/auth"
	"github.com/umbra-e2ee/umbra/pkg/tlsconf"
)

// Config says how to reach one server.
type Config struct {
	Addr string
	TLS  tlsconf.Client
	// Insecure allows plaintext to an address that is not loopback.
	Insecure bool
	// ServiceToken, when set, is sent on every call for the server's internal methods.
	ServiceToken string
	// Peer marks a connection from one Umbra service to another. Its unary calls wait
	// for the peer to be reachable (up to the call's deadline, or PeerWait when the
	// call has none) instead of failing at once while the connection is down: services
	// start in any order, and a peer that restarts is back within a reconnect.
	Peer bool
}

// PeerWait bounds how long a peer call without a deadline waits for its peer.
const PeerWait = 10 * time.Second

// Keepalive: a connection with calls in progress (a Subscribe stream, a peer's calls)
// pings the server after KeepaliveTime without traffic, and is given up if the ping is
// not answered within KeepaliveTimeout, so a stream to a server that vanished ends
// instead of waiting for TCP. KeepaliveTime is above the servers' enforced minimum
// (grpcserver.KeepaliveMinTime, 20 s), which closes the connection of a client that
// pings more often.
const (
	KeepaliveTime    = 30 * time.Second
	KeepaliveTimeout = 10 * time.Second
)

// reconnect keeps the retry of a lost connection short: the default backoff grows to
// two minutes, far longer than a restarting peer takes to come back.
var reconnect = grpc.ConnectParams{
	Backoff:           backoff.Config{BaseDelay: 100 * time.Millisecond, Multiplier: 1.6, Jitter: 0.2, MaxDelay: 2 * time.Second},
	MinConnectTimeout: 5 * time.Second,
}

// Dial returns a connection to cfg.Addr. It does not wait for the server.
func Dial(cfg Config, opts ...grpc.DialOption) (*grpc.ClientConn, error) {
	if cfg.Addr == "" {
		return nil, fmt.Errorf("grpcclient: no address")
	}
	if cfg.TLS.Enabled() {
		tc, err := cfg.TLS.Config()
		if err != nil {
			return nil, err
		}
		opts = append(opts, grpc.WithTransportCredentials(credentials.NewTLS(tc)))
	} else {
		if err := tlsconf.CheckPlaintext("connection", cfg.Addr, cfg.Insecure); err != nil {
			return nil, err
		}
		opts = append(opts, grpc.WithTransportCredentials(insecure.NewCredentials()))
	}
	opts = append(opts, grpc.WithConnectParams(reconnect), grpc.WithKeepaliveParams(keepalive.ClientParameters{Time: KeepaliveTime, Timeout: KeepaliveTimeout}))
	if cfg.Peer {
		opts = append(opts,
			grpc.WithDefaultCallOptions(grpc.WaitForReady(true)),
			grpc.WithChainUnaryInterceptor(func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, o ...grpc.CallOption) error {
				if _, ok := ctx.Deadline(); !ok {
					var cancel context.CancelFunc
					ctx, cancel = context.WithTimeout(ctx, PeerWait)
					defer cancel()
				}
				return invoker(ctx, method, req, reply, cc, o...)
			}),
		)
	}
	if cfg.ServiceToken != "" {
		tok := cfg.ServiceToken
		opts = append(opts,
			grpc.WithChainUnaryInterceptor(func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, o ...grpc.CallOption) error {
				return invoker(metadata.AppendToOutgoingContext(ctx, auth.ServiceTokenHeader, tok), method, req, reply, cc, o...)
			}),
			grpc.WithChainStreamInterceptor(func(ctx context.Context, desc *grpc.StreamDesc, cc *grpc.ClientConn, method string, streamer grpc.Streamer, o ...grpc.CallOption) (grpc.ClientStream, error) {
				return streamer(metadata.AppendToOutgoingContext(ctx, auth.ServiceTokenHeader, tok), desc, cc, method, o...)
			}),
		)
	}
	conn, err := grpc.NewClient(cfg.Addr, opts...)
	if err != nil {
		return nil, fmt.Errorf("grpcclient: %s: %w", cfg.Addr, err)
	}
	return conn, nil
}
