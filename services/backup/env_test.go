package backup

import (
	"context"
	"crypto/sha256"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/status"

	"github.com/umbra-e2ee/umbra/internal/clocktest"
	"github.com/umbra-e2ee/umbra/internal/servicetest"
	"github.com/umbra-e2ee/umbra/internal/servicetest/identitytest"
	"github.com/umbra-e2ee/umbra/internal/servicetest/messagingtest"
	"github.com/umbra-e2ee/umbra/pkg/auth"
	"github.com/umbra-e2ee/umbra/pkg/grpcclient"
	backupv1 "github.com/umbra-e2ee/umbra/proto/umbra/backup/v1"
	identityv1 "github.com/umbra-e2ee/umbra/proto/umbra/identity/v1"
	messagingv1 "github.com/umbra-e2ee/umbra/proto/umbra/messaging/v1"
	"github.com/umbra-e2ee/umbra/services/identity"
	"github.com/umbra-e2ee/umbra/services/messaging"
)

// testSecret is the backup service's server secret in the tests.
const testSecret = "test-backup-secret-0123456789abcdef"

// The helpers every service's tests share.
var (
	as       = servicetest.As
	wantCode = servicetest.WantCode
)

// env is the backup service, the identity service (apps and tokens) and the
// messaging service (the owners' event streams) on one real loopback gRPC listener
// with the production interceptors: the shape of `umbra dev`. The backup service
// reaches the messaging service over gRPC with the service token, as in a cluster.
type env struct {
	dir       string
	store     *BoltStore
	srv       *Server
	clock     *clocktest.Clock
	conn      *grpc.ClientConn
	client    backupv1.BackupServiceClient
	messaging messagingv1.MessagingServiceClient
	ids       identityv1.IdentityServiceClient
	stop      func()
	// serveEvents starts the late messaging listener (envOptions.lateEvents).
	serveEvents func()
}

// envOptions vary an env. The zero value is the defaults in a fresh folder.
type envOptions struct {
	// dir is the data folder; empty means a new t.TempDir().
	dir string
	// clock is shared with a previous env; nil means a new one at the current time.
	clock *clocktest.Clock
	// cfg is the backup service's configuration; an empty Secret means testSecret.
	cfg Config
	// noEvents starts the backup service without a messaging client.
	noEvents bool
	// lateEvents points the backup service's messaging client at a listener of its
	// own that serves only once env.serveEvents is called.
	lateEvents bool
	// quiet discards logs (benchmarks log a line per call otherwise).
	quiet bool
}

func newEnv(t testing.TB, opts envOptions) *env {
	t.Helper()
	n := servicetest.NewEnv(t, servicetest.Options{Dir: opts.dir, Clock: opts.clock, Quiet: opts.quiet})
	log, clk := n.Log, n.Clock
	opts.dir = n.Dir
	ids := identitytest.Start(t, n)
	msg := messagingtest.Start(t, n, nil, nil, messaging.Config{})
	policies := []auth.Table{identity.Policies(), messaging.Policies(), Policies()}
	peerAddr, serveEvents := n.Addr, func() {}
	if opts.lateEvents {
		late := n.Listen()
		lateServer, _ := n.NewServer(ids, policies...)
		msg.Register(lateServer.Server)
		serveEvents = sync.OnceFunc(func() { n.ServeOn(lateServer, late) })
		peerAddr = late.Addr().String()
	}
	peer := n.DialPeer(grpcclient.Config{Addr: peerAddr, Peer: true})
	store := servicetest.OpenFile(t, n, "backup.db", OpenBoltStore, Verify)
	cfg := opts.cfg
	if cfg.Secret == nil {
		cfg.Secret = []byte(testSecret)
	}
	if cfg.Clock == nil {
		cfg.Clock = clk.Now
	}
	if cfg.OutboxRetry == 0 {
		cfg.OutboxRetry = 50 * time.Millisecond
	}
	var events Events
	if !opts.noEvents {
		events = messagingv1.NewMessagingServiceClient(peer)
	}
	srv, err := New(store, events, cfg, log.Named("backup"))
	if err != nil {
		t.Fatal(err)
	}
	n.Serve(ids, policies, ids.Register, msg.Register, srv.Register)
	n.Run(msg.Run)
	n.Run(srv.Run)
	conn := n.Dial()
	return &env{
		dir: opts.dir, store: store, srv: srv, clock: clk, conn: conn,
		client:      backupv1.NewBackupServiceClient(conn),
		messaging:   messagingv1.NewMessagingServiceClient(conn),
		ids:         identityv1.NewIdentityServiceClient(conn),
		stop:        n.Stop,
		serveEvents: serveEvents,
	}
}

// app is an app and its API key.
type app struct{ id, key string }

// newApp creates an app, named for the test, as the admin.
func (e *env) newApp(t testing.TB) app {
	t.Helper()
	id, key := servicetest.NewApp(t, e.ids, t.Name())
	return app{id: id, key: key}
}

// user is an identity of an app with an access token.
type user struct {
	app      app
	identity string
	token    string
}

func (u user) ctx() context.Context { return as(u.token) }

// newUser resolves uid in a and issues it a token.
func (e *env) newUser(t testing.TB, a app, uid string) user {
	t.Helper()
	id := servicetest.Resolve(t, e.ids, a.key, uid)[0]
	return user{app: a, identity: id, token: servicetest.Token(t, e.ids, a.key, id, 0)}
}

