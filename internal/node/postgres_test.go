package node_test

import (
	"bytes"
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
	"github.com/umbra-e2ee/umbra/pkg/e2ee"
	"github.com/umbra-e2ee/umbra/pkg/grpcclient"
	"github.com/umbra-e2ee/umbra/pkg/kt"
	adminv1 "github.com/umbra-e2ee/umbra/proto/umbra/admin/v1"
	cardv1 "github.com/umbra-e2ee/umbra/proto/umbra/card/v1"
	groupv1 "github.com/umbra-e2ee/umbra/proto/umbra/group/v1"
	identityv1 "github.com/umbra-e2ee/umbra/proto/umbra/identity/v1"
	messagingv1 "github.com/umbra-e2ee/umbra/proto/umbra/messaging/v1"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

// TestPostgresIdentity: the identity service over PostgreSQL serves apps and tokens,
// writes nothing in the data folder, keeps its state across a restart, and follows
// its database in /readyz: NOT_SERVING while it is down (requests fail fast with
// UNAVAILABLE), SERVING again by itself once it is back.
func TestPostgresIdentity(t *testing.T) {
	c := pgtest.NewCluster(t, pgtest.Options{})
	db := c.NewDatabase(t)
	dataDir := t.TempDir()
	start := func() *nodetest.Node { return startOverPostgres(t, db.URL, dataDir, gateway.Identity) }
	n := start()
	app := n.NewApp(t)
	alice := app.User(t, "alice")
	if tok := app.Token(t, alice); strings.Count(tok, ".") != 2 {
		t.Fatalf("token %q is no JWT", tok)
	}
	if entries, _ := os.ReadDir(dataDir); len(entries) != 0 {
		t.Errorf("the data folder holds %d entries (%s...); a store in PostgreSQL writes none", len(entries), entries[0].Name())
	}
	if state, reason := serviceState(t, n, "identity"); state != "SERVING" {
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
		reason := waitServiceState(t, n, "identity", "NOT_SERVING")
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
		waitServiceState(t, n, "identity", "SERVING")
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
	cases := []struct {
		name  string
		roles []string
		store string
		want  string
	}{
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

// TestPostgresAllRoles: every service of one node over one PostgreSQL database, each in
// its schema (umbra serve all --store): a direct message goes from alice to bob and
// reads back, every service is SERVING, and the data folder stays empty.
func TestPostgresAllRoles(t *testing.T) {
	db := pgtest.NewDatabase(t)
	dir := t.TempDir()
	n := nodetest.Start(t, func(cfg *node.Config) {
		cfg.Roles = gateway.Services()
		cfg.Store, cfg.DataDir = db.URL, dir
	})
	app := n.NewApp(t)
	app.AllowPlaintextDirect(t)
	alice, bob := app.User(t, "alice"), app.User(t, "bob")
	as := func(identity string) context.Context {
		return metadata.AppendToOutgoingContext(context.Background(), "authorization", "Bearer "+app.Token(t, identity))
	}
	msgs := messagingv1.NewMessagingServiceClient(n.Conn())
	if _, err := msgs.Send(as(alice), &messagingv1.SendRequest{
		ConversationId: bob, ClientMessageId: "m1",
		Header:   &messagingv1.MessageHeader{Kind: messagingv1.MessageKind_MESSAGE_KIND_PLAINTEXT},
		Envelope: []byte("over one database"),
	}); err != nil {
		t.Fatal(err)
	}
	hist, err := msgs.History(as(bob), &messagingv1.HistoryRequest{ConversationId: alice})
	if err != nil || len(hist.GetMessages()) != 1 || string(hist.GetMessages()[0].GetEnvelope()) != "over one database" {
		t.Errorf("bob's history: %v, %v", hist, err)
	}
	for _, svc := range gateway.Services() {
		if state, reason := serviceState(t, n, svc); state != "SERVING" {
			t.Errorf("/readyz: %s %s (%s)", svc, state, reason)
		}
	}
	var schemas int
	if err := db.Conn(t).QueryRow(context.Background(), "SELECT count(*) FROM pg_namespace WHERE nspname LIKE 'umbra_%'").Scan(&schemas); err != nil || schemas != len(gateway.Services()) {
		t.Errorf("%d umbra_ schemas (%v); want one per service, %d", schemas, err, len(gateway.Services()))
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 0 {
		t.Errorf("the data folder holds %d entries; stores in PostgreSQL write none", len(entries))
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
	a := startOverPostgres(t, db.URL, dirA, gateway.Identity, gateway.Messaging)
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

// waitServiceState waits up to 15 s for service to be in state want in /readyz, and
// returns its reason.
func waitServiceState(t *testing.T, n *nodetest.Node, service, want string) string {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		state, reason := serviceState(t, n, service)
		if state == want {
			return reason
		}
		if time.Now().After(deadline) {
			t.Fatalf("/readyz: %s is %s (%s) 15 s on; want %s", service, state, reason, want)
		}
		time.Sleep(probeEvery)
	}
}

// startOverPostgres starts a node of roles whose stores are in the database at url,
// its data folder dataDir, probing the database every probeEvery.
func startOverPostgres(t *testing.T, url, dataDir string, roles ...string) *nodetest.Node {
	t.Helper()
	return nodetest.Start(t, func(cfg *node.Config) {
		cfg.Roles = roles
		cfg.Store = url
		cfg.DataDir = dataDir
		cfg.StoreProbeInterval = probeEvery
	})
}

// TestPostgresCardReplicas: two processes' worth of nodes, each with the identity and
// card services, over one PostgreSQL database: replicas. A token issued by one is
// accepted by the other; after the service key is rotated on one, the other
// counter-signs with the new key; both follow the card feed into one key transparency
// log, whose proofs verify with the one log key they share; resets spend a grant once
// whichever replica is asked.
func TestPostgresCardReplicas(t *testing.T) {
	db := pgtest.NewDatabase(t)
	start := func() *nodetest.Node {
		return nodetest.Start(t, func(cfg *node.Config) {
			cfg.Roles = []string{gateway.Identity, gateway.Card}
			cfg.Store = db.URL
			cfg.Card.CheckpointInterval = 50 * time.Millisecond
		})
	}
	nodes := []*nodetest.Node{start(), start()}
	cards := []cardv1.CardServiceClient{cardv1.NewCardServiceClient(nodes[0].Conn()), cardv1.NewCardServiceClient(nodes[1].Conn())}
	app := nodes[0].NewApp(t)
	alice, bob := app.User(t, "alice"), app.User(t, "bob")
	as := func(identity string) context.Context {
		return metadata.AppendToOutgoingContext(context.Background(), "authorization", "Bearer "+app.Token(t, identity))
	}
	publish := func(c cardv1.CardServiceClient, identity, grant string) *cardv1.Card {
		t.Helper()
		kp, err := e2ee.GenerateKeyPair(e2ee.SuiteX25519)
		if err != nil {
			t.Fatal(err)
		}
		content, sig, err := e2ee.NewCard(kp, identity, time.Now(), nil)
		if err != nil {
			t.Fatal(err)
		}
		resp, err := c.PublishCard(as(identity), &cardv1.PublishCardRequest{Content: content, SelfSignature: sig, ResetGrant: grant})
		if err != nil {
			t.Fatal(err)
		}
		return resp.GetCard()
	}
	admin := metadata.AppendToOutgoingContext(context.Background(), "authorization", "Bearer "+nodetest.Admin)

	publish(cards[0], alice, "")
	rot, err := cards[1].RotateServiceKey(admin, &cardv1.RotateServiceKeyRequest{})
	if err != nil {
		t.Fatal(err)
	}
	// Node 0 still holds the retired key: it counter-signs with the new one.
	bobs := publish(cards[0], bob, "")
	if bobs.GetServiceKeyId() != rot.GetKey().GetKeyId() || e2ee.VerifyServiceSignature(rot.GetKey().GetPublicKey(), bobs.GetCardId(), bobs.GetServiceSignature()) != nil {
		t.Errorf("after a rotation on node 1, node 0 signed with key %s; want %s", bobs.GetServiceKeyId(), rot.GetKey().GetKeyId())
	}
	for i, c := range cards {
		keys, err := c.GetServiceKey(context.Background(), &cardv1.GetServiceKeyRequest{})
		if err != nil || len(keys.GetKeys()) != 2 || keys.GetKey().GetKeyId() != rot.GetKey().GetKeyId() {
			t.Errorf("node %d's service keys: %v, %v", i, keys, err)
		}
	}

	// A reset grant, spent on one node, is refused on the other.
	grant := app.ResetGrant(t, alice)
	alices := publish(cards[1], alice, grant)
	kp, _ := e2ee.GenerateKeyPair(e2ee.SuiteX25519)
	content, sig, _ := e2ee.NewCard(kp, alice, time.Now(), nil)
	_, err = cards[0].PublishCard(as(alice), &cardv1.PublishCardRequest{Content: content, SelfSignature: sig, ResetGrant: grant})
	if status.Code(err) != codes.PermissionDenied || !strings.Contains(status.Convert(err).Message(), "already used") {
		t.Errorf("the grant spent again on the other node: %v; want PERMISSION_DENIED", err)
	}

	// One log: both nodes' followers append; a lookup on either is proved at a
	// checkpoint signed by the one log key.
	var logKey string
	for i, c := range cards {
		lk, err := c.GetLogKey(context.Background(), &cardv1.GetLogKeyRequest{})
		if err != nil {
			t.Fatal(err)
		}
		if i > 0 && lk.GetVerifierKey() != logKey {
			t.Fatalf("node %d's log key %s; node 0's %s", i, lk.GetVerifierKey(), logKey)
		}
		logKey = lk.GetVerifierKey()
	}
	want := map[string][]byte{alice: alices.GetCardId(), bob: bobs.GetCardId()}
	for i, c := range cards {
		deadline := time.Now().Add(15 * time.Second)
		for {
			resp, err := c.SearchCardsWithProofs(as(bob), &cardv1.SearchCardsWithProofsRequest{Identities: []string{alice, bob}})
			if err != nil {
				t.Fatal(err)
			}
			cp, err := kt.OpenCheckpoint(resp.GetCheckpoint(), logKey)
			if err != nil {
				t.Fatal(err)
			}
			proved := 0
			for j, id := range []string{alice, bob} {
				l, err := kt.VerifyLookup(cp, app.ID, id, resp.GetResults()[j].GetProof())
				if err != nil {
					t.Fatalf("node %d: lookup of %s: %v", i, id, err)
				}
				if bytes.Equal(l.CardID(), want[id]) {
					proved++
				}
			}
			if proved == 2 {
				if cp.Size != 4 {
					t.Errorf("node %d: checkpoint of %d entries; want 4 (2 publications, a reset's revocation and publication)", i, cp.Size)
				}
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("node %d: the log does not prove both current cards 15 s on (checkpoint of %d entries)", i, cp.Size)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
}

// TestPostgresGroup: the group service over PostgreSQL, in two processes over one
// database as two replicas, serves its reads from the database, writes nothing in the
// data folder, and follows its database in /readyz: NOT_SERVING while it is down
// (requests fail fast with UNAVAILABLE), SERVING again by itself once it is back.
// (Its writes across replicas are services/group's tests: they need the card service,
// which has no PostgreSQL engine yet.)
func TestPostgresGroup(t *testing.T) {
	c := pgtest.NewCluster(t, pgtest.Options{})
	db := c.NewDatabase(t)
	dataDir := t.TempDir()
	start := func() *nodetest.Node { return startOverPostgres(t, db.URL, dataDir, gateway.Identity, gateway.Group) }
	n1, n2 := start(), start()
	app := n1.NewApp(t)
	alice := app.User(t, "alice")
	ctx := metadata.AppendToOutgoingContext(context.Background(), "authorization", "Bearer "+app.Token(t, alice))
	for i, n := range []*nodetest.Node{n1, n2} {
		groups := groupv1.NewGroupServiceClient(n.Conn())
		if resp, err := groups.ListMyGroups(ctx, &groupv1.ListMyGroupsRequest{}); err != nil || len(resp.GetGroups()) != 0 {
			t.Errorf("replica %d: ListMyGroups: %v, %v", i+1, resp, err)
		}
		_, err := groups.GetGroup(ctx, &groupv1.GetGroupRequest{GroupId: app.Group(t, "team")})
		if status.Code(err) != codes.NotFound {
			t.Errorf("replica %d: GetGroup of a missing group: %v, want NOT_FOUND", i+1, err)
		}
		if state, _ := serviceState(t, n, "group"); state != "SERVING" {
			t.Errorf("replica %d: /readyz: group %s with the database up", i+1, state)
		}
	}
	if entries, _ := os.ReadDir(dataDir); len(entries) != 0 {
		t.Errorf("the data folder holds %d entries (%s...); a store in PostgreSQL writes none", len(entries), entries[0].Name())
	}

	c.Stop()
	waitServiceState(t, n1, "group", "NOT_SERVING")
	began := time.Now()
	_, err := groupv1.NewGroupServiceClient(n1.Conn()).ListMyGroups(ctx, &groupv1.ListMyGroupsRequest{})
	if status.Code(err) != codes.Unavailable {
		// The token may be refused first (the identity store is down too): UNAVAILABLE
		// either way.
		t.Errorf("ListMyGroups with the database down: %v; want UNAVAILABLE", err)
	}
	if took := time.Since(began); took > 5*time.Second {
		t.Errorf("the failing call took %v", took)
	}
	if err := c.Restart(); err != nil {
		t.Fatal(err)
	}
	waitServiceState(t, n1, "group", "SERVING")
	waitServiceState(t, n2, "group", "SERVING")
	if _, err := groupv1.NewGroupServiceClient(n2.Conn()).ListMyGroups(ctx, &groupv1.ListMyGroupsRequest{}); err != nil {
		t.Errorf("ListMyGroups once the database is back: %v", err)
	}
}
