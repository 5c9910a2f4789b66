package messaging

import (
	"context"
	"fmt"
	"net"
	"net/http/httptest"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/umbra-e2ee/umbra/internal/servicetest"

	"github.com/umbra-e2ee/umbra/internal/clocktest"

	bolt "go.etcd.io/bbolt"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/umbra-e2ee/umbra/gateway"
	"github.com/umbra-e2ee/umbra/internal/boltdb"
	"github.com/umbra-e2ee/umbra/internal/grpcserver"
	"github.com/umbra-e2ee/umbra/pkg/auth"
	"github.com/umbra-e2ee/umbra/pkg/e2ee"
	"github.com/umbra-e2ee/umbra/pkg/grpcclient"
	cardv1 "github.com/umbra-e2ee/umbra/proto/umbra/card/v1"
	groupv1 "github.com/umbra-e2ee/umbra/proto/umbra/group/v1"
	identityv1 "github.com/umbra-e2ee/umbra/proto/umbra/identity/v1"
	messagingv1 "github.com/umbra-e2ee/umbra/proto/umbra/messaging/v1"
	"github.com/umbra-e2ee/umbra/services/card"
	"github.com/umbra-e2ee/umbra/services/group"
)

const (
	testAdmin        = "test-admin-credential-0123456789"
	testServiceToken = "test-service-token-0123456789"
)

// clock is the settable time source the servers and the token verifier share.
type clock = clocktest.Clock

// env is the messaging service, the identity service (apps and tokens), the card
// service (the users' cards, which the messaging service checks sender cards against)
// and a group service on one real loopback gRPC listener with the production
// interceptors, and the REST gateway in front of them on httptest: the shape of `umbra
// dev`. The messaging service reaches the group and card services over gRPC with the
// service token, as in a cluster.
type env struct {
	dir     string
	store   *BoltStore
	srv     *Server
	clock   *clock
	groups  *fakeGroupService // nil when the real (unimplemented) group service runs
	conn    *grpc.ClientConn
	client  messagingv1.MessagingServiceClient
	ids     identityv1.IdentityServiceClient
	cards   cardv1.CardServiceClient
	httpURL string
	stop    func()
	crash   func()
	// cardKeys are the key pairs of the cards publishCard published, by card id, so
	// that a rotation can be endorsed by the card it replaces.
	cardKeys sync.Map
}

// envOptions vary an env. The zero value is the defaults in a fresh folder.
type envOptions struct {
	// dir is the data folder; empty means a new t.TempDir().
	dir string
	// clock is shared with a previous env; nil means a new one at the current time.
	clock *clock
	cfg   Config
	store StoreOptions
	// fakeGroups serves a fake group service (fakeGroupService) in place of the real
	// one, which answers Unimplemented until it is built.
	fakeGroups bool
	// groups, when set, replaces the gRPC client of the group service, and cards that
	// of the card service.
	groups Groups
	cards  Cards
	// quiet discards logs (benchmarks and load tests log a line per call otherwise).
	quiet bool
	// damaged skips the check of messaging.db when the env stops: the test damaged it.
	damaged bool
}

