package card

import (
	"context"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/umbra-e2ee/umbra/internal/clocktest"
	"github.com/umbra-e2ee/umbra/internal/servicetest"
	"github.com/umbra-e2ee/umbra/internal/servicetest/identitytest"
	"github.com/umbra-e2ee/umbra/pkg/auth"
	"github.com/umbra-e2ee/umbra/pkg/e2ee"
	cardv1 "github.com/umbra-e2ee/umbra/proto/umbra/card/v1"
	identityv1 "github.com/umbra-e2ee/umbra/proto/umbra/identity/v1"
	"github.com/umbra-e2ee/umbra/services/identity"
)

const (
	testAdmin        = servicetest.Admin
	testServiceToken = servicetest.ServiceToken
)

// The helpers every service's tests share.
var (
	as        = servicetest.As
	asService = servicetest.AsService
	// wantCode stops the test on a mismatch: the tests go on from the refusal.
	wantCode = servicetest.MustCode
)

// env is the card service and the identity service (for apps and tokens) on one real
// loopback gRPC listener with the production interceptors, and the REST gateway in
// front of them on httptest: the shape of `umbra dev`.
type env struct {
	dir     string
	store   *BoltStore
	srv     *Server
	clock   *clocktest.Clock
	conn    *grpc.ClientConn
	client  cardv1.CardServiceClient
	ids     identityv1.IdentityServiceClient
	httpURL string
	stop    func()
}

// envOptions vary an env. The zero value is the defaults in a fresh folder.
type envOptions struct {
	// dir is the data folder; empty means a new t.TempDir().
	dir string
	// clock is shared with a previous env; nil means a new one at the current time.
	clock *clocktest.Clock
	cfg   Config
	// quiet discards logs (benchmarks log a line per call otherwise).
	quiet bool
	// postgres, when set, is the URL of the database the store is in (store is then
	// nil); otherwise card.db in dir.
	postgres string
}

func newEnv(t testing.TB, opts envOptions) *env {
	t.Helper()
	n := servicetest.NewEnv(t, servicetest.Options{Dir: opts.dir, Clock: opts.clock, Quiet: opts.quiet})
	log, clk := n.Log, n.Clock
	opts.dir = n.Dir
	ids := identitytest.Start(t, n)
	var store Store
	var bolt *BoltStore
	if opts.postgres != "" {
		store = servicetest.Open(t, n, func() (*PostgresStore, error) {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			return OpenPostgresStore(ctx, opts.postgres, log.Named("store"))
		})
	} else {
		bolt = servicetest.OpenFile(t, n, "card.db", OpenBoltStore, Verify)
		store = bolt
	}
	cfg := opts.cfg
	cfg.Clock = clk.Now
	if cfg.Grants == nil {
		cfg.Grants = auth.NewVerifier(ids, ids, "", clk.Now)
	}
	srv, err := New(store, cfg, log.Named("card"))
	if err != nil {
		t.Fatal(err)
	}
	n.Serve(ids, []auth.Table{identity.Policies(), Policies()}, ids.Register, srv.Register)
	conn := n.Dial()
	return &env{
		dir: opts.dir, store: bolt, srv: srv, clock: clk, conn: conn,
		client: cardv1.NewCardServiceClient(conn), ids: identityv1.NewIdentityServiceClient(conn),
		httpURL: n.Gateway(), stop: n.Stop,
	}
}

// app is an app and its API key.
type app struct{ id, key string }

// newApp creates an app as the admin.
func (e *env) newApp(t testing.TB, name string) app {
	t.Helper()
	id, key := servicetest.NewApp(t, e.ids, name)
	return app{id: id, key: key}
}

// user is an identity of an app with an access token.
type user struct {
	app      app
	identity string
	token    string
}

func (u user) ctx() context.Context { return as(u.token) }

// newUsers resolves uids in a and issues each a token.
func (e *env) newUsers(t testing.TB, a app, uids ...string) []user {
	t.Helper()
	out := make([]user, len(uids))
	for i, id := range servicetest.Resolve(t, e.ids, a.key, uids...) {
		out[i] = user{app: a, identity: id, token: servicetest.Token(t, e.ids, a.key, id, 0)}
	}
	return out
}

func (e *env) newUser(t testing.TB, a app, uid string) user {
	t.Helper()
	return e.newUsers(t, a, uid)[0]
}

// grant asks the identity service, with the app key of u's app, for a reset grant for
// u that lives ttl (0: the default).
func (e *env) grant(t testing.TB, u user, ttl time.Duration) string {
	t.Helper()
	req := &identityv1.IssueResetGrantRequest{Identity: u.identity}
	if ttl != 0 {
		req.Ttl = durationpb.New(ttl)
	}
	resp, err := e.ids.IssueResetGrant(as(u.app.key), req)
	if err != nil {
		t.Fatal(err)
	}
	return resp.GetResetGrant()
}

// resetRequest is the PublishCard request of a reset card of u for kp, with grant.
func (e *env) resetRequest(t testing.TB, u user, kp *e2ee.KeyPair, grant string) *cardv1.PublishCardRequest {
	t.Helper()
	req := e.cardRequest(t, u, kp, nil, nil)
	req.ResetGrant = grant
	return req
}

// newKeys generates a key pair of suite.
func newKeys(t testing.TB, suite e2ee.Suite) *e2ee.KeyPair {
	t.Helper()
	kp, err := e2ee.GenerateKeyPair(suite)
	if err != nil {
		t.Fatal(err)
	}
	return kp
}

// cardRequest builds the PublishCard request of a card of u for kp, created now,
// replacing previous (nil for a first card), endorsed by endorser when it is set.
func (e *env) cardRequest(t testing.TB, u user, kp *e2ee.KeyPair, previous []byte, endorser *e2ee.KeyPair) *cardv1.PublishCardRequest {
	t.Helper()
	req, err := servicetest.CardRequest(kp, u.identity, e.clock.Now(), previous, endorser)
	if err != nil {
		t.Fatal(err)
	}
	return req
}

// publish publishes a card as cardRequest builds it and returns the stored card.
func (e *env) publish(t testing.TB, u user, kp *e2ee.KeyPair, previous []byte, endorser *e2ee.KeyPair) *cardv1.Card {
	t.Helper()
	resp, err := e.client.PublishCard(u.ctx(), e.cardRequest(t, u, kp, previous, endorser))
	if err != nil {
		t.Fatal(err)
	}
	return resp.GetCard()
}

// snapshot returns every key, value and bucket sequence of card.db, to prove that a
// refused request wrote nothing.
func (e *env) snapshot(t testing.TB) map[string]string {
	t.Helper()
	return snapshot(t, e.store)
}

// snapshot returns every key, value and bucket sequence of s.
func snapshot(t testing.TB, s *BoltStore) map[string]string {
	t.Helper()
	return servicetest.SnapshotWithSequences(t, s.DB())
}

// notAdmin is the refusals of an admin-only method called with req by each caller that
// is not the admin: no credential, u's access token and the API key of u's app, each
// Unauthenticated.
func notAdmin[Req, Resp any](u user, name string, method func(context.Context, Req, ...grpc.CallOption) (Resp, error), req Req) []servicetest.Refusal {
	var out []servicetest.Refusal
	for _, c := range []struct{ who, cred string }{
		{"no credential", ""},
		{"a user's access token", u.token},
		{"the app's API key", u.app.key},
	} {
		out = append(out, servicetest.Refusal{Name: name + " with " + c.who, Call: servicetest.Call(method, as(c.cred), req), Code: codes.Unauthenticated})
	}
	return out
}
