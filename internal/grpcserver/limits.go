package grpcserver

import (
	"context"

	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"

	"github.com/umbra-e2ee/umbra/pkg/errs"
)

// What bounds the memory a call can hold, and where (grpc-go offers no per-method limit
// before a message is read, so the bounds are layered):
//
//   - The tap handle (auth.Authenticator.TapHandle) refuses a call without a
//     credential of the right shape when its headers arrive: it never becomes a stream,
//     and the body the client sends anyway is discarded by the transport as it comes
//     (counted for flow control, not kept).
//   - RegisterService wraps every unary method so that the call is authenticated in
//     full before gRPC reads its request (it reads and decodes a unary request before
//     any interceptor runs); streaming calls are authenticated by the stream
//     interceptor before the handler reads anything. A refused call holds at most what
//     the client sent before the refusal: one HTTP/2 stream window (64 KiB).
//   - Config.MaxRecvBytes, gRPC's own limit, bounds any one message: a message whose
//     length prefix announces more is refused before it is read. It is the largest
//     message any method legitimately carries.
//   - The per-method limit (below) is checked once the message is decoded, and
//     refuses with ResourceExhausted an authenticated request over what its method can
//     legitimately carry, before the handler works on it. It bounds work, not the
//     read, which MaxRecvBytes already bounded.
//   - Config.MaxConcurrentStreams bounds the calls in progress on one connection.

// RegisterService registers a service, as grpc.Server does, with every unary method
// authenticated before its request is read, and records each method's request limit.
func (s *Server) RegisterService(sd *grpc.ServiceDesc, impl any) {
	c := *sd
	c.Methods = make([]grpc.MethodDesc, len(sd.Methods))
	for i, md := range sd.Methods {
		method := "/" + sd.ServiceName + "/" + md.MethodName
		s.recvLimits[method] = s.recvLimit(sd.ServiceName, md.MethodName, method)
		next := md.Handler
		md.Handler = func(srv any, ctx context.Context, dec func(any) error, interceptor grpc.UnaryServerInterceptor) (any, error) {
			ctx, err := s.authn.Preauthenticate(ctx, method)
			if err == nil {
				return next(srv, ctx, dec, interceptor)
			}
			if interceptor == nil {
				return nil, err
			}
			// The chain still logs, counts and maps the refusal; its authenticator takes
			// the outcome from ctx and refuses again, without the request.
			return interceptor(ctx, nil, &grpc.UnaryServerInfo{Server: srv, FullMethod: method}, func(context.Context, any) (any, error) {
				return nil, err
			})
		}
		c.Methods[i] = md
	}
	for _, sdesc := range sd.Streams {
		method := "/" + sd.ServiceName + "/" + sdesc.StreamName
		s.recvLimits[method] = s.recvLimit(sd.ServiceName, sdesc.StreamName, method)
	}
	s.Server.RegisterService(&c, impl)
}

// RecvLimit returns the request limit of a registered method, and whether it has one.
func (s *Server) RecvLimit(method string) (int, bool) {
	n, ok := s.recvLimits[method]
	return n, ok
}

// recvLimit is a method's request limit: named in Config.MethodRecvBytes, or small for
// a request without bytes or repeated fields, or bulk.
func (s *Server) recvLimit(service, name, method string) int {
	if n, ok := s.cfg.MethodRecvBytes[method]; ok {
		return n
	}
	d, err := protoregistry.GlobalFiles.FindDescriptorByName(protoreflect.FullName(service))
	if sd, ok := d.(protoreflect.ServiceDescriptor); err == nil && ok {
		if m := sd.Methods().ByName(protoreflect.Name(name)); m != nil && !m.IsStreamingClient() && small(m.Input(), map[protoreflect.FullName]bool{}) {
			return s.cfg.SmallRecvBytes
		}
	}
	return s.cfg.BulkRecvBytes
}

// small reports whether a message, and every message in it, has no bytes, repeated
// or map fields: only scalars and strings, which validation bounds to a few hundred
// bytes each.
func small(md protoreflect.MessageDescriptor, seen map[protoreflect.FullName]bool) bool {
	if seen[md.FullName()] {
		return false // recursive: can nest without bound
	}
	seen[md.FullName()] = true
	fields := md.Fields()
	for i := range fields.Len() {
		f := fields.Get(i)
		switch {
		case f.IsList(), f.IsMap(), f.Kind() == protoreflect.BytesKind:
			return false
		case f.Message() != nil && !small(f.Message(), seen):
			return false
		}
	}
	delete(seen, md.FullName())
	return true
}

// checkRecv refuses a request over its method's limit.
func (s *Server) checkRecv(method string, m any) error {
	limit, ok := s.recvLimits[method]
	msg, isProto := m.(proto.Message)
	if !ok || !isProto {
		return nil
	}
	if n := proto.Size(msg); n > limit {
		return errs.Exhaustedf("request of %d bytes is over the %d-byte limit of %s", n, limit, method)
	}
	return nil
}

func (s *Server) limitUnary(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	if err := s.checkRecv(info.FullMethod, req); err != nil {
		return nil, err
	}
	return handler(ctx, req)
}

func (s *Server) limitStream(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
	if _, ok := s.recvLimits[info.FullMethod]; !ok {
		return handler(srv, ss)
	}
	return handler(srv, &limitedStream{ServerStream: ss, s: s, method: info.FullMethod})
}

// limitedStream checks every request of a stream against its method's limit.
type limitedStream struct {
	grpc.ServerStream
	s      *Server
	method string
}

func (l *limitedStream) RecvMsg(m any) error {
	if err := l.ServerStream.RecvMsg(m); err != nil {
		return err
	}
	return l.s.checkRecv(l.method, m)
}