func newEnv(t testing.TB, opts envOptions) *env {
	t.Helper()
	log := servicetest.Log(t, opts.quiet)
	if opts.dir == "" {
		opts.dir = t.TempDir()
	}
	if opts.clock == nil {
		opts.clock = clocktest.New(time.Now().Truncate(time.Second))
	}
	clk := opts.clock
	ids, idStore := servicetest.Identity(t, opts.dir, clk.Now, log)
	store, err := OpenBoltStore(filepath.Join(opts.dir, "messaging.db"), opts.store)
	if err != nil {
		t.Fatal(err)
	}
	cardStore, err := card.OpenBoltStore(filepath.Join(opts.dir, "card.db"))
	if err != nil {
		t.Fatal(err)
	}
	cards, err := card.New(cardStore, card.Config{Clock: clk.Now}, log.Named("card"))
	if err != nil {
		t.Fatal(err)
	}
	gs, table := servicetest.NewServer(t, servicetest.Config{Identity: ids, Now: clk.Now, Log: log, Admin: testAdmin, ServiceToken: testServiceToken}, card.Policies(), group.Policies(), Policies())
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := lis.Addr().String()
	peerConn, err := grpcclient.Dial(grpcclient.Config{Addr: addr, ServiceToken: testServiceToken})
	if err != nil {
		t.Fatal(err)
	}
	cfg := opts.cfg
	cfg.Clock = clk.Now
	cfg.Revocations = ids // streams end when their token is revoked
	var groups Groups = GroupClient{Client: groupv1.NewGroupServiceClient(peerConn)}
	if opts.groups != nil {
		groups = opts.groups
	}
	var senderCards Cards = CardClient{Client: cardv1.NewCardServiceClient(peerConn)}
	if opts.cards != nil {
		senderCards = opts.cards
	}
	srv, err := New(store, senderCards, groups, cfg, log.Named("messaging"))
	if err != nil {
		t.Fatal(err)
	}
	ids.Register(gs.Server)
	cards.Register(gs.Server)
	srv.Register(gs.Server)
	var fake *fakeGroupService
	if opts.fakeGroups {
		fake = newFakeGroupService()
		groupv1.RegisterGroupServiceServer(gs.Server, fake)
	} else {
		// A group service that answers Unimplemented, as one of an older version
		// would: group conversations must be refused, never allowed by default.
		groupv1.RegisterGroupServiceServer(gs.Server, unimplementedGroups{})
	}
	if err := grpcserver.CheckPolicies(gs.Server, table); err != nil {
		t.Fatal(err)
	}
	serveCtx, stopServe := context.WithCancel(context.Background())
	served := make(chan struct{})
	go func() { gs.Serve(serveCtx, lis); close(served) }()
	runCtx, stopRun := context.WithCancel(context.Background())
	ran := make(chan struct{})
	go func() { srv.Run(runCtx); close(ran) }()

	conn, err := grpcclient.Dial(grpcclient.Config{Addr: addr})
	if err != nil {
		t.Fatal(err)
	}
	up := map[string]grpcclient.Config{}
	for _, s := range gateway.Services() {
		up[s] = grpcclient.Config{Addr: addr}
	}
	g, err := gateway.New(serveCtx, gateway.Config{Upstreams: up}, log.Named("gateway"))
	if err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewServer(g.Handler())
	var once sync.Once
	shutdown := func(closeStore func() error) {
		once.Do(func() {
			hs.Close()
			g.Close()
			conn.Close()
			stopRun()
			<-ran
			stopServe()
			<-served
			peerConn.Close()
			if err := closeStore(); err != nil {
				t.Errorf("close store: %v", err)
			}
			cardStore.Close()
			idStore.Close()
			if !opts.damaged {
				servicetest.VerifyStores(t, opts.dir, map[string]func(string) (*boltdb.Report, error){"messaging.db": Verify})
			}
		})
	}
	e := &env{
		dir: opts.dir, store: store, srv: srv, clock: clk, groups: fake, conn: conn,
		client: messagingv1.NewMessagingServiceClient(conn), ids: identityv1.NewIdentityServiceClient(conn),
		cards:   cardv1.NewCardServiceClient(conn),
		httpURL: hs.URL,
		stop:    func() { shutdown(store.Close) },
		// crash stops without writing down the index entries still in memory, as a
		// killed process would leave the file.
		crash: func() { shutdown(store.DB().Close) },
	}
	t.Cleanup(e.stop)
	return e
}

// as returns ctx carrying cred as the bearer credential.
func as(cred string) context.Context {
	ctx := context.Background()
	if cred == "" {
		return ctx
	}
	return metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+cred)
}

// asService returns ctx carrying the service credential.
func asService() context.Context {
	return metadata.AppendToOutgoingContext(context.Background(), auth.ServiceTokenHeader, testServiceToken)
}

