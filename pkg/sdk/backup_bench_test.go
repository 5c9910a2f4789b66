package sdk_test

import (
	"context"
	"testing"
	"time"

	"google.golang.org/grpc"

	"github.com/umbra-e2ee/umbra/pkg/sdk"
)

// BenchmarkRestorePrivateKey is a whole restore by a new device over loopback gRPC to
// a node in the same process: WhoAmI, GetBackupInfo, Evaluate (RESTORE), the
// client's Argon2id (the default t=3, m=64 MiB, p=4) and HKDF, Restore, the AEAD, and
// the new keystore written unencrypted (so that the keystore's own Argon2id is not
// counted). It reports the time spent in RPCs (network and server: rpc-ms) and the
// rest (the client: client-ms), per restore; pkg/keybackup's benchmarks split the
// client's part into Argon2id and the rest, and the server's evaluation.
//
//	go test ./pkg/sdk -run '^$' -bench RestorePrivateKey -count 6
func BenchmarkRestorePrivateKey(b *testing.B) {
	n, app := startBackupNode(b, 0)
	ctx := context.Background()
	a := newBackupDevice(b, n, app, "alice")
	mustRegister(b, a)
	password := []byte("a backup password")
	if _, err := a.BackupPrivateKey(ctx, password); err != nil {
		b.Fatal(err)
	}
	var inRPCs time.Duration
	timeRPCs := grpc.WithChainUnaryInterceptor(func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
		start := time.Now()
		err := invoker(ctx, method, req, reply, cc, opts...)
		inRPCs += time.Since(start)
		return err
	})
	var total, restoreRPCs time.Duration
	for b.Loop() {
		b.StopTimer()
		d := newBackupDeviceConfig(b, n, app, "alice", sdk.Config{NoPassphrase: true, DialOptions: []grpc.DialOption{timeRPCs}})
		// The connection and the first token are the device's, not the restore's.
		if _, err := d.Identity(ctx); err != nil {
			b.Fatal(err)
		}
		rpcsBefore := inRPCs
		b.StartTimer()
		start := time.Now()
		if err := d.RestorePrivateKey(ctx, password); err != nil {
			b.Fatal(err)
		}
		total += time.Since(start)
		restoreRPCs += inRPCs - rpcsBefore
	}
	per := float64(b.N)
	b.ReportMetric(float64(restoreRPCs.Microseconds())/1000/per, "rpc-ms")
	b.ReportMetric(float64((total-restoreRPCs).Microseconds())/1000/per, "client-ms")
}
