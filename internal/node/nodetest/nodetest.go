// Package nodetest starts a whole Umbra (every role, or some, and the gateway) inside a
// test, on free loopback ports with a temporary data folder, and acts as an app
// backend for it: it creates apps, resolves user ids and issues tokens. It is for
// tests of clients and of cross-service behaviour.
package nodetest

import (
	"context"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"
	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/umbra-e2ee/umbra/gateway"
	"github.com/umbra-e2ee/umbra/internal/boltdb"
	"github.com/umbra-e2ee/umbra/internal/grpcserver"
	"github.com/umbra-e2ee/umbra/internal/node"
	"github.com/umbra-e2ee/umbra/internal/runtest"
	"github.com/umbra-e2ee/umbra/pkg/grpcclient"
	identityv1 "github.com/umbra-e2ee/umbra/proto/umbra/identity/v1"
	messagingv1 "github.com/umbra-e2ee/umbra/proto/umbra/messaging/v1"
	"github.com/umbra-e2ee/umbra/services/backup"
)

// Admin and ServiceToken are the credentials of every node a test starts.
const (
	Admin        = "nodetest-admin-credential-0123456789"
	ServiceToken = "nodetest-service-token-0123456789"
	BackupSecret = "nodetest-backup-secret-0123456789abcdef"
)

// Node is a running Umbra.
type Node struct {
	// GRPC is the services' address; HTTP the gateway's base URL.
	GRPC string
	HTTP string
	// Metrics is the base URL of the metrics listener (its /metrics).
	Metrics string
	// DataDir holds the services' files.
	DataDir string
	// Stores are the services' open stores by role, to fail their writes
	// (boltdb.DB.FailCommits).
	Stores map[string]*boltdb.DB
	conn   *grpc.ClientConn
	stop   func() error
}

// Start runs every role and the gateway until the test ends. edit, if given, adjusts
// the configuration first.
func Start(t testing.TB, edit ...func(*node.Config)) *Node {
	t.Helper()
	cfg := node.Config{
		Roles:           gateway.Services(),
		DataDir:         t.TempDir(),
		GRPC:            grpcserver.Config{Addr: "127.0.0.1:0"},
		Gateway:         &gateway.Config{Addr: "127.0.0.1:0"},
		AdminCredential: Admin,
		ServiceToken:    ServiceToken,
		Backup:          backup.Config{Secret: []byte(BackupSecret)},
		MetricsAddr:     "127.0.0.1:0",
	}
	for _, e := range edit {
		e(&cfg)
	}
	var stores map[string]*boltdb.DB
	tune := cfg.StoresOpen
	cfg.StoresOpen = func(m map[string]*boltdb.DB) {
		stores = m
		if tune != nil {
			tune(m)
		}
	}
	r := runtest.MustStart(t, "nodetest: node", func(ctx context.Context, ready func(context.Context, node.Addrs) error) error {
		cfg.Ready = ready
		return node.Run(ctx, cfg, zaptest.NewLogger(t))
	})
	addrs := r.Ready
	conn, err := grpcclient.Dial(grpcclient.Config{Addr: addrs.GRPC})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	n := &Node{GRPC: addrs.GRPC, DataDir: cfg.DataDir, Stores: stores, conn: conn, stop: r.Stop}
	if addrs.Gateway != "" {
		n.HTTP = "http://" + addrs.Gateway
	}
	if addrs.Metrics != "" {
		n.Metrics = "http://" + addrs.Metrics
	}
	return n
}

// Stop stops the node as SIGTERM does (its context ends: a graceful stop) and returns
// what it returned; the test's cleanup then has nothing left to stop.
func (n *Node) Stop() error { return n.stop() }

// Conn is a plain connection to the node, with no credential attached.
func (n *Node) Conn() *grpc.ClientConn { return n.conn }

// REST sends one request to the node's gateway: method on path, with bearer (if any)
// as the credential and body (if any) as JSON. It returns the answer's status and body.
func (n *Node) REST(t testing.TB, method, path, bearer, body string) (int, []byte) {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, n.HTTP+path, rd)
	if err != nil {
		t.Fatal(err)
	}
	if bearer != "" {
		req.Header.Set("Authorization", "Bearer "+bearer)
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	out, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	return resp.StatusCode, out
}

