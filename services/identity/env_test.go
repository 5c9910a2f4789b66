package identity

import (
	"context"
	"net"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/umbra-e2ee/umbra/internal/clocktest"

	bolt "go.etcd.io/bbolt"
	"go.uber.org/zap/zaptest"
	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"

	"github.com/umbra-e2ee/umbra/gateway"
	"github.com/umbra-e2ee/umbra/internal/grpcserver"
	"github.com/umbra-e2ee/umbra/pkg/auth"
	"github.com/umbra-e2ee/umbra/pkg/grpcclient"
	identityv1 "github.com/umbra-e2ee/umbra/proto/umbra/identity/v1"
)

const (
	testAdmin        = "test-admin-credential-0123456789"
	testServiceToken = "test-service-token-0123456789"
)

// clock is the settable time source the servers and the token verifier share.
type clock = clocktest.Clock

// env is an identity service on a real loopback gRPC listener, with the production
// interceptors, and the REST gateway in front of it on httptest.
type env struct {
	store   *BoltStore
	srv     *Server
	clock   *clock
	conn    *grpc.ClientConn
	client  identityv1.IdentityServiceClient
	httpURL string
}

func newEnv(t *testing.T) *env {
	t.Helper()
	log := zaptest.NewLogger(t)
	store, _ := openTestStore(t)
	clk := clocktest.New(time.Now().Truncate(time.Second))
	srv, err := New(store, Config{Clock: clk.Now}, log)
	if err != nil {
		t.Fatal(err)
	}
	table, err := auth.Merge(grpcserver.SystemPolicies(), Policies())
	if err != nil {
		t.Fatal(err)
	}
	authn := auth.New(auth.Config{
		Policies:        table,
		Tokens:          auth.NewVerifier(srv, srv, "", clk.Now),
		AppKeys:         srv,
		AdminCredential: testAdmin,
		ServiceToken:    testServiceToken,
		// The tables of bad requests send many wrong credentials from one address; the
		// failure limit has tests of its own (pkg/auth).
		Failures: auth.FailureLimit{Burst: -1},
	})
	gs, err := grpcserver.New(grpcserver.Config{Addr: "127.0.0.1:0"}, authn, log, nil)
	if err != nil {
		t.Fatal(err)
	}
	srv.Register(gs.Server)
	if err := grpcserver.CheckPolicies(gs.Server, table); err != nil {
		t.Fatal(err)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { gs.Serve(ctx, lis); close(done) }()
	t.Cleanup(func() { cancel(); <-done })

	conn, err := grpcclient.Dial(grpcclient.Config{Addr: lis.Addr().String()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })

	up := map[string]grpcclient.Config{}
	for _, s := range gateway.Services() {
		up[s] = grpcclient.Config{Addr: lis.Addr().String()}
	}
	g, err := gateway.New(ctx, gateway.Config{Upstreams: up}, log)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(g.Close)
	hs := httptest.NewServer(g.Handler())
	t.Cleanup(hs.Close)
	return &env{store: store, srv: srv, clock: clk, conn: conn, client: identityv1.NewIdentityServiceClient(conn), httpURL: hs.URL}
}

// as returns ctx carrying cred as the bearer credential.
func as(cred string) context.Context {
	ctx := context.Background()
	if cred == "" {
		return ctx
	}
	return metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+cred)
}

// newApp creates an app as the admin and returns its id and API key.
func (e *env) newApp(t *testing.T, name string) (string, string) {
	t.Helper()
	resp, err := e.client.CreateApp(as(testAdmin), &identityv1.CreateAppRequest{DisplayName: name})
	if err != nil {
		t.Fatal(err)
	}
	return resp.GetApp().GetAppId(), resp.GetApiKey()
}

// user resolves uid in the app of apiKey.
func (e *env) user(t *testing.T, apiKey, uid string) string {
	t.Helper()
	resp, err := e.client.ResolveIdentities(as(apiKey), &identityv1.ResolveIdentitiesRequest{Uids: []string{uid}})
	if err != nil {
		t.Fatal(err)
	}
	return resp.GetUsers()[uid]
}

// token issues an access token for identity.
func (e *env) token(t *testing.T, apiKey, identity string) string {
	t.Helper()
	resp, err := e.client.IssueToken(as(apiKey), &identityv1.IssueTokenRequest{Identity: identity})
	if err != nil {
		t.Fatal(err)
	}
	return resp.GetAccessToken()
}

// snapshot returns every key and value of the store, to prove that a refused request
// wrote nothing.
func (e *env) snapshot(t *testing.T) map[string]string {
	t.Helper()
	out := map[string]string{}
	err := e.store.DB().View(func(tx *bolt.Tx) error {
		return tx.ForEach(func(name []byte, b *bolt.Bucket) error {
			return b.ForEach(func(k, v []byte) error {
				out[string(name)+"/"+string(k)] = string(v)
				return nil
			})
		})
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}
