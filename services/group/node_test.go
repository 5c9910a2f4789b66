package group_test

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/umbra-e2ee/umbra/internal/node"
	"github.com/umbra-e2ee/umbra/internal/node/nodetest"
	"github.com/umbra-e2ee/umbra/internal/servicetest"
	"github.com/umbra-e2ee/umbra/pkg/e2ee"
	cardv1 "github.com/umbra-e2ee/umbra/proto/umbra/card/v1"
	envelopev1 "github.com/umbra-e2ee/umbra/proto/umbra/envelope/v1"
	groupv1 "github.com/umbra-e2ee/umbra/proto/umbra/group/v1"
	messagingv1 "github.com/umbra-e2ee/umbra/proto/umbra/messaging/v1"
)

// member is a user of the node with a card.
type member struct {
	identity string
	token    string
	keys     *e2ee.KeyPair
	card     *e2ee.Card
}

func (m *member) ctx(ctx context.Context) context.Context {
	return metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+m.token)
}

// sign is m's statement of change after the head (seq, prev) of group's chain.
func (m *member) sign(t *testing.T, group string, seq uint64, prev []byte, change e2ee.MembershipChange) *envelopev1.SignedMembershipStatement {
	t.Helper()
	st, err := e2ee.SignMembershipStatement(m.keys, m.card.ID, m.identity, group, seq+1, prev, change, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	return st
}

// newCardMember gives uid of app a card published through conn.
func newCardMember(t *testing.T, ctx context.Context, app *nodetest.App, cards cardv1.CardServiceClient, uid string) *member {
	t.Helper()
	m := &member{identity: app.User(t, uid)}
	m.token = app.Token(t, m.identity)
	kp, err := e2ee.GenerateKeyPair(e2ee.DefaultSuite)
	if err != nil {
		t.Fatal(err)
	}
	content, sig, err := e2ee.NewCard(kp, m.identity, time.Now(), nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cards.PublishCard(m.ctx(ctx), &cardv1.PublishCardRequest{Content: content, SelfSignature: sig}); err != nil {
		t.Fatal(err)
	}
	if m.card, err = e2ee.ParseCard(content, sig); err != nil {
		t.Fatal(err)
	}
	m.keys = kp
	return m
}

// stream is a member's live Subscribe stream.
type stream struct{ *servicetest.Inbox }

func subscribe(t *testing.T, ctx context.Context, msg messagingv1.MessagingServiceClient, m *member) stream {
	t.Helper()
	return stream{servicetest.SubscribeFromStart(t, m.ctx(ctx), msg, 100)}
}

// next returns the next event or message of the stream, skipping heartbeats.
func (s stream) next(t *testing.T) *messagingv1.SubscribeResponse {
	t.Helper()
	return s.Next(t, 15*time.Second)
}

// nextGroupEvent returns the next item, which must be a group event of kind.
func (s stream) nextGroupEvent(t *testing.T, kind groupv1.GroupEventKind) *groupv1.GroupEvent {
	t.Helper()
	it := s.next(t)
	ev := &groupv1.GroupEvent{}
	if it.GetEvent().GetType() != "umbra.group.v1.GroupEvent" || proto.Unmarshal(it.GetEvent().GetPayload(), ev) != nil || ev.GetKind() != kind {
		t.Fatalf("got %v; want a %s group event", it, kind)
	}
	return ev
}

// TestWholeNode runs a group's life on a whole Umbra (every role in one process, the
// services reaching each other over gRPC): real cards, a real epoch made by pkg/e2ee,
// events and messages in the members' Subscribe streams, and the refusal of a removed
// member's key and of the old epoch.
func TestWholeNode(t *testing.T) {
	t.Parallel()
	n := nodetest.Start(t, func(c *node.Config) { c.Group.CardPollInterval = 50 * time.Millisecond })
	app := n.NewApp(t)
	ctx := context.Background()
	cards := cardv1.NewCardServiceClient(n.Conn())
	groups := groupv1.NewGroupServiceClient(n.Conn())
	msg := messagingv1.NewMessagingServiceClient(n.Conn())
	alice, bob := newCardMember(t, ctx, app, cards, "alice"), newCardMember(t, ctx, app, cards, "bob")
	group := app.Group(t, "book club")
	bobStream := subscribe(t, ctx, msg, bob)

	created, err := groups.CreateGroup(alice.ctx(ctx), &groupv1.CreateGroupRequest{GroupId: group, Members: []string{bob.identity},
		EncryptionMode: groupv1.EncryptionMode_ENCRYPTION_MODE_REQUIRED, HistoryVisibility: groupv1.HistoryVisibility_HISTORY_VISIBILITY_SINCE_JOIN,
		Statement: alice.sign(t, group, 0, nil, e2ee.MembershipChange{Kind: e2ee.KindCreate, Subjects: []string{bob.identity}})})
	if err != nil {
		t.Fatal(err)
	}
	head := created.GetGroup()
	if ev := bobStream.nextGroupEvent(t, groupv1.GroupEventKind_GROUP_EVENT_KIND_CREATED); ev.GetGroup().GetOwner() != alice.identity {
		t.Errorf("CREATED %v", ev)
	}

	// Alice creates epoch 1 for both cards; bob opens his key.
	epoch, err := e2ee.NewEpoch(alice.keys, alice.card.ID, group, 1, nil, e2ee.MembershipHead{Sequence: head.GetMembershipSequence(), Hash: head.GetMembershipHash()}, []*e2ee.Card{alice.card, bob.card}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	keys := []*groupv1.MemberKey{{Identity: alice.identity, WrappedKey: epoch.WrappedKeys[0]}, {Identity: bob.identity, WrappedKey: epoch.WrappedKeys[1]}}
	if _, err := groups.CommitEpoch(alice.ctx(ctx), &groupv1.CommitEpochRequest{GroupId: group, FromEpoch: 0, Commit: epoch.Commit, Keys: keys}); err != nil {
		t.Fatal(err)
	}
	if ev := bobStream.nextGroupEvent(t, groupv1.GroupEventKind_GROUP_EVENT_KIND_EPOCH_COMMITTED); ev.GetEpoch() != 1 || ev.GetActor() != alice.identity {
		t.Errorf("EPOCH_COMMITTED %v", ev)
	}
	got, err := groups.GetEpochKeys(bob.ctx(ctx), &groupv1.GetEpochKeysRequest{GroupId: group})
	if err != nil || len(got.GetKeys()) != 1 {
		t.Fatalf("bob's keys: %v, %v", got, err)
	}
	commit, err := e2ee.VerifyEpochCommit(got.GetKeys()[0].GetCommit().GetCommit(), group, 1, alice.card)
	if err != nil {
		t.Fatal(err)
	}
	key, err := commit.OpenEpochKey(got.GetKeys()[0].GetWrappedKey(), func(id []byte) *e2ee.KeyPair {
		if bytes.Equal(id, bob.card.ID) {
			return bob.keys
		}
		return nil
	})
	if err != nil || !bytes.Equal(key, epoch.Key) {
		t.Fatalf("bob's epoch key: %v", err)
	}

	// An encrypted message at epoch 1 reaches bob; plaintext is refused (REQUIRED).
	sealed, err := e2ee.SealGroupMessage(alice.keys, alice.card.ID, group, 1, epoch.Key, []byte("chapter one"), time.Now())
	if err != nil {
		t.Fatal(err)
	}
	send := func(cmid string, kind messagingv1.MessageKind, ep uint64, env []byte) error {
		h := &messagingv1.MessageHeader{Kind: kind, Epoch: ep}
		if kind == messagingv1.MessageKind_MESSAGE_KIND_ENCRYPTED {
			h.SenderCardId = alice.card.ID
		}
		_, err := msg.Send(alice.ctx(ctx), &messagingv1.SendRequest{ConversationId: group, ClientMessageId: cmid, Header: h, Envelope: env})
		return err
	}
	if err := send("m1", messagingv1.MessageKind_MESSAGE_KIND_ENCRYPTED, 1, sealed); err != nil {
		t.Fatal(err)
	}
	if it := bobStream.next(t); !bytes.Equal(it.GetMessage().GetEnvelope(), sealed) {
		t.Errorf("bob got %v; want alice's message", it)
	}
	if err := send("p1", messagingv1.MessageKind_MESSAGE_KIND_PLAINTEXT, 0, []byte("in clear")); status.Code(err) != codes.FailedPrecondition {
		t.Errorf("plaintext in a REQUIRED group: %v", err)
	}

	// Bob is removed: he hears of it, reads no more keys, and alice's next message at
	// epoch 1 is refused until she commits epoch 2 without him.
	removed, err := groups.RemoveMember(alice.ctx(ctx), &groupv1.RemoveMemberRequest{GroupId: group, Identity: bob.identity,
		Statement: alice.sign(t, group, head.GetMembershipSequence(), head.GetMembershipHash(), e2ee.MembershipChange{Kind: e2ee.KindRemove, Subjects: []string{bob.identity}})})
	if err != nil {
		t.Fatal(err)
	}
	if ev := bobStream.nextGroupEvent(t, groupv1.GroupEventKind_GROUP_EVENT_KIND_MEMBER_REMOVED); ev.GetGroup() != nil {
		t.Errorf("the removed member got the group's state: %v", ev)
	}
	if _, err := groups.GetEpochKeys(bob.ctx(ctx), &groupv1.GetEpochKeysRequest{GroupId: group}); status.Code(err) != codes.PermissionDenied {
		t.Errorf("removed bob's keys: %v", err)
	}
	err = send("m2", messagingv1.MessageKind_MESSAGE_KIND_ENCRYPTED, 1, sealed)
	var detail *groupv1.EpochRequired
	for _, d := range status.Convert(err).Details() {
		if r, ok := d.(*groupv1.EpochRequired); ok {
			detail = r
		}
	}
	if status.Code(err) != codes.FailedPrecondition || detail == nil || !detail.GetRotationRequired() || detail.GetCurrentEpoch() != 1 {
		t.Fatalf("a message at the old epoch after the removal: %v (%v)", err, detail)
	}
	head = removed.GetGroup()
	epoch2, err := e2ee.NewEpoch(alice.keys, alice.card.ID, group, 2, epoch.CommitHash, e2ee.MembershipHead{Sequence: head.GetMembershipSequence(), Hash: head.GetMembershipHash()}, []*e2ee.Card{alice.card}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := groups.CommitEpoch(alice.ctx(ctx), &groupv1.CommitEpochRequest{GroupId: group, FromEpoch: 1, Commit: epoch2.Commit,
		Keys: []*groupv1.MemberKey{{Identity: alice.identity, WrappedKey: epoch2.WrappedKeys[0]}}}); err != nil {
		t.Fatal(err)
	}
	sealed2, err := e2ee.SealGroupMessage(alice.keys, alice.card.ID, group, 2, epoch2.Key, []byte("chapter two"), time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if err := send("m2", messagingv1.MessageKind_MESSAGE_KIND_ENCRYPTED, 2, sealed2); err != nil {
		t.Fatal(err)
	}
}

// TestREST drives the group service through the whole node's REST gateway: create and
// read a group, and a stale commit whose EpochConflict detail reaches the JSON error
// body.
func TestREST(t *testing.T) {
	t.Parallel()
	n := nodetest.Start(t)
	app := n.NewApp(t)
	m := newCardMember(t, context.Background(), app, cardv1.NewCardServiceClient(n.Conn()), "alice")
	alice, token := m.identity, m.token
	group := app.Group(t, "rest")
	statement, err := protojson.Marshal(m.sign(t, group, 0, nil, e2ee.MembershipChange{Kind: e2ee.KindCreate}))
	if err != nil {
		t.Fatal(err)
	}
	call := func(method, path, body string) (int, map[string]any) {
		t.Helper()
		code, raw := n.REST(t, method, path, token, body)
		out := map[string]any{}
		if err := json.Unmarshal(raw, &out); err != nil {
			t.Fatalf("%s %s: %v", method, path, err)
		}
		return code, out
	}
	code, out := call("POST", "/v1/groups", `{"groupId":"`+group+`","encryptionMode":"ENCRYPTION_MODE_REQUIRED","historyVisibility":"HISTORY_VISIBILITY_SINCE_JOIN","statement":`+string(statement)+`}`)
	if code != http.StatusOK || out["group"].(map[string]any)["owner"] != alice {
		t.Fatalf("create: %d %v", code, out)
	}
	code, out = call("GET", "/v1/groups/"+group, "")
	if code != http.StatusOK || len(out["group"].(map[string]any)["members"].([]any)) != 1 {
		t.Fatalf("get: %d %v", code, out)
	}
	code, out = call("GET", "/v1/groups/"+group+"/epoch", "")
	if code != http.StatusOK || out["rotationRequired"] != true {
		t.Fatalf("epoch state: %d %v", code, out)
	}
	// A commit from epoch 5 of a group at epoch 0: ABORTED (409) with EpochConflict.
	code, out = call("POST", "/v1/groups/"+group+"/epochs", `{"fromEpoch":"5","commit":{"content":"AA==","signature":"AA=="}}`)
	details, _ := out["details"].([]any)
	if code != http.StatusConflict || len(details) != 1 || details[0].(map[string]any)["@type"] != "type.googleapis.com/umbra.group.v1.EpochConflict" {
		t.Fatalf("stale commit: %d %v", code, out)
	}
}

// TestRESTCallRateLimit: past an identity's burst of group calls, the gateway answers
// 429 with the limit in the JSON error.
func TestRESTCallRateLimit(t *testing.T) {
	t.Parallel()
	n := nodetest.Start(t, func(c *node.Config) { c.Group.CallRate, c.Group.CallBurst = 0.01, 2 })
	app := n.NewApp(t)
	token := app.Token(t, app.User(t, "alice"))
	group := app.Group(t, "rest limit")
	get := func() (int, string) {
		t.Helper()
		code, raw := n.REST(t, "GET", "/v1/groups/"+group, token, "")
		var out struct{ Message string }
		if err := json.Unmarshal(raw, &out); err != nil {
			t.Fatal(err)
		}
		return code, out.Message
	}
	for range 2 {
		if code, msg := get(); code != http.StatusNotFound {
			t.Fatalf("within the burst: %d %s, want 404 (no such group)", code, msg)
		}
	}
	if code, msg := get(); code != http.StatusTooManyRequests || !strings.Contains(msg, "group call rate limit exceeded") {
		t.Fatalf("past the burst: %d %q, want 429", code, msg)
	}
}
