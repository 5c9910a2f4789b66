package node_test

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/umbra-e2ee/umbra/gateway"
	"github.com/umbra-e2ee/umbra/internal/grpcserver"
	"github.com/umbra-e2ee/umbra/internal/node"
	"github.com/umbra-e2ee/umbra/internal/node/nodetest"
	"github.com/umbra-e2ee/umbra/internal/pgtest"
	"github.com/umbra-e2ee/umbra/pkg/grpcclient"
	adminv1 "github.com/umbra-e2ee/umbra/proto/umbra/admin/v1"
	identityv1 "github.com/umbra-e2ee/umbra/proto/umbra/identity/v1"
	messagingv1 "github.com/umbra-e2ee/umbra/proto/umbra/messaging/v1"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

// identityState returns the identity service's state and reason in /readyz.
func identityState(t *testing.T, n *nodetest.Node) (string, string) {
	t.Helper()
	r := get(t, n.HTTP+"/readyz")
	var body struct {
		Services map[string]string `json:"services"`
		Reasons  map[string]string `json:"reasons"`
	}
	if err := json.Unmarshal([]byte(r.body), &body); err != nil {
		t.Fatalf("/readyz: %d %s: %v", r.status, r.body, err)
	}
	return body.Services["identity"], body.Reasons["identity"]
}

func waitIdentityState(t *testing.T, n *nodetest.Node, want string) string {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		state, reason := identityState(t, n)
		if state == want {
			return reason
		}
		if time.Now().After(deadline) {
			t.Fatalf("/readyz: identity is %s (%s) 15 s on; want %s", state, reason, want)
		}
		time.Sleep(probeEvery)
	}
}

// TestPostgresIdentity: the identity service over PostgreSQL serves apps and tokens,
// writes nothing in the data folder, keeps its state across a restart, and follows
// its database in /readyz: NOT_SERVING while it is down (requests fail fast with
// UNAVAILABLE), SERVING again by itself once it is back.
func TestPostgresIdentity(t *testing.T) {
	c := pgtest.NewCluster(t, pgtest.Options{})
	db, err := c.CreateDatabase()
	if err != nil {
		t.Fatal(err)
	}
	dataDir := t.TempDir()
	start := func() *nodetest.Node {
		return nodetest.Start(t, func(cfg *node.Config) {
			cfg.Roles = []string{gateway.Identity}
			cfg.Store = db.URL
			cfg.DataDir = dataDir
			cfg.StoreProbeInterval = probeEvery
		})
	}
	n := start()
	app := n.NewApp(t)
	alice := app.User(t, "alice")
	if tok := app.Token(t, alice); strings.Count(tok, ".") != 2 {
		t.Fatalf("token %q is no JWT", tok)
	}
	if entries, _ := os.ReadDir(dataDir); len(entries) != 0 {
		t.Errorf("the data folder holds %d entries (%s...); a store in PostgreSQL writes none", len(entries), entries[0].Name())
	}
	if state, reason := identityState(t, n); state != "SERVING" {
		t.Fatalf("/readyz: identity %s (%s) with the database up", state, reason)
	}
	admin := metadata.AppendToOutgoingContext(context.Background(), "authorization", "Bearer "+nodetest.Admin)
	// Online backups are the engine's own.
	stream, err := adminv1.NewAdminServiceClient(n.Conn()).BackupStore(admin, &adminv1.BackupStoreRequest{Name: "identity"})
	if err == nil {
		_, err = stream.Recv()
	}
	if s := status.Convert(err); s.Code() != codes.FailedPrecondition || !strings.Contains(s.Message(), "pg_dump") {
		t.Errorf("BackupStore of a store in PostgreSQL: %v %q; want FAILED_PRECONDITION naming pg_dump", s.Code(), s.Message())
	}

	t.Run("database down and back", func(t *testing.T) {
		c.Stop()
		reason := waitIdentityState(t, n, "NOT_SERVING")
		if !strings.Contains(reason, "identity store's database does not answer") {
			t.Errorf("/readyz reason %q", reason)
		}
		began := time.Now()
		_, err := identityv1.NewIdentityServiceClient(n.Conn()).CreateApp(admin, &identityv1.CreateAppRequest{DisplayName: "while down"})
		if s := status.Convert(err); s.Code() != codes.Unavailable {
			t.Errorf("CreateApp with the database down: %v %q; want UNAVAILABLE", s.Code(), s.Message())
		}
		if took := time.Since(began); took > 5*time.Second {
			t.Errorf("the failing call took %v", took)
		}
		if err := c.Restart(); err != nil {
			t.Fatal(err)
		}
		waitIdentityState(t, n, "SERVING")
		if _, err := identityv1.NewIdentityServiceClient(n.Conn()).CreateApp(admin, &identityv1.CreateAppRequest{DisplayName: "back"}); err != nil {
			t.Errorf("CreateApp once the database is back: %v", err)
		}
	})

	// A restart finds the app, its key and the signing key as they were.
	if err := n.Stop(); err != nil {
		t.Fatal(err)
	}
	n2 := start()
	resp, err := identityv1.NewIdentityServiceClient(n2.Conn()).GetApp(admin, &identityv1.GetAppRequest{AppId: app.ID})
	if err != nil || len(resp.GetApp().GetKeys()) != 1 {
		t.Fatalf("GetApp after a restart: %v, %v", resp, err)
	}
	if got := n2.AppWithKey(app.ID, app.APIKey).User(t, "alice"); got != alice {
		t.Errorf("alice resolves to %s after a restart, was %s", got, alice)
	}
}

