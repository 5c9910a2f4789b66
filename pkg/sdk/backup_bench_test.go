package sdk_test

import (
	"context"
	"testing"

	"github.com/umbra-e2ee/umbra/pkg/sdk"
)

var sdkConfigNoPassphrase = sdk.Config{NoPassphrase: true}

// BenchmarkRestorePrivateKey is a whole restore by a new device over loopback gRPC to
// a node in the same process: WhoAmI, GetBackupInfo, Evaluate (RESTORE), the
// client's Argon2id (the default t=3, m=64 MiB, p=4) and HKDF, Restore, the AEAD, and
// the new keystore written unencrypted (so that the keystore's own Argon2id is not
// counted). Subtract pkg/keybackup's BenchmarkRestoreClient (the client's computation)
// to get the network and the server:
//
//	go test ./pkg/sdk -run '^$' -bench RestorePrivateKey -count 6
func BenchmarkRestorePrivateKey(b *testing.B) {
	n := startBackupNode(b, 0)
	app := n.NewApp(b)
	ctx := context.Background()
	a := newBackupDevice(b, n, app, "alice")
	if _, err := a.Register(ctx); err != nil {
		b.Fatal(err)
	}
	password := []byte("a backup password")
	if _, err := a.BackupPrivateKey(ctx, password); err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		b.StopTimer()
		d := newBackupDeviceConfig(b, n, app, "alice", sdkConfigNoPassphrase)
		b.StartTimer()
		if err := d.RestorePrivateKey(ctx, password); err != nil {
			b.Fatal(err)
		}
	}
}
