package messaging

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"
	"google.golang.org/grpc"

	"github.com/umbra-e2ee/umbra/internal/pgtest"
	"github.com/umbra-e2ee/umbra/internal/servicetest"
	"github.com/umbra-e2ee/umbra/internal/servicetest/identitytest"
	"github.com/umbra-e2ee/umbra/pkg/auth"
	"github.com/umbra-e2ee/umbra/pkg/grpcclient"
	identityv1 "github.com/umbra-e2ee/umbra/proto/umbra/identity/v1"
	messagingv1 "github.com/umbra-e2ee/umbra/proto/umbra/messaging/v1"
	"github.com/umbra-e2ee/umbra/services/identity"
)

// replica is one messaging server of several over one PostgreSQL database, and a
// client of it.
type replica struct {
	srv    *Server
	client messagingv1.MessagingServiceClient
}

// startReplicas starts n messaging servers, each on its own listener over its own
// store (pool) of one database, beside one identity service, as n replicas of the
// service in a cluster. poll is their stores' WatchPoll.
func startReplicas(t *testing.T, n int, poll time.Duration) (identityv1.IdentityServiceClient, []replica) {
	t.Helper()
	env := servicetest.NewEnv(t, servicetest.Options{})
	ids := identitytest.Start(t, env)
	db := pgtest.NewDatabase(t)
	policies := []auth.Table{identity.Policies(), Policies()}
	out := make([]replica, n)
	for i := range out {
		store := servicetest.Open(t, env, func() (*PostgresStore, error) {
			return OpenPostgresStore(context.Background(), db.URL, PostgresOptions{WatchPoll: poll}, zaptest.NewLogger(t))
		})
		srv, err := New(store, nil, nil, Config{Clock: env.Clock.Now}, env.Log.Named(fmt.Sprint("messaging-", i)))
		if err != nil {
			t.Fatal(err)
		}
		var conn *grpc.ClientConn
		if i == 0 { // the env's own listener, with the identity service
			env.Serve(ids, policies, ids.Register, srv.Register)
			conn = env.Dial()
		} else {
			gs, _ := env.NewServer(ids, policies...)
			srv.Register(gs.Server)
			lis := env.Listen()
			env.ServeOn(gs, lis)
			if conn, err = grpcclient.Dial(grpcclient.Config{Addr: lis.Addr().String()}); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { conn.Close() })
		}
		env.Run(srv.Run)
		out[i] = replica{srv: srv, client: messagingv1.NewMessagingServiceClient(conn)}
	}
	return identityv1.NewIdentityServiceClient(env.Dial()), out
}

// TestReplicasOverPostgres: two messaging replicas over one database serve one
// deployment: a subscriber on one gets, live, in order and once each, the messages
// sent through the other (woken by the other's notifications: the replicas' polls are
// an hour apart), a retry through either replica is answered with the stored message,
// and the settings changed through one apply on the other.
func TestReplicasOverPostgres(t *testing.T) {
	ids, rs := startReplicas(t, 2, time.Hour)
	appID, appKey := servicetest.NewApp(t, ids, "replicas")
	uids := servicetest.Resolve(t, ids, appKey, "alice", "bob", "carol")
	tok := func(id string) string { return servicetest.Token(t, ids, appKey, id, time.Hour) }
	alice, bob, carol := uids[0], uids[1], uids[2]
	if _, err := rs[1].client.UpdateAppSettings(servicetest.As(servicetest.Admin), &messagingv1.UpdateAppSettingsRequest{
		AppId: appID, Settings: &messagingv1.AppSettings{AllowPlaintextDirect: true},
	}); err != nil {
		t.Fatal(err)
	}
	s := subscribeOn(t, servicetest.As(tok(alice)), rs[0].client, &messagingv1.SubscribeRequest{})
	if got, hb := s.untilCaughtUp(t); len(got) != 0 || hb.GetInboxSequence() != 0 {
		t.Fatalf("a new stream: %v then %v", got, hb)
	}
	send := func(c messagingv1.MessagingServiceClient, from string, j int) error {
		_, err := c.Send(servicetest.As(tok(from)), &messagingv1.SendRequest{
			ConversationId: alice, ClientMessageId: fmt.Sprint(j),
			Header:   &messagingv1.MessageHeader{Kind: messagingv1.MessageKind_MESSAGE_KIND_PLAINTEXT},
			Envelope: []byte(fmt.Sprintf("%s %d", from, j)),
		})
		return err
	}
	next := map[string]int{bob: 0, carol: 0}
	var seq uint64
	receive := func(n int) {
		t.Helper()
		for range n {
			it := s.nextItem(t)
			seq++
			m := it.GetMessage()
			if it.GetInboxSequence() != seq || string(m.GetEnvelope()) != fmt.Sprintf("%s %d", m.GetSender(), next[m.GetSender()]) {
				t.Fatalf("item %d: inbox sequence %d, %q from %s; want %s %d", seq, it.GetInboxSequence(), m.GetEnvelope(), m.GetSender(), m.GetSender(), next[m.GetSender()])
			}
			next[m.GetSender()]++
		}
	}
	// Through the other replica alone: only its wake-ups tell this one.
	for j := range 5 {
		if err := send(rs[1].client, bob, j); err != nil {
			t.Fatal(err)
		}
		receive(1)
	}
	// Through both at once.
	const each = 15
	var wg sync.WaitGroup
	for i, from := range []string{bob, carol} {
		wg.Go(func() {
			for j := range each {
				if from == bob {
					j += 5
				}
				if err := send(rs[1-i].client, from, j); err != nil { // bob through replica 1, carol through 0
					t.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	receive(2 * each)
	// A retry through the other replica: the stored message.
	for _, r := range rs {
		resp, err := r.client.Send(servicetest.As(tok(bob)), &messagingv1.SendRequest{
			ConversationId: alice, ClientMessageId: "3",
			Header:   &messagingv1.MessageHeader{Kind: messagingv1.MessageKind_MESSAGE_KIND_PLAINTEXT},
			Envelope: []byte(fmt.Sprintf("%s %d", bob, 3)),
		})
		if err != nil || !resp.GetDuplicate() || resp.GetSequence() != 4 {
			t.Errorf("a retry: %v, %v; want the stored message, sequence 4", resp, err)
		}
	}
}