// TestPostgresRefusals: a role without a PostgreSQL engine, a connection string of
// another kind, and a database that cannot be reached are refused at start, each
// with an error that says what is wrong.
func TestPostgresRefusals(t *testing.T) {
	db := pgtest.NewDatabase(t)
	cases := []struct {
		name  string
		roles []string
		store string
		want  string
	}{
		{"card", []string{gateway.Card}, db.URL, "the card service has no PostgreSQL engine yet; see issue 16"},
		{"all", gateway.Services(), db.URL, "the card service has no PostgreSQL engine yet; see issue 16"},
		{"not postgres", []string{gateway.Identity}, "mysql://x@y/z", "--store takes a PostgreSQL connection string"},
		{"unreachable", []string{gateway.Identity}, "postgres://u:pw@127.0.0.1:1/x?connect_timeout=2", "cannot reach PostgreSQL at 127.0.0.1:1"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			err := node.Run(ctx, node.Config{
				Roles:   tc.roles,
				Store:   tc.store,
				DataDir: dir,
				GRPC:    grpcserver.Config{Addr: "127.0.0.1:0"},
				Ready:   func(context.Context, node.Addrs) error { return errors.New("started") },
			}, nil)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("Run: %v; want an error saying %q", err, tc.want)
			}
			if entries, _ := os.ReadDir(dir); len(entries) != 0 {
				t.Errorf("the refused start wrote %d entries in the data folder", len(entries))
			}
		})
	}
}

// TestPostgresMessagingReplicas: the messaging service over PostgreSQL in two
// processes, as two replicas (the second beside no identity service, following the
// first's): a message sent through one reaches, live, a subscriber on the other; both
// follow their database in /readyz; neither writes in its data folder; and a restart
// finds the messages.
func TestPostgresMessagingReplicas(t *testing.T) {
	db := pgtest.NewDatabase(t)
	dirA, dirB := t.TempDir(), t.TempDir()
	a := nodetest.Start(t, func(cfg *node.Config) {
		cfg.Roles = []string{gateway.Identity, gateway.Messaging}
		cfg.Store, cfg.DataDir, cfg.StoreProbeInterval = db.URL, dirA, probeEvery
	})
	startB := func() *nodetest.Node {
		return nodetest.Start(t, func(cfg *node.Config) {
			cfg.Roles = []string{gateway.Messaging}
			cfg.Store, cfg.DataDir, cfg.StoreProbeInterval = db.URL, dirB, probeEvery
			cfg.Peers.Identity = grpcclient.Config{Addr: a.GRPC, ServiceToken: nodetest.ServiceToken, Peer: true}
			cfg.Gateway = nil
		})
	}
	b := startB()
	app := a.NewApp(t)
	app.AllowPlaintextDirect(t)
	alice, bob := app.User(t, "alice"), app.User(t, "bob")
	as := func(tok string) context.Context {
		return metadata.AppendToOutgoingContext(context.Background(), "authorization", "Bearer "+tok)
	}
	bobTok := app.Token(t, bob)
	ctx, cancel := context.WithTimeout(as(bobTok), 30*time.Second)
	defer cancel()
	stream, err := messagingv1.NewMessagingServiceClient(b.Conn()).Subscribe(ctx, &messagingv1.SubscribeRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if first, err := stream.Recv(); err != nil || first.GetHeartbeat() == nil {
		t.Fatalf("the stream's first item: %v, %v; want the caught-up heartbeat", first, err)
	}
	sent, err := messagingv1.NewMessagingServiceClient(a.Conn()).Send(as(app.Token(t, alice)), &messagingv1.SendRequest{
		ConversationId: bob, ClientMessageId: "m1",
		Header:   &messagingv1.MessageHeader{Kind: messagingv1.MessageKind_MESSAGE_KIND_PLAINTEXT},
		Envelope: []byte("across replicas"),
	})
	if err != nil {
		t.Fatal(err)
	}
	got, err := stream.Recv()
	if err != nil || string(got.GetMessage().GetEnvelope()) != "across replicas" || got.GetMessage().GetSequence() != sent.GetSequence() {
		t.Fatalf("bob's stream on the other replica: %v, %v", got, err)
	}
	cancel()
	for _, dir := range []string{dirA, dirB} {
		if entries, _ := os.ReadDir(dir); len(entries) != 0 {
			t.Errorf("a data folder holds %d entries; a store in PostgreSQL writes none", len(entries))
		}
	}
	if state, reason := serviceState(t, a, "messaging"); state != "SERVING" {
		t.Errorf("/readyz: messaging %s (%s)", state, reason)
	}
	// A restart of the second finds the message.
	if err := b.Stop(); err != nil {
		t.Fatal(err)
	}
	b = startB()
	hist, err := messagingv1.NewMessagingServiceClient(b.Conn()).History(as(bobTok), &messagingv1.HistoryRequest{ConversationId: alice})
	if err != nil || len(hist.GetMessages()) != 1 || string(hist.GetMessages()[0].GetEnvelope()) != "across replicas" {
		t.Errorf("History on the restarted replica: %v, %v", hist, err)
	}
}

// serviceState returns a service's state and reason in /readyz.
func serviceState(t *testing.T, n *nodetest.Node, service string) (string, string) {
	t.Helper()
	r := get(t, n.HTTP+"/readyz")
	var body struct {
		Services map[string]string `json:"services"`
		Reasons  map[string]string `json:"reasons"`
	}
	if err := json.Unmarshal([]byte(r.body), &body); err != nil {
		t.Fatalf("/readyz: %d %s: %v", r.status, r.body, err)
	}
	return body.Services[service], body.Reasons[service]
}
