package group

import (
	"context"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/umbra-e2ee/umbra/internal/grpcserver"
	"github.com/umbra-e2ee/umbra/internal/servicetest"
	"github.com/umbra-e2ee/umbra/pkg/e2ee"
	"github.com/umbra-e2ee/umbra/pkg/grpcclient"
	cardv1 "github.com/umbra-e2ee/umbra/proto/umbra/card/v1"
	groupv1 "github.com/umbra-e2ee/umbra/proto/umbra/group/v1"
	messagingv1 "github.com/umbra-e2ee/umbra/proto/umbra/messaging/v1"
	storagev1 "github.com/umbra-e2ee/umbra/proto/umbra/storage/group/v1"
)

// The group service as several replicas over one PostgreSQL database, through real
// gRPC: what issue 16 asks of a stateless service. The store's own guarantees are the
// conformance suite's (store_conformance_test.go); these show the service keeps them.

// openPostgresReplica opens a store over url that the env closes once its servers
// have stopped.
func openPostgresReplica(t testing.TB, n *servicetest.Env, url string) *PostgresStore {
	t.Helper()
	return servicetest.Open(t, n, func() (*PostgresStore, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		return OpenPostgresStore(ctx, url, n.Log.Named("group-store"))
	})
}

// replica is another group service over the env's database (envOptions.postgres), on
// a listener of its own and reaching the same card and messaging services: a second
// replica. Its background loops run only when the test runs them.
type replica struct {
	srv *Server
	// client signs membership requests as env.client does; raw sends them as they are.
	client, raw groupv1.GroupServiceClient
}

func (e *env) replica(t testing.TB) *replica {
	t.Helper()
	if e.pgURL == "" {
		t.Fatal("replica: the env's store is not in PostgreSQL")
	}
	store := openPostgresReplica(t, e.n, e.pgURL)
	peer := e.n.DialPeer(grpcclient.Config{})
	srv, err := New(store, cardv1.NewCardServiceClient(peer), messagingv1.NewMessagingServiceClient(peer), Config{Clock: e.clock.Now}, e.n.Log.Named("group-2"))
	if err != nil {
		t.Fatal(err)
	}
	gs, table := e.n.NewServer(e.identity, Policies())
	srv.Register(gs.Server)
	if err := grpcserver.CheckPolicies(gs.Server, table); err != nil {
		t.Fatal(err)
	}
	lis := e.n.Listen()
	e.n.ServeOn(gs, lis)
	dial := func(opts ...grpc.DialOption) groupv1.GroupServiceClient {
		conn, err := grpcclient.Dial(grpcclient.Config{Addr: lis.Addr().String()}, opts...)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { conn.Close() })
		return groupv1.NewGroupServiceClient(conn)
	}
	return &replica{srv: srv, client: dial(grpc.WithChainUnaryInterceptor(e.sign.interceptor)), raw: dial()}
}

// TestReplicasCommitAnEpochOnce: two replicas get a commit of the same epoch at the
// same moment, round after round: one commits, the other answers ABORTED with the
// EpochConflict the bbolt engine's single writer gives, and the epochs go up by one.
func TestReplicasCommitAnEpochOnce(t *testing.T) {
	e := newEnv(t, envOptions{postgres: true})
	r2 := e.replica(t)
	owner, bob, group := e.twoMemberGroup(t)
	clients := []groupv1.GroupServiceClient{e.client, r2.client}
	for round := range 5 {
		st, err := e.client.GetEpochState(owner.ctx(), &groupv1.GetEpochStateRequest{GroupId: group})
		if err != nil {
			t.Fatal(err)
		}
		from := st.GetEpoch()
		reqs := make([]*groupv1.CommitEpochRequest, 2)
		for i := range reqs {
			c, keys := e.commitFor(t, group, from, st.GetCommit().GetCommitHash(), owner, owner, bob)
			reqs[i] = &groupv1.CommitEpochRequest{GroupId: group, FromEpoch: from, Commit: c, Keys: keys}
		}
		errc := make([]error, 2)
		resps := make([]*groupv1.CommitEpochResponse, 2)
		var wg sync.WaitGroup
		for i, c := range clients {
			wg.Go(func() { resps[i], errc[i] = c.CommitEpoch(owner.ctx(), reqs[i]) })
		}
		wg.Wait()
		won, lost := 0, 1
		if errc[0] != nil {
			won, lost = 1, 0
		}
		if errc[won] != nil || status.Code(errc[lost]) != codes.Aborted {
			t.Fatalf("round %d: the commits answered %v and %v; want one success and one ABORTED", round, errc[0], errc[1])
		}
		conflict := detail[*groupv1.EpochConflict](errc[lost])
		if conflict == nil || conflict.GetCurrentEpoch() != from+1 || string(conflict.GetCurrentCommitHash()) != string(resps[won].GetCommit().GetCommitHash()) {
			t.Errorf("round %d: the loser's EpochConflict %v; want epoch %d and the winner's hash", round, conflict, from+1)
		}
		for _, c := range clients {
			st, err := c.GetEpochState(bob.ctx(), &groupv1.GetEpochStateRequest{GroupId: group})
			if err != nil || st.GetEpoch() != from+1 || string(st.GetCommit().GetCommitHash()) != string(resps[won].GetCommit().GetCommitHash()) {
				t.Fatalf("round %d: a replica reports epoch %d (%v); want %d, the winner's", round, st.GetEpoch(), err, from+1)
			}
		}
	}
	// Each commit's key reached bob once per epoch.
	keys, err := r2.client.GetEpochKeys(bob.ctx(), &groupv1.GetEpochKeysRequest{GroupId: group})
	if err != nil || len(keys.GetKeys()) != 6 {
		t.Errorf("bob's keys: %d (%v); want one for each of 6 epochs", len(keys.GetKeys()), err)
	}
}