// backedUpAlice is the user alice, in an app of her own, with a first backup of secret
// in slot: where most tests start.
func (e *env) backedUpAlice(t testing.TB, slot backupv1.BackupSlot, secret string) user {
	t.Helper()
	alice := e.newUser(t, e.newApp(t), "alice")
	e.mustBackUp(t, alice, slot, secret, 0)
	return alice
}

// blind blinds the input of u's secret for slot.
func blind(t testing.TB, u user, slot backupv1.BackupSlot, secret string) Blinded {
	t.Helper()
	return Blind(t, []byte("test input\x00"+u.identity+"\x00"+slot.String()+"\x00"+secret))
}

// authKey stands in for the client's Argon2id and HKDF: the service never sees how
// the auth key is made, only its hash.
func authKey(output []byte) []byte {
	h := sha256.Sum256(append([]byte("test auth key\x00"), output...))
	return h[:]
}

// evaluate runs one evaluation of u's secret, and returns the response and the OPRF
// output.
func (e *env) evaluate(t testing.TB, u user, slot backupv1.BackupSlot, purpose backupv1.EvaluationPurpose, secret string) (*backupv1.EvaluateResponse, []byte, error) {
	t.Helper()
	b := blind(t, u, slot, secret)
	resp, err := e.client.Evaluate(u.ctx(), &backupv1.EvaluateRequest{Slot: slot, Purpose: purpose, BlindedElement: b.Element})
	if err != nil {
		return nil, nil, err
	}
	return resp, b.finish(t, resp), nil
}

// testRecord is a valid record for authKey; the ciphertext names secret so a restore
// can tell which backup it got.
func testRecord(secret string, key []byte) *backupv1.BackupRecord {
	h := sha256.Sum256(key)
	return &backupv1.BackupRecord{
		Ciphertext:  []byte("sealed bundle of " + secret + strings.Repeat("\x00", 16)),
		Nonce:       []byte("nonce-12byte"),
		Aead:        backupv1.BackupAead_BACKUP_AEAD_CHACHA20_POLY1305,
		AuthKeyHash: h[:],
		Kdf:         &backupv1.Argon2IdParams{Time: 3, MemoryKib: 64 << 10, Threads: 4, Salt: []byte("0123456789abcdef")},
	}
}

// backUp stores secret's backup in u's slot over expected, the whole client flow, and
// returns the stored backup.
func (e *env) backUp(t testing.TB, u user, slot backupv1.BackupSlot, secret string, expected uint64) (*backupv1.BackupInfo, error) {
	t.Helper()
	ev, out, err := e.evaluate(t, u, slot, backupv1.EvaluationPurpose_EVALUATION_PURPOSE_BACKUP, secret)
	if err != nil {
		return nil, err
	}
	resp, err := e.client.PutBackup(u.ctx(), &backupv1.PutBackupRequest{
		Slot: slot, Record: testRecord(secret, authKey(out)), ExpectedVersion: expected, OprfKeyVersion: ev.GetOprfKeyVersion(),
	})
	if err != nil {
		return nil, err
	}
	return resp.GetBackup(), nil
}

// mustBackUp is backUp that fails the test on error.
func (e *env) mustBackUp(t testing.TB, u user, slot backupv1.BackupSlot, secret string, expected uint64) *backupv1.BackupInfo {
	t.Helper()
	info, err := e.backUp(t, u, slot, secret, expected)
	if err != nil {
		t.Fatalf("back up: %v", err)
	}
	return info
}

// restore runs the whole restore flow with secret: a RESTORE evaluation, then Restore.
func (e *env) restore(t testing.TB, u user, slot backupv1.BackupSlot, secret string) (*backupv1.RestoreResponse, error) {
	t.Helper()
	ev, out, err := e.evaluate(t, u, slot, backupv1.EvaluationPurpose_EVALUATION_PURPOSE_RESTORE, secret)
	if err != nil {
		return nil, err
	}
	return e.client.Restore(u.ctx(), &backupv1.RestoreRequest{Slot: slot, AuthKey: authKey(out), ExpectedVersion: ev.GetOprfKeyVersion()})
}

// info returns u's backup in slot, or nil.
func (e *env) info(t testing.TB, u user, slot backupv1.BackupSlot) *backupv1.BackupInfo {
	t.Helper()
	resp, err := e.client.GetBackupInfo(u.ctx(), &backupv1.GetBackupInfoRequest{})
	if err != nil {
		t.Fatal(err)
	}
	for _, b := range resp.GetBackups() {
		if b.GetSlot() == slot {
			return b
		}
	}
	return nil
}

// failureOf returns the RestoreFailure detail of err, or nil.
func failureOf(err error) *backupv1.RestoreFailure {
	st, _ := status.FromError(err)
	for _, d := range st.Details() {
		if f, ok := d.(*backupv1.RestoreFailure); ok {
			return f
		}
	}
	return nil
}

// snapshot returns every key, value and bucket sequence of backup.db, to prove that a
// refused request wrote nothing.
func (e *env) snapshot(t testing.TB) map[string]string {
	t.Helper()
	return servicetest.SnapshotWithSequences(t, e.store.DB())
}
