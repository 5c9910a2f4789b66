package group

import (
	"context"
	"crypto/rand"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/umbra-e2ee/umbra/internal/clocktest"
	"github.com/umbra-e2ee/umbra/internal/pgtest"
	"github.com/umbra-e2ee/umbra/internal/servicetest"
	"github.com/umbra-e2ee/umbra/internal/servicetest/cardtest"
	"github.com/umbra-e2ee/umbra/internal/servicetest/identitytest"
	"github.com/umbra-e2ee/umbra/internal/servicetest/messagingtest"
	"github.com/umbra-e2ee/umbra/pkg/auth"
	"github.com/umbra-e2ee/umbra/pkg/e2ee"
	"github.com/umbra-e2ee/umbra/pkg/grpcclient"
	cardv1 "github.com/umbra-e2ee/umbra/proto/umbra/card/v1"
	envelopev1 "github.com/umbra-e2ee/umbra/proto/umbra/envelope/v1"
	groupv1 "github.com/umbra-e2ee/umbra/proto/umbra/group/v1"
	identityv1 "github.com/umbra-e2ee/umbra/proto/umbra/identity/v1"
	messagingv1 "github.com/umbra-e2ee/umbra/proto/umbra/messaging/v1"
	"github.com/umbra-e2ee/umbra/services/card"
	"github.com/umbra-e2ee/umbra/services/identity"
	"github.com/umbra-e2ee/umbra/services/messaging"
)

// The helpers every service's tests share.
var (
	as       = servicetest.As
	wantCode = servicetest.WantCode
)

// env is the group service with the real services it works with, identity (apps and
// tokens), card (active cards and their feed) and messaging (which asks the group
// service about group conversations and receives its events), on one loopback gRPC
// listener behind the production interceptors: the shape of `umbra dev`. The group
// service reaches card and messaging over gRPC with the service token, as in a cluster.
type env struct {
	dir    string
	store  Store
	srv    *Server
	clock  *clocktest.Clock
	conn   *grpc.ClientConn
	client groupv1.GroupServiceClient
	// raw is the group service without the test signer: requests go as they are.
	raw   groupv1.GroupServiceClient
	sign  *signer
	cards cardv1.CardServiceClient
	msg   messagingv1.MessagingServiceClient
	ids   identityv1.IdentityServiceClient
	// run is cancelled to stop the group service's background loops; started says
	// whether they run.
	stopRun func()
	// n, identity and pgURL (with envOptions.postgres) build more replicas (replicas_test.go).
	n        *servicetest.Env
	identity *identity.Server
	pgURL    string
}

type envOptions struct {
	cfg Config
	// noLoops leaves the group service's background loops stopped (the tests call
	// them by hand).
	noLoops bool
	// dir is the data folder; empty means t.TempDir().
	dir   string
	quiet bool
	// postgres keeps the group service's state in a PostgreSQL database of the test's
	// own, instead of group.db.
	postgres bool
}

func newEnv(t testing.TB, opts envOptions) *env {
	t.Helper()
	n := servicetest.NewEnv(t, servicetest.Options{Dir: opts.dir, Quiet: opts.quiet})
	log, clk, dir := n.Log, n.Clock, n.Dir
	ids := identitytest.Start(t, n)
	cards := cardtest.Start(t, n, card.Config{SearchRate: 1e6, SearchBurst: 1e6})
	if overPostgres(t) {
		opts.postgres = true
	}
	var store Store
	var pgURL string
	if opts.postgres {
		pgURL = pgtest.NewDatabase(t).URL
		store = openPostgresReplica(t, n, pgURL)
	} else {
		store = servicetest.OpenFile(t, n, "group.db", OpenBoltStore, Verify)
	}
	peer := n.DialPeer(grpcclient.Config{})
	msg := messagingtest.Start(t, n, messaging.CardClient{Client: cardv1.NewCardServiceClient(peer)}, messaging.GroupClient{Client: groupv1.NewGroupServiceClient(peer)},
		messaging.Config{Revocations: ids, SendRate: 1e6, SendBurst: 1e6})
	cfg := opts.cfg
	cfg.Clock = clk.Now
	if cfg.CardPollInterval == 0 {
		cfg.CardPollInterval = 20 * time.Millisecond
	}
	srv, err := New(store, cardv1.NewCardServiceClient(peer), messagingv1.NewMessagingServiceClient(peer), cfg, log.Named("group"))
	if err != nil {
		t.Fatal(err)
	}
	n.Serve(ids, []auth.Table{identity.Policies(), card.Policies(), messaging.Policies(), Policies()}, ids.Register, cards.Register, msg.Register, srv.Register)
	n.Run(msg.Run)
	stopLoops := func() {}
	if !opts.noLoops {
		stopLoops = n.Run(srv.Run)
	}
	sign := &signer{}
	conn := n.Dial(grpc.WithChainUnaryInterceptor(sign.interceptor))
	rawConn := n.Dial()
	e := &env{
		dir: dir, store: store, srv: srv, clock: clk, conn: conn,
		client: groupv1.NewGroupServiceClient(conn), raw: groupv1.NewGroupServiceClient(rawConn), sign: sign,
		cards: cardv1.NewCardServiceClient(rawConn), msg: messagingv1.NewMessagingServiceClient(rawConn), ids: identityv1.NewIdentityServiceClient(rawConn),
		stopRun: stopLoops,
		n:       n, identity: ids, pgURL: pgURL,
	}
	sign.env = e
	return e
}

