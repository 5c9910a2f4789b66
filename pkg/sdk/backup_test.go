package sdk_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"

	"github.com/umbra-e2ee/umbra/internal/node"
	"github.com/umbra-e2ee/umbra/internal/node/nodetest"
	"github.com/umbra-e2ee/umbra/pkg/e2ee"
	"github.com/umbra-e2ee/umbra/pkg/keybackup"
	"github.com/umbra-e2ee/umbra/pkg/keystore"
	"github.com/umbra-e2ee/umbra/pkg/sdk"
	backupv1 "github.com/umbra-e2ee/umbra/proto/umbra/backup/v1"
	messagingv1 "github.com/umbra-e2ee/umbra/proto/umbra/messaging/v1"
)

// startBackupNode starts a node with an app (startNode) whose backup service allows
// maxAttempts guesses per slot (0: the default) and does not rate-limit these tests'
// evaluations.
func startBackupNode(t testing.TB, maxAttempts int) (*nodetest.Node, *nodetest.App) {
	return startNode(t, func(c *node.Config) {
		c.Backup.MaxAttempts = maxAttempts
		c.Backup.EvaluateRate = 1000
		c.Backup.EvaluateBurst = 1000
	})
}

// newBackupDevice is a device of uid with an empty keystore in a folder of its own,
// its connection going through opts (interceptors).
func newBackupDevice(t testing.TB, n *nodetest.Node, app *nodetest.App, uid string, opts ...grpc.DialOption) *device {
	t.Helper()
	return newBackupDeviceConfig(t, n, app, uid, sdk.Config{Passphrase: []byte("local passphrase of this device"), DialOptions: opts})
}

// newBackupDeviceConfig is newBackupDevice with cfg's keystore protection and dial
// options. A keystore passphrase is stretched at the cheapest Argon2id cost
// (CheapKeystore): the backups' own Argon2id keeps the cost of production.
func newBackupDeviceConfig(t testing.TB, n *nodetest.Node, app *nodetest.App, uid string, cfg sdk.Config) *device {
	t.Helper()
	id := app.User(t, uid)
	path := filepath.Join(t.TempDir(), "keystore")
	c, err := sdk.New(context.Background(), sdk.CheapKeystore(sdk.Config{
		Addr:         n.GRPC,
		Token:        app.TokenFunc(id),
		KeystorePath: path,
		Passphrase:   cfg.Passphrase,
		NoPassphrase: cfg.NoPassphrase,
		Suite:        e2ee.SuiteX25519,
		DialOptions:  cfg.DialOptions,
	}))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return &device{Client: c, identity: id, keystore: path}
}

// startWithAlice starts a backup node (maxAttempts as startBackupNode) with an app, and
// alice's first device there, registered.
func startWithAlice(t *testing.T, maxAttempts int) (*nodetest.Node, *nodetest.App, *device) {
	t.Helper()
	n, app := startBackupNode(t, maxAttempts)
	a := newBackupDevice(t, n, app, "alice")
	mustRegister(t, a)
	return n, app, a
}

// mustBackUp backs d's keys up under password, failing t on an error.
func mustBackUp(t *testing.T, d *device, password []byte) {
	t.Helper()
	if _, err := d.BackupPrivateKey(context.Background(), password); err != nil {
		t.Fatal(err)
	}
}

// wantBackedUp backs d's keys up under password, which must store backup version
// version; what names the backup in the failure.
func wantBackedUp(t *testing.T, d *device, password []byte, version uint64, what string) {
	t.Helper()
	if info, err := d.BackupPrivateKey(context.Background(), password); err != nil || info.GetVersion() != version {
		t.Fatalf("%s = %v, %v; want version %d", what, info, err, version)
	}
}

