package identity

import (
	"path/filepath"
	"testing"

	"google.golang.org/grpc"

	"github.com/umbra-e2ee/umbra/internal/clocktest"
	"github.com/umbra-e2ee/umbra/internal/servicetest"
	"github.com/umbra-e2ee/umbra/pkg/auth"
	identityv1 "github.com/umbra-e2ee/umbra/proto/umbra/identity/v1"
)

const (
	testAdmin        = servicetest.Admin
	testServiceToken = servicetest.ServiceToken
)

// as returns a context carrying cred as the bearer credential (none when empty).
var as = servicetest.As

// env is an identity service on a real loopback gRPC listener, with the production
// interceptors, and the REST gateway in front of it on httptest.
type env struct {
	store   *BoltStore
	srv     *Server
	clock   *clocktest.Clock
	conn    *grpc.ClientConn
	client  identityv1.IdentityServiceClient
	httpURL string
}

func newEnv(t *testing.T) *env {
	t.Helper()
	// The store is opened first so that it closes last, once the env has stopped.
	store := openBolt(t, filepath.Join(t.TempDir(), "identity.db"))
	n := servicetest.NewEnv(t, servicetest.Options{})
	log, clk := n.Log, n.Clock
	srv, err := New(store, Config{Clock: clk.Now}, log)
	if err != nil {
		t.Fatal(err)
	}
	n.Serve(srv, []auth.Table{Policies()}, srv.Register)
	conn := n.Dial()
	return &env{store: store, srv: srv, clock: clk, conn: conn, client: identityv1.NewIdentityServiceClient(conn), httpURL: n.Gateway()}
}

// newApp creates an app as the admin and returns its id and API key.
func (e *env) newApp(t *testing.T, name string) (string, string) {
	t.Helper()
	return servicetest.NewApp(t, e.client, name)
}

// user resolves uid in the app of apiKey.
func (e *env) user(t *testing.T, apiKey, uid string) string {
	t.Helper()
	return servicetest.Resolve(t, e.client, apiKey, uid)[0]
}

// token issues an access token for identity.
func (e *env) token(t *testing.T, apiKey, identity string) string {
	t.Helper()
	return servicetest.Token(t, e.client, apiKey, identity, 0)
}

// snapshot returns every key and value of the store, to prove that a refused request
// wrote nothing.
func (e *env) snapshot(t testing.TB) map[string]string {
	t.Helper()
	return servicetest.Snapshot(t, e.store.DB())
}