// app is an app and its API key.
type app struct{ id, key string }

func (e *env) newApp(t testing.TB) app {
	t.Helper()
	resp, err := e.ids.CreateApp(as(testAdmin), &identityv1.CreateAppRequest{DisplayName: "test app"})
	if err != nil {
		t.Fatal(err)
	}
	return app{id: resp.GetApp().GetAppId(), key: resp.GetApiKey()}
}

// user is an identity of an app with an access token and a published card.
type user struct {
	app      app
	identity string
	token    string
	// card is the id of the user's active card (of the compact suite; the service
	// never opens an envelope, it only checks whose card the header names).
	card []byte
}

func (u user) ctx() context.Context { return as(u.token) }

// newUsers resolves uids in a, issues each a token and publishes a card for each (a
// user resolved before keeps its active card).
func (e *env) newUsers(t testing.TB, a app, uids ...string) []user {
	t.Helper()
	resp, err := e.ids.ResolveIdentities(as(a.key), &identityv1.ResolveIdentitiesRequest{Uids: uids})
	if err != nil {
		t.Fatal(err)
	}
	out := make([]user, len(uids))
	for i, uid := range uids {
		out[i] = user{app: a, identity: resp.GetUsers()[uid]}
		out[i].token = e.token(t, out[i], 0)
		out[i].card = e.activeCard(t, out[i])
	}
	return out
}

// activeCard returns u's active card, published first if u has none.
func (e *env) activeCard(t testing.TB, u user) []byte {
	t.Helper()
	found, err := e.cards.SearchCards(u.ctx(), &cardv1.SearchCardsRequest{Identities: []string{u.identity}})
	if err != nil {
		t.Fatal(err)
	}
	if cs := found.GetCards(); len(cs) == 1 {
		return cs[0].GetCardId()
	}
	return e.publishCard(t, u, nil)
}

// publishCard publishes a new card of u, replacing previous (nil for a first card),
// and returns its id.
func (e *env) publishCard(t testing.TB, u user, previous []byte) []byte {
	t.Helper()
	kp, err := e2ee.GenerateKeyPair(e2ee.SuiteX25519)
	if err != nil {
		t.Fatal(err)
	}
	content, sig, err := e2ee.NewCard(kp, u.identity, e.clock.Now(), previous)
	if err != nil {
		t.Fatal(err)
	}
	req := &cardv1.PublishCardRequest{Content: content, SelfSignature: sig}
	if previous != nil {
		// A rotation is endorsed by the card it replaces; without that it would be a
		// reset, which needs a grant.
		prev, ok := e.cardKeys.Load(string(previous))
		if !ok {
			t.Fatalf("no key pair for card %x: rotate only cards publishCard published", previous)
		}
		next, err := e2ee.ParseCard(content, sig)
		if err != nil {
			t.Fatal(err)
		}
		ec, es, err := e2ee.Endorse(prev.(*e2ee.KeyPair), next)
		if err != nil {
			t.Fatal(err)
		}
		req.Endorsement = &cardv1.CardEndorsement{Content: ec, Signature: es}
	}
	resp, err := e.cards.PublishCard(u.ctx(), req)
	if err != nil {
		t.Fatal(err)
	}
	e.cardKeys.Store(string(resp.GetCard().GetCardId()), kp)
	return resp.GetCard().GetCardId()
}

// token issues an access token for u, valid for ttl (0: the default).
func (e *env) token(t testing.TB, u user, ttl time.Duration) string {
	t.Helper()
	req := &identityv1.IssueTokenRequest{Identity: u.identity}
	if ttl > 0 {
		req.Ttl = durationOf(ttl)
	}
	tok, err := e.ids.IssueToken(as(u.app.key), req)
	if err != nil {
		t.Fatal(err)
	}
	return tok.GetAccessToken()
}