// TestReplicasMembershipChainDoesNotFork: two replicas get membership changes signed
// after the same head at the same moment: one is appended, the other answers ABORTED
// with MembershipConflict, and every replica serves one chain.
func TestReplicasMembershipChainDoesNotFork(t *testing.T) {
	e := newEnv(t, envOptions{postgres: true})
	r2 := e.replica(t)
	_, group, us := e.newTeam(t, 2, "owner", "bob", "carol", "dave", "erin", "frank")
	owner := us[0]
	raws := []groupv1.GroupServiceClient{e.raw, r2.raw}
	for round, pair := range [][2]*user{{us[2], us[3]}, {us[4], us[5]}} {
		errc := make([]error, 2)
		reqs := make([]*groupv1.AddMembersRequest, 2)
		for i, u := range pair {
			st := e.statementFor(t, owner, group, e2ee.MembershipChange{Kind: e2ee.KindAdd, Subjects: []string{u.identity}})
			reqs[i] = &groupv1.AddMembersRequest{GroupId: group, Identities: []string{u.identity}, Statement: st}
		}
		var wg sync.WaitGroup
		for i, c := range raws {
			wg.Go(func() { _, errc[i] = c.AddMembers(owner.ctx(), reqs[i]) })
		}
		wg.Wait()
		lost := 1
		if errc[0] != nil {
			lost = 0
		}
		if errc[1-lost] != nil || status.Code(errc[lost]) != codes.Aborted || detail[*groupv1.MembershipConflict](errc[lost]) == nil {
			t.Fatalf("round %d: the changes answered %v and %v; want one success and one ABORTED with MembershipConflict", round, errc[0], errc[1])
		}
	}
	var chains [][]byte
	for _, c := range raws {
		resp, err := c.GetMembershipChain(owner.ctx(), &groupv1.GetMembershipChainRequest{GroupId: group})
		if err != nil {
			t.Fatal(err)
		}
		heads := resp.GetHeadSequence()
		// The chain verifies from its first statement to the head.
		var prev []byte
		for i, signed := range resp.GetStatements() {
			st, err := e2ee.ParseMembershipStatement(signed)
			if err != nil || st.Sequence != uint64(i+1) || string(st.PreviousHash) != string(prev) {
				t.Fatalf("statement %d: %v, sequence %d; does not follow the one before", i+1, err, st.Sequence)
			}
			prev = st.Hash
		}
		if heads != 3 || len(resp.GetStatements()) != 3 || string(prev) != string(resp.GetHeadHash()) {
			t.Errorf("chain of %d statements to head %d; want 3 (the creation and one change per round)", len(resp.GetStatements()), heads)
		}
		b, _ := proto.Marshal(resp)
		chains = append(chains, b)
	}
	if string(chains[0]) != string(chains[1]) {
		t.Error("the replicas serve different chains")
	}
}

// TestReplicasFollowCardsOnce: both replicas' card followers read the same card event
// (a member's new card) at once: the group is marked rotation required, and its
// members told, once.
func TestReplicasFollowCardsOnce(t *testing.T) {
	e := newEnv(t, envOptions{postgres: true, noLoops: true})
	r2 := e.replica(t)
	owner, bob, group := e.twoMemberGroup(t)
	// Caught up: the follower's cursor is past the cards published so far.
	for {
		n, err := e.srv.followOnce(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if n == 0 {
			break
		}
	}
	before, cards := rotationEvents(t, e.store, group), cardsVersion(t, e.store, owner.app.id, group)
	if err := e.publishCard(bob); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for _, srv := range []*Server{e.srv, r2.srv} {
		wg.Go(func() {
			if _, err := srv.followOnce(context.Background()); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	st, err := e.client.GetEpochState(owner.ctx(), &groupv1.GetEpochStateRequest{GroupId: group})
	if err != nil || !st.GetRotationRequired() {
		t.Fatalf("after bob's new card: rotation required %t (%v)", st.GetRotationRequired(), err)
	}
	if n := rotationEvents(t, e.store, group) - before; n != 1 {
		t.Errorf("%d ROTATION_REQUIRED events for one card event; want 1", n)
	}
	if n := cardsVersion(t, e.store, owner.app.id, group) - cards; n != 1 {
		t.Errorf("cards_version moved by %d for one card event; want 1", n)
	}
}

func cardsVersion(t *testing.T, s Store, app, group string) uint64 {
	t.Helper()
	var g *storagev1.GroupRecord
	if err := s.View(func(tx Tx) error {
		var err error
		g, err = tx.Group(app, group)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	return g.GetCardsVersion()
}

// rotationEvents counts the ROTATION_REQUIRED events in the outbox for group.
func rotationEvents(t *testing.T, s Store, group string) int {
	t.Helper()
	n := 0
	err := s.View(func(tx Tx) error {
		recs, err := tx.Outbox(10000)
		for _, r := range recs {
			ev := &groupv1.GroupEvent{}
			if err := proto.Unmarshal(r.GetPayload(), ev); err != nil {
				return err
			}
			if r.GetGroupId() == group && ev.GetKind() == groupv1.GroupEventKind_GROUP_EVENT_KIND_ROTATION_REQUIRED {
				n++
			}
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return n
}
