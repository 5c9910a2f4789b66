package messaging

import (
	"context"
	"fmt"
	"path/filepath"
	"sync"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
	"google.golang.org/grpc"

	"github.com/umbra-e2ee/umbra/internal/clocktest"
	"github.com/umbra-e2ee/umbra/internal/servicetest"
	"github.com/umbra-e2ee/umbra/internal/servicetest/cardtest"
	"github.com/umbra-e2ee/umbra/internal/servicetest/identitytest"
	"github.com/umbra-e2ee/umbra/pkg/auth"
	"github.com/umbra-e2ee/umbra/pkg/e2ee"
	"github.com/umbra-e2ee/umbra/pkg/grpcclient"
	cardv1 "github.com/umbra-e2ee/umbra/proto/umbra/card/v1"
	groupv1 "github.com/umbra-e2ee/umbra/proto/umbra/group/v1"
	identityv1 "github.com/umbra-e2ee/umbra/proto/umbra/identity/v1"
	messagingv1 "github.com/umbra-e2ee/umbra/proto/umbra/messaging/v1"
	"github.com/umbra-e2ee/umbra/services/card"
	"github.com/umbra-e2ee/umbra/services/group"
	"github.com/umbra-e2ee/umbra/services/identity"
)

const (
	testAdmin        = servicetest.Admin
	testServiceToken = servicetest.ServiceToken
)

// The helpers every service's tests share.
var (
	as       = servicetest.As
	wantCode = servicetest.WantCode
)

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
	clock   *clocktest.Clock
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
	clock *clocktest.Clock
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
	n := servicetest.NewEnv(t, servicetest.Options{Dir: opts.dir, Clock: opts.clock, Quiet: opts.quiet})
	log, clk := n.Log, n.Clock
	opts.dir = n.Dir
	ids := identitytest.Start(t, n)
	store, err := OpenBoltStore(filepath.Join(opts.dir, "messaging.db"), opts.store)
	if err != nil {
		t.Fatal(err)
	}
	// closeStore is how the env closes the store when it stops; crash swaps it.
	closeStore := store.Close
	n.OnStop(func() error { return closeStore() })
	if !opts.damaged {
		n.Verify("messaging.db", Verify)
	}
	cards := cardtest.Start(t, n, card.Config{})
	peerConn := n.DialPeer(grpcclient.Config{})
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
	var fake *fakeGroupService
	var groupService groupv1.GroupServiceServer
	if opts.fakeGroups {
		fake = newFakeGroupService()
		groupService = fake
	} else {
		// A group service that answers Unimplemented, as one of an older version
		// would: group conversations must be refused, never allowed by default.
		groupService = unimplementedGroups{}
	}
	registerGroups := func(g grpc.ServiceRegistrar) { groupv1.RegisterGroupServiceServer(g, groupService) }
	n.Serve(ids, []auth.Table{identity.Policies(), card.Policies(), group.Policies(), Policies()}, ids.Register, cards.Register, srv.Register, registerGroups)
	n.Run(srv.Run)
	conn := n.Dial()
	return &env{
		dir: opts.dir, store: store, srv: srv, clock: clk, groups: fake, conn: conn,
		client: messagingv1.NewMessagingServiceClient(conn), ids: identityv1.NewIdentityServiceClient(conn),
		cards:   cardv1.NewCardServiceClient(conn),
		httpURL: n.Gateway(),
		stop:    n.Stop,
		// crash stops without writing down the index entries still in memory, as a
		// killed process would leave the file.
		crash: func() { closeStore = store.DB().Close; n.Stop() },
	}
}

// asService returns ctx carrying the service credential.
func asService() context.Context { return servicetest.AsService(testServiceToken) }

// app is an app and its API key.
type app struct{ id, key string }

func (e *env) newApp(t testing.TB) app {
	t.Helper()
	id, key := servicetest.NewApp(t, e.ids, "test app")
	return app{id: id, key: key}
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
	out := make([]user, len(uids))
	for i, id := range servicetest.Resolve(t, e.ids, a.key, uids...) {
		out[i] = user{app: a, identity: id}
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
	var endorser *e2ee.KeyPair
	if previous != nil {
		// A rotation is endorsed by the card it replaces; without that it would be a
		// reset, which needs a grant.
		prev, ok := e.cardKeys.Load(string(previous))
		if !ok {
			t.Fatalf("no key pair for card %x: rotate only cards publishCard published", previous)
		}
		endorser = prev.(*e2ee.KeyPair)
	}
	kp, card, err := servicetest.PublishCard(u.ctx(), e.cards, u.identity, e.clock.Now(), previous, endorser)
	if err != nil {
		t.Fatal(err)
	}
	e.cardKeys.Store(string(card.GetCardId()), kp)
	return card.GetCardId()
}

// token issues an access token for u, valid for ttl (0: the default).
func (e *env) token(t testing.TB, u user, ttl time.Duration) string {
	t.Helper()
	return servicetest.Token(t, e.ids, u.app.key, u.identity, ttl)
}

// groupID resolves an app's group id.
func (e *env) groupID(t testing.TB, a app, guid string) string {
	t.Helper()
	return servicetest.ResolveGroup(t, e.ids, a.key, guid)
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
	return servicetest.SnapshotWithSequences(t, e.store.DB())
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