// asService returns ctx carrying the service credential.
func asService() context.Context { return servicetest.AsService(servicetest.ServiceToken) }

type app struct{ id, key string }

func (e *env) newApp(t testing.TB) app {
	t.Helper()
	id, key := servicetest.NewApp(t, e.ids, "test app")
	return app{id: id, key: key}
}

// user is an identity of an app with an access token and, once it has published one,
// a card and its keys.
type user struct {
	app      app
	identity string
	token    string
	keys     *e2ee.KeyPair
	cardID   []byte
}

func (u *user) ctx() context.Context { return as(u.token) }

// newUsers resolves uids in a and issues each a token; with cards, each publishes a
// card of the compact suite.
func (e *env) newUsers(t testing.TB, a app, withCards bool, uids ...string) []*user {
	t.Helper()
	out := make([]*user, len(uids))
	for i, id := range servicetest.Resolve(t, e.ids, a.key, uids...) {
		out[i] = &user{app: a, identity: id}
	}
	var wg sync.WaitGroup
	errc := make(chan error, len(out))
	sem := make(chan struct{}, 16)
	for _, u := range out {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			tok, err := e.ids.IssueToken(as(a.key), &identityv1.IssueTokenRequest{Identity: u.identity})
			if err != nil {
				errc <- err
				return
			}
			u.token = tok.GetAccessToken()
			e.sign.add(u)
			if withCards {
				errc <- e.publishCard(u)
			}
		}()
	}
	wg.Wait()
	close(errc)
	for err := range errc {
		if err != nil {
			t.Fatal(err)
		}
	}
	return out
}

// publishCard gives u a new card (a rotation, endorsed by its current key, when it has
// one).
func (e *env) publishCard(u *user) error {
	var endorser *e2ee.KeyPair
	if u.cardID != nil {
		endorser = u.keys
	}
	kp, card, err := servicetest.PublishCard(u.ctx(), e.cards, u.identity, e.clock.Now(), u.cardID, endorser)
	if err != nil {
		return err
	}
	u.keys, u.cardID = kp, card.GetCardId()
	return nil
}

func (e *env) groupID(t testing.TB, a app, guid string) string {
	t.Helper()
	return servicetest.ResolveGroup(t, e.ids, a.key, guid)
}

// twoMemberGroup makes an app with users owner and bob, who have cards, and its group
// "team" of the two, whose first epoch's key owner committed to both.
func (e *env) twoMemberGroup(t testing.TB) (owner, bob *user, group string) {
	t.Helper()
	_, group, us := e.newTeam(t, 2, "owner", "bob")
	owner, bob = us[0], us[1]
	e.commit(t, group, owner, owner, bob)
	return owner, bob, group
}

func identities(us ...*user) []string {
	out := make([]string, len(us))
	for i, u := range us {
		out[i] = u.identity
	}
	return out
}

// create makes a group owned by owner with members, OPTIONAL and SINCE_JOIN unless
// req says otherwise.
func (e *env) create(t testing.TB, owner *user, group string, members ...*user) *groupv1.Group {
	t.Helper()
	resp, err := e.client.CreateGroup(owner.ctx(), &groupv1.CreateGroupRequest{
		GroupId: group, Members: identities(members...),
		EncryptionMode:    groupv1.EncryptionMode_ENCRYPTION_MODE_OPTIONAL,
		HistoryVisibility: groupv1.HistoryVisibility_HISTORY_VISIBILITY_SINCE_JOIN,
	})
	if err != nil {
		t.Fatal(err)
	}
	return resp.GetGroup()
}