// App is an app registered on a node, seen from its backend.
type App struct {
	ID     string
	APIKey string
	node   *Node
}

// NewApp creates an app as the admin.
func (n *Node) NewApp(t testing.TB) *App {
	t.Helper()
	ctx := metadata.AppendToOutgoingContext(context.Background(), "authorization", "Bearer "+Admin)
	resp, err := identityv1.NewIdentityServiceClient(n.conn).CreateApp(ctx, &identityv1.CreateAppRequest{DisplayName: t.Name()})
	if err != nil {
		t.Fatal(err)
	}
	return &App{ID: resp.GetApp().GetAppId(), APIKey: resp.GetApiKey(), node: n}
}

// AppWithKey is an app created earlier (on this node's store, by another node), seen
// from its backend with its API key.
func (n *Node) AppWithKey(id, apiKey string) *App { return &App{ID: id, APIKey: apiKey, node: n} }

func (a *App) ctx(ctx context.Context) context.Context {
	return metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+a.APIKey)
}

// User returns the identity of the app's user uid.
func (a *App) User(t testing.TB, uid string) string {
	t.Helper()
	return a.resolve(t, &identityv1.ResolveIdentitiesRequest{Uids: []string{uid}}).GetUsers()[uid]
}

// Group returns the group identity of the app's group guid.
func (a *App) Group(t testing.TB, guid string) string {
	t.Helper()
	return a.resolve(t, &identityv1.ResolveIdentitiesRequest{Guids: []string{guid}}).GetGroups()[guid]
}

// resolve resolves, with the app's API key, the ids req names.
func (a *App) resolve(t testing.TB, req *identityv1.ResolveIdentitiesRequest) *identityv1.ResolveIdentitiesResponse {
	t.Helper()
	resp, err := identityv1.NewIdentityServiceClient(a.node.conn).ResolveIdentities(a.ctx(context.Background()), req)
	if err != nil {
		t.Fatal(err)
	}
	return resp
}

// IssueToken issues an access token for identity with the given lifetime (0: the
// default).
func (a *App) IssueToken(ctx context.Context, identity string, ttl time.Duration) (string, error) {
	req := &identityv1.IssueTokenRequest{Identity: identity}
	if ttl > 0 {
		req.Ttl = durationpb.New(ttl)
	}
	resp, err := identityv1.NewIdentityServiceClient(a.node.conn).IssueToken(a.ctx(ctx), req)
	if err != nil {
		return "", err
	}
	return resp.GetAccessToken(), nil
}

// Token issues a default token for identity, failing the test on error.
func (a *App) Token(t testing.TB, identity string) string {
	t.Helper()
	tok, err := a.IssueToken(context.Background(), identity, 0)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// TokenFunc returns an SDK-style token source for identity.
func (a *App) TokenFunc(identity string) func(context.Context) (string, error) {
	return func(ctx context.Context) (string, error) { return a.IssueToken(ctx, identity, 0) }
}

// AllowPlaintextDirect lets the app's users send PLAINTEXT direct messages (refused by
// default), as an operator does with the admin credential, failing the test on error.
// Tests whose point is not encryption use it to send opaque bytes without cards.
func (a *App) AllowPlaintextDirect(t testing.TB) {
	t.Helper()
	ctx := metadata.AppendToOutgoingContext(context.Background(), "authorization", "Bearer "+Admin)
	_, err := messagingv1.NewMessagingServiceClient(a.node.conn).UpdateAppSettings(ctx, &messagingv1.UpdateAppSettingsRequest{
		AppId: a.ID, Settings: &messagingv1.AppSettings{AllowPlaintextDirect: true}})
	if err != nil {
		t.Fatal(err)
	}
}

// ResetGrant issues a reset grant for identity, as the app backend does after it has
// re-authenticated a user who lost every key, failing the test on error.
func (a *App) ResetGrant(t testing.TB, identity string) string {
	t.Helper()
	resp, err := identityv1.NewIdentityServiceClient(a.node.conn).IssueResetGrant(a.ctx(context.Background()), &identityv1.IssueResetGrantRequest{Identity: identity})
	if err != nil {
		t.Fatal(err)
	}
	return resp.GetResetGrant()
}
