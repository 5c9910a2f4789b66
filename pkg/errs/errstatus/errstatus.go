// Package errstatus turns the error kinds of package errs into gRPC statuses: the one
// table of codes, Code, and Status, which the server's error interceptor calls so that
// no handler builds a status itself. It is apart from errs so that stores, which return
// the kinds, do not depend on gRPC.
package errstatus

import (
	"context"
	"errors"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/protoadapt"

	"github.com/umbra-e2ee/umbra/pkg/errs"
)

var codeOf = []struct {
	kind error
	code codes.Code
}{
	{errs.ErrInvalid, codes.InvalidArgument},
	{errs.ErrTooLarge, codes.InvalidArgument},
	{errs.ErrOutOfRange, codes.OutOfRange},
	{errs.ErrNotFound, codes.NotFound},
	{errs.ErrExists, codes.AlreadyExists},
	{errs.ErrPermission, codes.PermissionDenied},
	{errs.ErrUnauthenticated, codes.Unauthenticated},
	{errs.ErrConflict, codes.Aborted},
	{errs.ErrPrecondition, codes.FailedPrecondition},
	{errs.ErrExhausted, codes.ResourceExhausted},
	{errs.ErrUnavailable, codes.Unavailable},
	{errs.ErrStorageFull, codes.Unavailable},
	{errs.ErrDamaged, codes.DataLoss},
	{context.Canceled, codes.Canceled},
	{context.DeadlineExceeded, codes.DeadlineExceeded},
}

// Code returns the gRPC code for err, and whether err is of a known kind. A gRPC status
// error keeps its own code.
func Code(err error) (codes.Code, bool) {
	if err == nil {
		return codes.OK, true
	}
	if s, ok := status.FromError(err); ok {
		return s.Code(), true
	}
	if code, ok := kindCode(err); ok {
		return code, true
	}
	if errs.NoSpace(err) {
		return codes.Unavailable, true
	}
	return codes.Internal, false
}

// kindCode is the code of err's kind, if it has one.
func kindCode(err error) (codes.Code, bool) {
	for _, c := range codeOf {
		if errors.Is(err, c.kind) {
			return c.code, true
		}
	}
	return codes.Internal, false
}

// Status turns err into a gRPC status error. Errors of a known kind keep their message;
// a storage error for lack of space (errs.NoSpace) becomes Unavailable with
// errs.StorageFullMessage, which clients retry; damaged data becomes DataLoss with
// errs.DamagedMessage, and is reported as not known, so that its cause (which record of
// which store) is logged too; anything else becomes Internal with a generic message,
// so that no internal detail leaks: the caller of Status logs the cause (known reports
// whether it must).
func Status(err error) (st error, known bool) {
	if err == nil {
		return nil, true
	}
	if s, ok := status.FromError(err); ok {
		return s.Err(), true
	}
	if _, ok := kindCode(err); !ok && errs.NoSpace(err) {
		// The cause names files: it stays in the server's log.
		return status.Error(codes.Unavailable, errs.StorageFullMessage), true
	}
	code, known := Code(err)
	if !known {
		return status.Error(codes.Internal, "internal error"), false
	}
	if code == codes.DataLoss {
		return status.Error(codes.DataLoss, errs.DamagedMessage), false
	}
	s := status.New(code, err.Error())
	var e *errs.Error
	if errors.As(err, &e) && len(e.Details()) > 0 {
		details := e.Details()
		v1 := make([]protoadapt.MessageV1, 0, len(details))
		for _, d := range details {
			v1 = append(v1, protoadapt.MessageV1Of(d))
		}
		if withDetails, derr := s.WithDetails(v1...); derr == nil {
			s = withDetails
		}
	}
	return s.Err(), true
}