// groupID resolves an app's group id.
func (e *env) groupID(t testing.TB, a app, guid string) string {
	t.Helper()
	resp, err := e.ids.ResolveIdentities(as(a.key), &identityv1.ResolveIdentitiesRequest{Guids: []string{guid}})
	if err != nil {
		t.Fatal(err)
	}
	return resp.GetGroups()[guid]
}

// encrypted is the header of an ENCRYPTED direct message from u, signed with u's card.
func (u user) encrypted() *messagingv1.MessageHeader {
	return &messagingv1.MessageHeader{Kind: messagingv1.MessageKind_MESSAGE_KIND_ENCRYPTED, SenderCardId: u.card}
}

func plaintext() *messagingv1.MessageHeader {
	return &messagingv1.MessageHeader{Kind: messagingv1.MessageKind_MESSAGE_KIND_PLAINTEXT}
}

// sendReq is a valid encrypted message from u to conv.
func (u user) sendReq(conv, cmid, body string) *messagingv1.SendRequest {
	return &messagingv1.SendRequest{ConversationId: conv, ClientMessageId: cmid, Header: u.encrypted(), Envelope: []byte(body)}
}

// send sends body from u to conv and fails the test on error.
func (e *env) send(t testing.TB, u user, conv, cmid, body string) *messagingv1.SendResponse {
	t.Helper()
	resp, err := e.client.Send(u.ctx(), u.sendReq(conv, cmid, body))
	if err != nil {
		t.Fatalf("send %s to %s: %v", cmid, conv, err)
	}
	return resp
}

// flush writes the pending index entries down, through the committer.
func (e *env) flush(t testing.TB) {
	t.Helper()
	var err error
	if derr := e.srv.commit.do(context.Background(), func() { err = e.store.FlushAll() }); derr != nil || err != nil {
		t.Fatal(derr, err)
	}
}

// snapshot returns every key, value and bucket sequence of messaging.db, with the
// pending index entries written down first, to prove that a refused request wrote
// nothing.
func (e *env) snapshot(t testing.TB) map[string]string {
	t.Helper()
	e.flush(t)
	out := map[string]string{}
	err := e.store.DB().View(func(tx *bolt.Tx) error {
		return tx.ForEach(func(name []byte, b *bolt.Bucket) error {
			out[string(name)+"#sequence"] = strconv.FormatUint(b.Sequence(), 10)
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

// bucketLen counts the keys of one bucket of messaging.db.
func (e *env) bucketLen(t testing.TB, name string) int {
	t.Helper()
	n := 0
	err := e.store.DB().View(func(tx *bolt.Tx) error {
		n = tx.Bucket([]byte(name)).Stats().KeyN
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// wantCode fails the test unless err has code and a message containing msg.
func wantCode(t testing.TB, err error, code codes.Code, msg string) {
	t.Helper()
	st, _ := status.FromError(err)
	if st.Code() != code || !containsFold(st.Message(), msg) {
		t.Errorf("got %v %q; want %v with %q", st.Code(), st.Message(), code, msg)
	}
}

// history returns every message of conv as u sees it, oldest first.
func (e *env) history(t testing.TB, u user, conv string) []*messagingv1.Message {
	t.Helper()
	var out []*messagingv1.Message
	req := &messagingv1.HistoryRequest{ConversationId: conv, AfterSequence: ptr(uint64(0)), PageSize: MaxHistoryPage}
	for {
		resp, err := e.client.History(u.ctx(), req)
		if err != nil {
			t.Fatalf("history of %s: %v", conv, err)
		}
		out = append(out, resp.GetMessages()...)
		if resp.GetNextPageToken() == "" {
			return out
		}
		req = &messagingv1.HistoryRequest{ConversationId: conv, PageToken: resp.GetNextPageToken(), PageSize: MaxHistoryPage}
	}
}

func ptr[T any](v T) *T { return &v }

func body(i int) string { return fmt.Sprintf("envelope %d", i) }

// unimplementedGroups answers every group method Unimplemented.
type unimplementedGroups struct {
	groupv1.UnimplementedGroupServiceServer
}
