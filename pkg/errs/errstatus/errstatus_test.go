package errstatus

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"syscall"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/umbra-e2ee/umbra/pkg/errs"
)

func TestStatus(t *testing.T) {
	cases := []struct {
		name  string
		err   error
		code  codes.Code
		msg   string
		known bool
	}{
		{"invalid", errs.Invalidf("identity %q is too long", "x"), codes.InvalidArgument, `identity "x" is too long`, true},
		{"wrapped not found", fmt.Errorf("store: %w", errs.NotFoundf("app a not found")), codes.NotFound, "store: app a not found", true},
		{"bare sentinel", errs.ErrExists, codes.AlreadyExists, "already exists", true},
		{"permission", errs.Permissionf("not yours"), codes.PermissionDenied, "not yours", true},
		{"unauthenticated", errs.Unauthenticatedf("expired"), codes.Unauthenticated, "expired", true},
		{"conflict", errs.Conflictf("epoch 3 is stale"), codes.Aborted, "epoch 3 is stale", true},
		{"precondition", errs.Preconditionf("rotate first"), codes.FailedPrecondition, "rotate first", true},
		{"exhausted", errs.Exhaustedf("slow down"), codes.ResourceExhausted, "slow down", true},
		{"unavailable", errs.Unavailablef("later"), codes.Unavailable, "later", true},
		{"too large", errs.TooLargef("envelope is 300 KiB"), codes.InvalidArgument, "envelope is 300 KiB", true},
		{"out of range", errs.OutOfRangef("index 9 is past the log"), codes.OutOfRange, "index 9 is past the log", true},
		{"canceled", context.Canceled, codes.Canceled, "context canceled", true},
		{"status passes through", status.Error(codes.Aborted, "as is"), codes.Aborted, "as is", true},
		{"damaged data hides its details and is logged", fmt.Errorf("messaging: %w", errs.Damagedf("record %q in bucket log fails its checksum", "k")), codes.DataLoss, errs.DamagedMessage, false},
		{"unknown error hides its message", errors.New("open /var/lib/secret: permission denied"), codes.Internal, "internal error", false},
		{"no space, wrapped deep", fmt.Errorf("card: publish: %w", &fs.PathError{Op: "write", Path: "/data/card.db", Err: syscall.ENOSPC}), codes.Unavailable, errs.StorageFullMessage, true},
		{"quota exceeded", fmt.Errorf("commit: %w", syscall.EDQUOT), codes.Unavailable, errs.StorageFullMessage, true},
		{"no space as bbolt's text", errors.New("file resize error: write /data/x.db: no space left on device"), codes.Unavailable, errs.StorageFullMessage, true},
		{"storage full with the service's words", errs.StorageFullf("full: retry with the same client_message_id"), codes.Unavailable, "full: retry with the same client_message_id", true},
		{"an I/O error stays internal", fmt.Errorf("commit: %w", syscall.EIO), codes.Internal, "internal error", false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			st, known := Status(tc.err)
			s := status.Convert(st)
			if s.Code() != tc.code || s.Message() != tc.msg || known != tc.known {
				t.Errorf("Status = %v %q known=%v; want %v %q known=%v", s.Code(), s.Message(), known, tc.code, tc.msg, tc.known)
			}
		})
	}
	if st, known := Status(nil); st != nil || !known {
		t.Errorf("Status(nil) = %v, %v", st, known)
	}
}

func TestStatusCarriesDetails(t *testing.T) {
	err := errs.Conflictf("stale epoch").WithDetails(wrapperspb.UInt64(7))
	if !errors.Is(err, errs.ErrConflict) {
		t.Fatal("WithDetails lost the kind")
	}
	st, _ := Status(fmt.Errorf("commit: %w", err))
	details := status.Convert(st).Details()
	if len(details) != 1 {
		t.Fatalf("details = %v", details)
	}
	if v, ok := details[0].(*wrapperspb.UInt64Value); !ok || v.GetValue() != 7 {
		t.Errorf("detail = %v", details[0])
	}
}
