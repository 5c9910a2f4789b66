package gateway

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"

	"github.com/umbra-e2ee/umbra/internal/grpcserver"
	"github.com/umbra-e2ee/umbra/pkg/auth"
	"github.com/umbra-e2ee/umbra/pkg/errs"
	"github.com/umbra-e2ee/umbra/pkg/errs/errstatus"
	"github.com/umbra-e2ee/umbra/pkg/tlsconf"
)

// The gRPC proxy gives clients one gRPC address for every service, as the REST side
// gives them one HTTP address: it forwards each call, whatever its shape (unary or
// streaming), to the service that owns the method, over the gateway's upstream
// connections, without decoding it. Like the REST side it forwards the Authorization
// header and nothing else, and it refuses internal methods outright: they are for
// services, which talk to each other directly.

// frame is one gRPC message as bytes.
type frame struct{ b []byte }

// rawCodec passes messages through as bytes. It is named "proto" because that is the
// content subtype clients and services use; the proxy never looks inside.
type rawCodec struct{}

func (rawCodec) Marshal(v any) ([]byte, error) {
	f, ok := v.(*frame)
	if !ok {
		return nil, fmt.Errorf("gateway: proxy codec got %T", v)
	}
	return f.b, nil
}

func (rawCodec) Unmarshal(data []byte, v any) error {
	f, ok := v.(*frame)
	if !ok {
		return fmt.Errorf("gateway: proxy codec got %T", v)
	}
	f.b = append(f.b[:0], data...)
	return nil
}

func (rawCodec) Name() string { return "proto" }

// proxyRoute says where a method goes and whether clients may call it.
type proxyRoute struct {
	upstream string
	policy   auth.Policy
}

// ServeGRPC forwards gRPC calls on lis to the services until ctx ends.
func (g *Gateway) ServeGRPC(ctx context.Context, lis net.Listener) error {
	opts := []grpc.ServerOption{
		grpc.ForceServerCodec(rawCodec{}),
		grpc.UnknownServiceHandler(func(srv any, ss grpc.ServerStream) error {
			// The proxy's own refusals become statuses; a service's status passes as it is.
			st, _ := errstatus.Status(g.proxy(srv, ss))
			return st
		}),
		grpc.MaxRecvMsgSize(int(g.cfg.MaxBodyBytes)),
		// Calls without a credential of the right shape are refused before their body
		// is read, as the services refuse them; the services check the rest.
		grpc.InTapHandle(auth.New(auth.Config{Policies: g.cfg.Policies, Failures: auth.FailureLimit{Burst: -1}}).TapHandle()),
		grpc.MaxConcurrentStreams(grpcserver.DefaultMaxConcurrentStreams),
		grpc.KeepaliveParams(keepalive.ServerParameters{Time: grpcserver.KeepaliveTime, Timeout: grpcserver.KeepaliveTimeout}),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: grpcserver.KeepaliveMinTime, PermitWithoutStream: true}),
	}
	if g.cfg.TLS.Enabled() {
		tc, err := g.cfg.TLS.Config()
		if err != nil {
			return err
		}
		opts = append(opts, grpc.Creds(credentials.NewTLS(tc)))
	} else if err := tlsconf.CheckPlaintext("gRPC proxy listener", lis.Addr().String(), g.cfg.Insecure); err != nil {
		return err
	}
	srv := grpc.NewServer(opts...)
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(lis) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	srv.Stop() // streams do not end by themselves; clients resume
	if err := <-errc; err != nil && !errors.Is(err, grpc.ErrServerStopped) {
		return err
	}
	return nil
}

// proxy forwards one call.
func (g *Gateway) proxy(_ any, ss grpc.ServerStream) error {
	method, ok := grpc.MethodFromServerStream(ss)
	if !ok {
		return errs.Invalidf("no method")
	}
	route, ok := g.routes[method]
	if !ok {
		return errs.NotFoundf("no service here answers %s", method)
	}
	if route.policy == auth.Internal {
		return errs.Permissionf("%s is internal to Umbra's services", method)
	}
	in, _ := metadata.FromIncomingContext(ss.Context())
	out := metadata.MD{}
	if p, ok := peer.FromContext(ss.Context()); ok && p.Addr != nil {
		out = forwarded(g.cfg.ForwarderToken, p.Addr.String())
	}
	if v := in.Get(auth.AuthorizationHeader); len(v) > 0 {
		out.Set(auth.AuthorizationHeader, v...)
	}
	ctx, cancel := context.WithCancel(metadata.NewOutgoingContext(ss.Context(), out))
	defer cancel()
	cs, err := g.conns[route.upstream].NewStream(ctx, &grpc.StreamDesc{ServerStreams: true, ClientStreams: true}, method, grpc.ForceCodec(rawCodec{}))
	if err != nil {
		return err
	}
	// Client to service, in the background; service to client, here.
	upErr := make(chan error, 1)
	go func() {
		for {
			f := &frame{}
			if err := ss.RecvMsg(f); err != nil {
				if errors.Is(err, io.EOF) {
					upErr <- cs.CloseSend()
				} else {
					upErr <- err
				}
				return
			}
			if err := cs.SendMsg(f); err != nil {
				upErr <- nil // the service's answer says why
				return
			}
		}
	}()
	for {
		f := &frame{}
		if err := cs.RecvMsg(f); err != nil {
			ss.SetTrailer(filterTrailer(cs.Trailer()))
			if errors.Is(err, io.EOF) {
				return nil
			}
			return err
		}
		if err := ss.SendMsg(f); err != nil {
			return err
		}
		select {
		case err := <-upErr:
			if err != nil {
				return err
			}
		default:
		}
	}
}

// filterTrailer keeps only what clients may see of a service's trailer.
func filterTrailer(md metadata.MD) metadata.MD {
	out := metadata.MD{}
	for k, v := range md {
		if k != grpcserver.ErrorOriginTrailer && !strings.HasPrefix(k, "grpc-") {
			out[k] = v
		}
	}
	return out
}
