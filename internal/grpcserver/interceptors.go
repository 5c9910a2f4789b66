package grpcserver

import (
	"context"
	"errors"
	"runtime/debug"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/umbra-e2ee/umbra/pkg/auth"
	"github.com/umbra-e2ee/umbra/pkg/errs"
	"github.com/umbra-e2ee/umbra/pkg/errs/errstatus"
)

// recoverUnary turns a handler's panic into Internal, logging the stack once.
func recoverUnary(log *zap.Logger) grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (resp any, err error) {
		defer func() {
			if r := recover(); r != nil {
				log.Error("panic in handler", zap.String("method", info.FullMethod), zap.Any("panic", r), zap.ByteString("stack", debug.Stack()))
				err = status.Error(codes.Internal, "internal error")
			}
		}()
		return handler(ctx, req)
	}
}

func recoverStream(log *zap.Logger) grpc.StreamServerInterceptor {
	return func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) (err error) {
		defer func() {
			if r := recover(); r != nil {
				log.Error("panic in handler", zap.String("method", info.FullMethod), zap.Any("panic", r), zap.ByteString("stack", debug.Stack()))
				err = status.Error(codes.Internal, "internal error")
			}
		}()
		return handler(srv, ss)
	}
}

// observeUnary records metrics and logs one line per call: method, code, duration and
// the caller's app and identity. Requests, responses, metadata and credentials are
// never logged. Successful calls log at debug level, so a busy server's info log holds
// only failures.
func observeUnary(log *zap.Logger, m *metrics) grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		start := time.Now()
		ctx, note := auth.WithCallerNote(ctx)
		resp, err := handler(ctx, req)
		observe(log, m, info.FullMethod, start, note, err)
		return resp, err
	}
}

func observeStream(log *zap.Logger, m *metrics) grpc.StreamServerInterceptor {
	return func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		start := time.Now()
		ctx, note := auth.WithCallerNote(ss.Context())
		err := handler(srv, &contextStream{ServerStream: ss, ctx: ctx})
		observe(log, m, info.FullMethod, start, note, err)
		return err
	}
}

func observe(log *zap.Logger, m *metrics, method string, start time.Time, note *auth.CallerNote, err error) {
	code := status.Code(err)
	elapsed := time.Since(start)
	m.observe(method, code, elapsed)
	level := zapcore.DebugLevel
	switch code {
	case codes.OK, codes.Canceled:
	case codes.Internal, codes.Unknown, codes.DataLoss:
		level = zapcore.ErrorLevel
	default:
		level = zapcore.InfoLevel
	}
	ce := log.Check(level, "rpc")
	if ce == nil {
		return
	}
	fields := []zap.Field{zap.String("method", method), zap.String("code", code.String()), zap.Duration("duration", elapsed)}
	if p := note.Principal; p != nil {
		fields = append(fields, zap.Stringer("policy", p.Policy))
		if p.AppID != "" {
			fields = append(fields, zap.String("app", p.AppID))
		}
		if p.Identity != "" {
			fields = append(fields, zap.String("identity", p.Identity))
		}
		if p.Service != "" {
			fields = append(fields, zap.String("service", p.Service))
		}
	}
	if code != codes.OK {
		fields = append(fields, zap.String("message", status.Convert(err).Message()))
	}
	ce.Write(fields...)
}

type contextStream struct {
	grpc.ServerStream
	ctx context.Context
}

func (s *contextStream) Context() context.Context { return s.ctx }

// errorsUnary maps the handler's domain errors to statuses (errstatus.Status). An error of
// no known kind becomes Internal, and its cause is logged here, once.
//
// Every error status leaves with the ErrorOriginTrailer, so a gateway can tell an answer
// of the service from a failure to reach it.
func errorsUnary(log *zap.Logger) grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		resp, err := handler(ctx, req)
		if err != nil {
			grpc.SetTrailer(ctx, originTrailer)
			return nil, toStatus(log, info.FullMethod, err)
		}
		return resp, nil
	}
}

func errorsStream(log *zap.Logger) grpc.StreamServerInterceptor {
	return func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		if err := handler(srv, ss); err != nil {
			ss.SetTrailer(originTrailer)
			return toStatus(log, info.FullMethod, err)
		}
		return nil
	}
}

// ErrorOriginTrailer marks an error status that an Umbra service itself returned.
const ErrorOriginTrailer = "umbra-error-origin"

var originTrailer = metadata.Pairs(ErrorOriginTrailer, "service")

func toStatus(log *zap.Logger, method string, err error) error {
	st, known := errstatus.Status(err)
	if !known {
		msg := "internal error"
		if errors.Is(err, errs.ErrDamaged) {
			msg = "damaged stored data refused: restore the store from a backup"
		}
		log.Error(msg, zap.String("method", method), zap.Error(err))
	}
	return st
}
