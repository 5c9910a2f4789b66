// Package grpcclient dials Umbra services: with TLS (and a client certificate for mTLS)
// when configured, plaintext only to loopback unless the operator allows it, and with
// the service token on every call when one service calls another's internal methods.
package grpcclient

import (
	"context"
	"fmt"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
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
