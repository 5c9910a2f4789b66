package gateway

import (
	"context"
	"errors"
	"io"

	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/umbra-e2ee/umbra/internal/grpcserver"
)

// publicError returns err as a REST caller may see it. A status that an Umbra service
// returned (it carries grpcserver.ErrorOriginTrailer) passes unchanged. Anything else
// comes from the connection (dial errors, addresses, TLS failures): the caller gets a
// generic message and the cause is logged here.
//
// A service refuses a call without a well-formed credential, or from a source with too
// many failed credentials, before the call reaches its interceptors (its tap handle),
// where it cannot add the trailer: those statuses (Unauthenticated, PermissionDenied,
// ResourceExhausted) pass too. The gateway's own connections never produce the first
// two; a ResourceExhausted of its own is a message over gRPC's limit, which says so.
func publicError(log *zap.Logger, method string, err error, trailer metadata.MD) error {
	if err == nil || errors.Is(err, io.EOF) || len(trailer.Get(grpcserver.ErrorOriginTrailer)) > 0 {
		return err
	}
	s := status.Convert(err)
	switch s.Code() {
	case codes.Unauthenticated, codes.PermissionDenied, codes.ResourceExhausted:
		return err
	}
	log.Warn("upstream call failed", zap.String("method", method), zap.String("code", s.Code().String()), zap.String("cause", s.Message()))
	switch s.Code() {
	case codes.Canceled:
		return status.Error(codes.Canceled, "request canceled")
	case codes.DeadlineExceeded:
		return status.Error(codes.DeadlineExceeded, "the service did not answer in time")
	case codes.Unavailable:
		return status.Error(codes.Unavailable, "the service is unavailable; try again later")
	case codes.Unimplemented:
		return status.Error(codes.Unimplemented, "the service does not implement this call")
	}
	return status.Error(codes.Internal, "internal error")
}

// hideConnectionErrors are the client interceptors of the gateway's upstream
// connections.
func hideConnectionErrors(log *zap.Logger) []grpc.DialOption {
	return []grpc.DialOption{
		grpc.WithChainUnaryInterceptor(func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
			var trailer metadata.MD
			err := invoker(ctx, method, req, reply, cc, append(opts, grpc.Trailer(&trailer))...)
			return publicError(log, method, err, trailer)
		}),
		grpc.WithChainStreamInterceptor(func(ctx context.Context, desc *grpc.StreamDesc, cc *grpc.ClientConn, method string, streamer grpc.Streamer, opts ...grpc.CallOption) (grpc.ClientStream, error) {
			cs, err := streamer(ctx, desc, cc, method, opts...)
			if err != nil {
				return nil, publicError(log, method, err, nil)
			}
			return &publicErrorStream{ClientStream: cs, log: log, method: method}, nil
		}),
	}
}

type publicErrorStream struct {
	grpc.ClientStream
	log    *zap.Logger
	method string
}

func (s *publicErrorStream) RecvMsg(m any) error {
	err := s.ClientStream.RecvMsg(m)
	if err == nil || errors.Is(err, io.EOF) {
		return err
	}
	return publicError(s.log, s.method, err, s.Trailer())
}