// wrapped is a key wrapped to u's card: random bytes of the right sizes (the server
// never opens a wrapped key).
func wrapped(u *user) *envelopev1.WrappedEpochKey {
	enc := make([]byte, 32)
	ct := make([]byte, 48)
	rand.Read(enc)
	rand.Read(ct)
	return &envelopev1.WrappedEpochKey{RecipientCardId: u.cardID, Enc: enc, Ciphertext: ct}
}

// commitFor builds a commit by signer from epoch `from` (whose commit hash is prev)
// with a key for each recipient.
func (e *env) commitFor(t testing.TB, group string, from uint64, prev []byte, signer *user, recipients ...*user) (*envelopev1.SignedEpochCommit, []*groupv1.MemberKey) {
	t.Helper()
	keys := make([]*groupv1.MemberKey, len(recipients))
	wks := make([]*envelopev1.WrappedEpochKey, len(recipients))
	for i, r := range recipients {
		wks[i] = wrapped(r)
		keys[i] = &groupv1.MemberKey{Identity: r.identity, WrappedKey: wks[i]}
	}
	return e.signCommit(t, group, from, prev, signer, wks), keys
}

// signCommit signs the commit content over wks, as the SDK does, for the current head
// of the group's membership chain (or a made-up one when signer may not read it).
func (e *env) signCommit(t testing.TB, group string, from uint64, prev []byte, signer *user, wks []*envelopev1.WrappedEpochKey) *envelopev1.SignedEpochCommit {
	t.Helper()
	head := e2ee.MembershipHead{Sequence: 1, Hash: make([]byte, 32)}
	if st, err := e.raw.GetEpochState(signer.ctx(), &groupv1.GetEpochStateRequest{GroupId: group}); err == nil {
		head = e2ee.MembershipHead{Sequence: st.GetMembershipSequence(), Hash: st.GetMembershipHash()}
	}
	c, err := e2ee.SignEpochCommit(signer.keys, signer.cardID, group, from+1, e2ee.NewEpochKey(), wks, prev, head, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// commit commits the next epoch of group by signer for recipients and fails the test
// on error.
func (e *env) commit(t testing.TB, group string, signer *user, recipients ...*user) *groupv1.CommitEpochResponse {
	t.Helper()
	st, err := e.client.GetEpochState(signer.ctx(), &groupv1.GetEpochStateRequest{GroupId: group})
	if err != nil {
		t.Fatal(err)
	}
	c, keys := e.commitFor(t, group, st.GetEpoch(), st.GetCommit().GetCommitHash(), signer, recipients...)
	resp, err := e.client.CommitEpoch(signer.ctx(), &groupv1.CommitEpochRequest{GroupId: group, FromEpoch: st.GetEpoch(), Commit: c, Keys: keys})
	if err != nil {
		t.Fatalf("commit from epoch %d: %v", st.GetEpoch(), err)
	}
	return resp
}

// send asks AuthorizeSend, as the messaging service does, for an ENCRYPTED message by
// u at epoch with u's card.
func (e *env) authorize(u *user, group string, epoch uint64) (*groupv1.AuthorizeSendResponse, error) {
	return e.client.AuthorizeSend(asService(), &groupv1.AuthorizeSendRequest{
		AppId: u.app.id, GroupId: group, Sender: u.identity,
		Kind: groupv1.MessageKind_MESSAGE_KIND_ENCRYPTED, Epoch: epoch, SenderCardId: u.cardID,
	})
}

// detail returns the status detail of err of type T, or nil.
func detail[T proto.Message](err error) T {
	var zero T
	for _, d := range status.Convert(err).Details() {
		if m, ok := d.(T); ok {
			return m
		}
	}
	return zero
}

// snapshot returns every key and value of group.db (or every row of the group
// service's tables in PostgreSQL), to prove a refused request wrote nothing.
func (e *env) snapshot(t testing.TB) map[string]string {
	t.Helper()
	if b, ok := e.store.(*BoltStore); ok {
		return servicetest.Snapshot(t, b.DB())
	}
	return pgSnapshot(t, e.store.(*PostgresStore))
}