func bundleOf(t *testing.T, d *device) []byte {
	t.Helper()
	ks, err := keystore.Open(d.keystore, []byte("local passphrase of this device"))
	if err != nil {
		t.Fatal(err)
	}
	b, err := ks.KeyBundle()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func wantWrongPassword(t *testing.T, err error, remaining uint32, erased bool) {
	t.Helper()
	var wp *sdk.WrongPasswordError
	if !errors.As(err, &wp) || !errors.Is(err, sdk.ErrWrongPassword) {
		t.Fatalf("err = %v; want a WrongPasswordError", err)
	}
	if wp.Remaining != remaining || wp.Erased != erased || errors.Is(err, sdk.ErrBackupErased) != erased {
		t.Fatalf("err = %+v (%v); want %d remaining, erased %v", wp, err, remaining, erased)
	}
}

func TestBackupRestoreChangePasswordReset(t *testing.T) {
	t.Parallel()
	n, app := startBackupNode(t, 0)
	ctx := context.Background()
	a := newBackupDevice(t, n, app, "alice")
	if _, err := a.BackupPrivateKey(ctx, []byte("pw one")); !errors.Is(err, sdk.ErrNoPrivateKey) {
		t.Fatalf("backup without keys: %v", err)
	}
	mustRegister(t, a)
	info, err := a.BackupPrivateKey(ctx, []byte("pw one"))
	if err != nil {
		t.Fatal(err)
	}
	if info.GetSlot() != backupv1.BackupSlot_BACKUP_SLOT_PASSWORD || info.GetVersion() != 1 || info.GetKdf().GetMemoryKib() != 64*1024 || info.GetRemainingAttempts() != 10 {
		t.Fatalf("backup info = %v", info)
	}

	// A new device restores every key, byte for byte.
	b := newBackupDevice(t, n, app, "alice")
	if err := b.RestorePrivateKey(ctx, []byte("pw one")); err != nil {
		t.Fatal(err)
	}
	if !b.HasPrivateKey() || !bytes.Equal(bundleOf(t, b), bundleOf(t, a)) {
		t.Fatal("the restored keystore differs from the original")
	}
	if err := b.RestorePrivateKey(ctx, []byte("pw one")); !errors.Is(err, sdk.ErrKeysPresent) {
		t.Fatalf("restore into a keystore with keys: %v", err)
	}

	// Change of password: the old one stops working, the new one restores.
	info, err = b.ChangePassword(ctx, []byte("pw one"), []byte("pw two"))
	if err != nil || info.GetVersion() != 2 {
		t.Fatalf("ChangePassword = %v, %v", info, err)
	}
	if _, err := b.ChangePassword(ctx, []byte("pw one"), []byte("pw three")); !errors.Is(err, sdk.ErrWrongPassword) {
		t.Fatalf("ChangePassword with the old password: %v", err)
	}
	c := newBackupDevice(t, n, app, "alice")
	wantWrongPassword(t, c.RestorePrivateKey(ctx, []byte("pw one")), 8, false)
	if c.HasPrivateKey() {
		t.Fatal("a refused restore left keys")
	}
	if _, err := os.Stat(c.keystore); !os.IsNotExist(err) {
		t.Fatalf("a refused restore left a keystore: %v", err)
	}
	if err := c.RestorePrivateKey(ctx, []byte("pw two")); err != nil {
		t.Fatal(err)
	}
	// The successful restore gave the budget back.
	infos, err := c.Backups(ctx)
	if err != nil || len(infos) != 1 || infos[0].GetRemainingAttempts() != 10 {
		t.Fatalf("Backups = %v, %v", infos, err)
	}

	// Backing up again proves the password, and keeps keys another device lacks.
	if _, err := a.BackupPrivateKey(ctx, []byte("pw one")); !errors.Is(err, sdk.ErrWrongPassword) {
		t.Fatalf("backup over another password: %v", err)
	}
	if _, err := a.RotateKeys(ctx); err != nil {
		t.Fatal(err)
	}
	wantBackedUp(t, a, []byte("pw two"), 3, "backup after the rotation")
	if _, err := c.BackupPrivateKey(ctx, []byte("pw two")); !errors.Is(err, sdk.ErrBackupMissesKeys) {
		t.Fatalf("backup from a device without the rotated key: %v", err)
	}

	// Reset, for a forgotten password.
	if err := a.ResetBackup(ctx); err != nil {
		t.Fatal(err)
	}
	if err := a.ResetBackup(ctx); !errors.Is(err, sdk.ErrNoBackup) {
		t.Fatalf("second reset: %v", err)
	}
	d := newBackupDevice(t, n, app, "alice")
	if err := d.RestorePrivateKey(ctx, []byte("pw two")); !errors.Is(err, sdk.ErrNoBackup) {
		t.Fatalf("restore after reset: %v", err)
	}
	// A new backup after the reset gets a version never used before.
	wantBackedUp(t, a, []byte("pw four"), 4, "backup after reset")
}

func TestRecoveryKey(t *testing.T) {
	t.Parallel()
	n, app, a := startWithAlice(t, 0)
	ctx := context.Background()
	key, err := a.CreateRecoveryKey(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(key) != keybackup.RecoveryKeyLen || strings.Count(key, "-") != 8 {
		t.Fatalf("recovery key %q", key)
	}
	b := newBackupDevice(t, n, app, "alice")
	// A mistyped key is caught before anything is sent: no attempt is spent.
	typo := []byte(key)
	typo[0] = map[bool]byte{true: 'A', false: 'B'}[typo[0] != 'A']
	if err := b.RestoreFromRecoveryKey(ctx, string(typo)); !errors.Is(err, keybackup.ErrRecoveryKey) {
		t.Fatalf("mistyped recovery key: %v", err)
	}
	infos, err := b.Backups(ctx)
	if err != nil || len(infos) != 1 || infos[0].GetRemainingAttempts() != 10 || infos[0].GetSlot() != backupv1.BackupSlot_BACKUP_SLOT_RECOVERY {
		t.Fatalf("after a typo: %v, %v", infos, err)
	}
	// Another well-formed key is a wrong guess.
	other, _ := keybackup.NewRecoveryKey(nil)
	wantWrongPassword(t, b.RestoreFromRecoveryKey(ctx, other.String()), 9, false)
	// Lower case without dashes restores.
	if err := b.RestoreFromRecoveryKey(ctx, strings.ToLower(strings.ReplaceAll(key, "-", ""))); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(bundleOf(t, b), bundleOf(t, a)) {
		t.Fatal("the keys restored from the recovery key differ")
	}
	// A new recovery key replaces the old one.
	if _, err := a.CreateRecoveryKey(ctx); err != nil {
		t.Fatal(err)
	}
	c := newBackupDevice(t, n, app, "alice")
	wantWrongPassword(t, c.RestoreFromRecoveryKey(ctx, key), 9, false)
	if err := a.DeleteRecoveryKey(ctx); err != nil {
		t.Fatal(err)
	}
	if err := c.RestoreFromRecoveryKey(ctx, key); !errors.Is(err, sdk.ErrNoBackup) {
		t.Fatalf("restore after DeleteRecoveryKey: %v", err)
	}
}

func TestWrongPasswordsCountDownAndErase(t *testing.T) {
	t.Parallel()
	n, app, a := startWithAlice(t, 3)
	ctx := context.Background()
	mustBackUp(t, a, []byte("the password"))
	b := newBackupDevice(t, n, app, "alice")
	wantWrongPassword(t, b.RestorePrivateKey(ctx, []byte("guess 1")), 2, false)
	err := b.RestorePrivateKey(ctx, []byte("guess 2"))
	wantWrongPassword(t, err, 1, false)
	if !strings.Contains(err.Error(), "1 attempt remains") {
		t.Errorf("message %q does not say how many attempts remain", err)
	}
	// The right password gives the whole budget back.
	if err := b.RestorePrivateKey(ctx, []byte("the password")); err != nil {
		t.Fatal(err)
	}
	c := newBackupDevice(t, n, app, "alice")
	wantWrongPassword(t, c.RestorePrivateKey(ctx, []byte("guess 3")), 2, false)
	wantWrongPassword(t, c.RestorePrivateKey(ctx, []byte("guess 4")), 1, false)
	wantWrongPassword(t, c.RestorePrivateKey(ctx, []byte("guess 5")), 0, true)
	// Erased: even the right password finds nothing now.
	if err := c.RestorePrivateKey(ctx, []byte("the password")); !errors.Is(err, sdk.ErrNoBackup) {
		t.Fatalf("restore after the erasure: %v", err)
	}
	if infos, err := c.Backups(ctx); err != nil || len(infos) != 0 {
		t.Fatalf("Backups after the erasure = %v, %v", infos, err)
	}
	// The owner's stream tells of the erasure (sdk.BackupEvent decodes it).
	sctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	zero := uint64(0)
	var erased *backupv1.BackupEvent
	errFound := errors.New("found")
	err = a.Subscribe(sctx, sdk.SubscribeOptions{After: &zero}, func(item *messagingv1.SubscribeResponse) error {
		if ev, ok := sdk.BackupEvent(item); ok {
			erased = ev
			return errFound
		}
		return nil
	})
	if !errors.Is(err, errFound) {
		t.Fatalf("no backup event in the owner's stream: %v", err)
	}
	if erased.GetKind() != backupv1.BackupEventKind_BACKUP_EVENT_KIND_ERASED || erased.GetSlot() != backupv1.BackupSlot_BACKUP_SLOT_PASSWORD || erased.GetVersion() != 1 {
		t.Errorf("backup event = %v; want the erasure of password version 1", erased)
	}
	// The owner backs up again from a device that has the keys.
	wantBackedUp(t, a, []byte("the password"), 2, "backup after the erasure")
}

// TestConcurrentChangeIsAConflict: a device whose backup changes between its restore
// and its put gets ErrBackupConflict, and the other device's change stands.
func TestConcurrentChangeIsAConflict(t *testing.T) {
	t.Parallel()
	n, app, a := startWithAlice(t, 0)
	ctx := context.Background()
	mustBackUp(t, a, []byte("pw one"))
	var once sync.Once
	other := newBackupDevice(t, n, app, "alice")
	b := newBackupDevice(t, n, app, "alice", grpc.WithChainUnaryInterceptor(
		func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
			if method == backupv1.BackupService_PutBackup_FullMethodName {
				once.Do(func() {
					// Not the call's context: it carries this device's token already.
					if _, err := other.ChangePassword(context.Background(), []byte("pw one"), []byte("pw other")); err != nil {
						t.Errorf("the other device's change: %v", err)
					}
				})
			}
			return invoker(ctx, method, req, reply, cc, opts...)
		}))
	if _, err := b.ChangePassword(ctx, []byte("pw one"), []byte("pw mine")); !errors.Is(err, sdk.ErrBackupConflict) {
		t.Fatalf("ChangePassword overtaken by another device: %v, want ErrBackupConflict", err)
	}
	c := newBackupDevice(t, n, app, "alice")
	if err := c.RestorePrivateKey(ctx, []byte("pw other")); err != nil {
		t.Fatalf("the other device's password: %v", err)
	}
}

// TestMultiDeviceHistory is the whole story: device A registers, backs up, talks to
// bob, rotates its keys and talks more, backs up again; device B starts with an empty
// keystore, restores with the password, and reads the whole conversation, the messages
// to and from A's first card included.
func TestMultiDeviceHistory(t *testing.T) {
	t.Parallel()
	n, app := startBackupNode(t, 0)
	ctx := context.Background()
	a := newBackupDevice(t, n, app, "alice")
	bob := newBackupDevice(t, n, app, "bob")
	mustRegister(t, a, bob)
	password := []byte("alice's backup password")
	mustBackUp(t, a, password)
	send := func(from *device, to, text string) {
		t.Helper()
		if _, err := from.SendTo(ctx, to, []byte(text)); err != nil {
			t.Fatal(err)
		}
	}
	send(a, bob.identity, "a1: before the rotation")
	send(bob, a.identity, "b1: to alice's first card")
	send(a, bob.identity, "a2: still the first card")
	if _, err := a.RotateKeys(ctx); err != nil {
		t.Fatal(err)
	}
	send(a, bob.identity, "a3: after the rotation")
	send(bob, a.identity, "b2: to alice's second card")
	mustBackUp(t, a, password)
	want := []string{"a1: before the rotation", "b1: to alice's first card", "a2: still the first card", "a3: after the rotation", "b2: to alice's second card"}

	b := newBackupDevice(t, n, app, "alice")
	if b.HasPrivateKey() {
		t.Fatal("device B starts with keys")
	}
	if _, err := b.Encrypt(ctx, []byte("x"), bob.identity); !errors.Is(err, sdk.ErrNoPrivateKey) {
		t.Fatalf("Encrypt before the restore: %v", err)
	}
	if err := b.RestorePrivateKey(ctx, password); err != nil {
		t.Fatal(err)
	}
	readAll := func(d *device, peer string) []string {
		t.Helper()
		zero := uint64(0)
		page, err := d.History(ctx, &messagingv1.HistoryRequest{ConversationId: peer, AfterSequence: &zero})
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		for _, m := range page.GetMessages() {
			text, err := d.OpenMessage(ctx, m)
			if err != nil {
				t.Fatalf("message %d from %s: %v", m.GetSequence(), m.GetSender(), err)
			}
			got = append(got, string(text))
		}
		return got
	}
	if got := readAll(b, bob.identity); strings.Join(got, "|") != strings.Join(want, "|") {
		t.Fatalf("device B reads %q; want %q", got, want)
	}
	// Device B now writes with A's current key: bob and device A read it.
	send(b, bob.identity, "from device B")
	want = append(want, "from device B")
	for name, d := range map[string]*device{"device A": a, "bob": bob} {
		peer := bob.identity
		if d == bob {
			peer = a.identity
		}
		if got := readAll(d, peer); strings.Join(got, "|") != strings.Join(want, "|") {
			t.Errorf("%s reads %q; want %q", name, got, want)
		}
	}
}

// recorder is a client interceptor that keeps every request's bytes, and can damage
// the ciphertext of Restore's replies.
type recorder struct {
	mu      sync.Mutex
	calls   []recordedCall
	tamper  bool
	tampers int
}

type recordedCall struct {
	method string
	req    proto.Message
	bytes  []byte
}

func (r *recorder) intercept(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
	m := req.(proto.Message)
	b, err := proto.Marshal(m)
	if err != nil {
		return err
	}
	r.mu.Lock()
	r.calls = append(r.calls, recordedCall{method: method, req: proto.Clone(m), bytes: b})
	r.mu.Unlock()
	err = invoker(ctx, method, req, reply, cc, opts...)
	if resp, ok := reply.(*backupv1.RestoreResponse); ok && err == nil && r.tamper {
		resp.Ciphertext[len(resp.Ciphertext)/2] ^= 0x20
		r.mu.Lock()
		r.tampers++
		r.mu.Unlock()
	}
	return err
}

// TestServerNeverSeesSecrets watches every request of a backup, a recovery key, a
// restore, a change of password and a recovery: none carries the password, the
// recovery key, the OPRF input or output, the stretched key, the encryption key, the
// key bundle or a private key; the backup RPCs carry only blinded elements,
// ciphertext and AEAD/KDF parameters, the auth key's hash, and (to Restore) the auth
// key. A ciphertext damaged on its way back is the typed error, and leaves no keys.
func TestServerNeverSeesSecrets(t *testing.T) {
	n, app := startBackupNode(t, 0)
	ctx := context.Background()
	var mu sync.Mutex
	secrets := map[string][][]byte{}
	sdk.SetTraceSecret(t, func(name string, value []byte) {
		mu.Lock()
		secrets[name] = append(secrets[name], value)
		mu.Unlock()
	})
	rec := &recorder{}
	a := newBackupDevice(t, n, app, "alice", grpc.WithChainUnaryInterceptor(rec.intercept))
	mustRegister(t, a)
	password, newPassword := []byte("a password nobody else may see"), []byte("another password, as secret")
	mustBackUp(t, a, password)
	recoveryKey, err := a.CreateRecoveryKey(ctx)
	if err != nil {
		t.Fatal(err)
	}
	b := newBackupDevice(t, n, app, "alice", grpc.WithChainUnaryInterceptor(rec.intercept))
	if err := b.RestorePrivateKey(ctx, password); err != nil {
		t.Fatal(err)
	}
	if _, err := b.ChangePassword(ctx, password, newPassword); err != nil {
		t.Fatal(err)
	}
	c := newBackupDevice(t, n, app, "alice", grpc.WithChainUnaryInterceptor(rec.intercept))
	if err := c.RestoreFromRecoveryKey(ctx, recoveryKey); err != nil {
		t.Fatal(err)
	}

	ks, err := keystore.Open(a.keystore, []byte("local passphrase of this device"))
	if err != nil {
		t.Fatal(err)
	}
	kp, _ := ks.Current()
	kem, err := kp.KEMPrivateKey()
	if err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	forbidden := map[string][][]byte{
		"password": {password, newPassword}, "recovery key text": {[]byte(recoveryKey), []byte(strings.ReplaceAll(recoveryKey, "-", ""))},
		"signing seed": {kp.SigningSeed()}, "KEM private key": {kem},
	}
	for name, values := range secrets {
		forbidden[name] = values
	}
	mu.Unlock()
	for _, name := range []string{"oprf input", "oprf output", "stretched", "encryption key", "key bundle", "recovery key"} {
		if len(forbidden[name]) == 0 {
			t.Fatalf("no %s was traced: the test would prove nothing", name)
		}
	}
	// Five evaluations (backup, recovery backup, restore, change password's two) and
	// the recovery's one: six OPRF outputs, each different.
	if got := len(forbidden["oprf output"]); got != 6 {
		t.Fatalf("%d OPRF outputs traced; want 6", got)
	}

	rec.mu.Lock()
	calls := rec.calls
	rec.mu.Unlock()
	perMethod := map[string]int{}
	var authKeys, authKeyHashes [][]byte
	for _, call := range calls {
		perMethod[call.method]++
		for name, values := range forbidden {
			for _, v := range values {
				if bytes.Contains(call.bytes, v) {
					t.Errorf("%s request carries the %s", call.method, name)
				}
			}
		}
		switch r := call.req.(type) {
		case *backupv1.EvaluateRequest:
			if len(r.GetBlindedElement()) != keybackup.ElementSize {
				t.Errorf("Evaluate with a %d-byte element", len(r.GetBlindedElement()))
			}
		case *backupv1.RestoreRequest:
			authKeys = append(authKeys, r.GetAuthKey())
		case *backupv1.PutBackupRequest:
			authKeyHashes = append(authKeyHashes, r.GetRecord().GetAuthKeyHash())
		}
	}
	if perMethod[backupv1.BackupService_Evaluate_FullMethodName] != 6 || perMethod[backupv1.BackupService_PutBackup_FullMethodName] != 3 || perMethod[backupv1.BackupService_Restore_FullMethodName] != 3 {
		t.Fatalf("backup calls seen: %v", perMethod)
	}
	// Each auth key sent to Restore is the preimage of a stored hash, and no auth key
	// was ever sent with a PutBackup.
	for _, k := range authKeys {
		h := sha256.Sum256(k)
		found := false
		for _, hash := range authKeyHashes {
			found = found || bytes.Equal(hash, h[:])
		}
		if !found {
			t.Errorf("auth key %x matches no stored hash", k)
		}
		for _, call := range calls {
			if call.method == backupv1.BackupService_PutBackup_FullMethodName && bytes.Contains(call.bytes, k) {
				t.Error("a PutBackup carries an auth key")
			}
		}
	}

	// A ciphertext damaged on its way back.
	rec.tamper = true
	d := newBackupDevice(t, n, app, "alice", grpc.WithChainUnaryInterceptor(rec.intercept))
	err = d.RestorePrivateKey(ctx, newPassword)
	if !errors.Is(err, sdk.ErrBackupTampered) || !errors.Is(err, keybackup.ErrDecrypt) || rec.tampers != 1 {
		t.Fatalf("restore of a damaged ciphertext: %v (%d tampered)", err, rec.tampers)
	}
	if d.HasPrivateKey() {
		t.Fatal("a damaged backup left keys")
	}
	if _, err := os.Stat(d.keystore); !os.IsNotExist(err) {
		t.Fatalf("a damaged backup left a keystore file: %v", err)
	}
}

// TestWeakParametersRefused: a service that describes the password backup with cheap
// Argon2id parameters (to receive an auth key it could attack cheaply) is refused
// before any evaluation, so no attempt is spent either.
func TestWeakParametersRefused(t *testing.T) {
	t.Parallel()
	n, app, a := startWithAlice(t, 0)
	ctx := context.Background()
	mustBackUp(t, a, []byte("pw"))
	var evaluations int
	b := newBackupDevice(t, n, app, "alice", grpc.WithChainUnaryInterceptor(
		func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
			if method == backupv1.BackupService_Evaluate_FullMethodName {
				evaluations++
			}
			err := invoker(ctx, method, req, reply, cc, opts...)
			if r, ok := reply.(*backupv1.GetBackupInfoResponse); ok && err == nil {
				for _, info := range r.GetBackups() {
					info.Kdf.Time, info.Kdf.MemoryKib = 1, 8192
				}
			}
			return err
		}))
	if err := b.RestorePrivateKey(ctx, []byte("pw")); !errors.Is(err, keybackup.ErrWeakParams) || evaluations != 0 {
		t.Fatalf("restore with weakened parameters: %v after %d evaluations; want ErrWeakParams before any", err, evaluations)
	}
	if infos, err := a.Backups(ctx); err != nil || infos[0].GetRemainingAttempts() != 10 {
		t.Fatalf("Backups = %v, %v", infos, err)
	}
}
