package messaging

import (
	"maps"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/umbra-e2ee/umbra/internal/servicetest"
	groupv1 "github.com/umbra-e2ee/umbra/proto/umbra/group/v1"
	messagingv1 "github.com/umbra-e2ee/umbra/proto/umbra/messaging/v1"
)

// groupReq is an ENCRYPTED group message from u at epoch.
func (u user) groupReq(group, cmid, body string, epoch uint64) *messagingv1.SendRequest {
	r := u.sendReq(group, cmid, body)
	r.Header.Epoch = epoch
	return r
}

// TestGroupConversation: the group service decides who sends and reads; a message goes
// to every member's inbox; its refusals reach the client unchanged, EpochRequired
// detail included; history visibility follows the membership.
func TestGroupConversation(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{fakeGroups: true})
	a := e.newApp(t)
	us := e.newUsers(t, a, "alice", "bob", "carol", "dave", "erin")
	e.longLived(t, us...)
	alice, bob, carol, dave, erin := us[0], us[1], us[2], us[3], us[4]
	group := e.groupID(t, a, "team")
	e.groups.create(a.id, group, e.clock.Now(), alice.identity, bob.identity, carol.identity)

	streams := map[string]*sub{}
	for _, u := range []user{alice, bob, carol, dave} {
		streams[u.identity] = e.subscribe(t, u, nil, 0)
		streams[u.identity].untilCaughtUp(t)
	}
	r1, err := e.client.Send(alice.ctx(), alice.groupReq(group, "g1", "hello team", 1))
	if err != nil || r1.GetConversationId() != group || r1.GetSequence() != 1 {
		t.Fatalf("group send: %v, %v", r1, err)
	}
	for _, u := range []user{alice, bob, carol} {
		it := streams[u.identity].nextItem(t)
		if m := it.GetMessage(); it.GetInboxSequence() != 1 || m.GetConversationId() != group || string(m.GetEnvelope()) != "hello team" || m.GetHeader().GetEpoch() != 1 {
			t.Errorf("%s got %v", u.identity, it)
		}
	}
	if n := e.groups.count("ListMemberIdentities"); n != 2 {
		t.Errorf("%d ListMemberIdentities calls for 3 members in pages of 2, want 2", n)
	}
	e.clock.Add(time.Minute)
	if r, err := e.client.Send(bob.ctx(), bob.groupReq(group, "g2", "second", 1)); err != nil || r.GetSequence() != 2 {
		t.Fatalf("second send: %v, %v", r, err)
	}
	if n := e.groups.count("ListMemberIdentities"); n != 2 {
		t.Errorf("the member list was read again at the same membership version (%d calls)", n)
	}

	// Refusals, relayed as the group service gave them; nothing stored.
	unknown := e.groupID(t, a, "nobody's")
	servicetest.CheckRefusals(t, []servicetest.Refusal{
		{"non-member", e.sendCall(dave, dave.groupReq(group, "d1", "let me in", 1)), codes.PermissionDenied, "is not a member"},
		{"unknown group", e.sendCall(alice, alice.groupReq(unknown, "u1", "anyone?", 1)), codes.NotFound, "not found"},
		{"plaintext with an epoch", e.sendCall(alice, &messagingv1.SendRequest{ConversationId: group, ClientMessageId: "p", Header: &messagingv1.MessageHeader{Kind: messagingv1.MessageKind_MESSAGE_KIND_PLAINTEXT, Epoch: 1}, Envelope: []byte("x")}), codes.InvalidArgument, "carries no epoch"},
	}, e.snapshot)
	t.Run("stale epoch", func(t *testing.T) {
		e.groups.update(a.id, group, func(g *fakeGroup) { g.epoch, g.rotation = 2, true })
		before := e.snapshot(t)
		_, err := e.client.Send(alice.ctx(), alice.groupReq(group, "g3", "old key", 1))
		wantCode(t, err, codes.FailedPrecondition, "epoch required")
		want := &groupv1.EpochRequired{GroupId: group, CurrentEpoch: 2, MessageEpoch: 1, RotationRequired: true,
			RotationReasons: []groupv1.RotationReason{groupv1.RotationReason_ROTATION_REASON_MEMBERSHIP_CHANGED}}
		details := status.Convert(err).Details()
		if len(details) != 1 || !proto.Equal(details[0].(proto.Message), want) {
			t.Errorf("details %v; want %v", details, want)
		}
		if !maps.Equal(before, e.snapshot(t)) {
			t.Error("the refused message changed the store")
		}
		// A retry of a message stored before the rotation is still a duplicate, and
		// the group service is not asked again.
		calls := e.groups.count("AuthorizeSend")
		again, err := e.client.Send(bob.ctx(), bob.groupReq(group, "g2", "second", 1))
		if err != nil || !again.GetDuplicate() || again.GetSequence() != 2 || e.groups.count("AuthorizeSend") != calls {
			t.Errorf("retry after rotation: %v, %v (AuthorizeSend calls %d -> %d)", again, err, calls, e.groups.count("AuthorizeSend"))
		}
		_, err = e.client.Send(bob.ctx(), bob.groupReq(group, "g2", "second, re-encrypted", 2))
		wantCode(t, err, codes.AlreadyExists, "already used")
		e.groups.update(a.id, group, func(g *fakeGroup) { g.rotation = false })
	})

	// erin joins: the membership version changes, the list is read again, and under
	// SINCE_JOIN she reads only what was stored since.
	e.clock.Add(time.Minute)
	joined := e.clock.Now()
	e.groups.update(a.id, group, func(g *fakeGroup) {
		g.members[erin.identity] = joined
		g.version++
		g.sinceJoin = true
	})
	streams[erin.identity] = e.subscribe(t, erin, nil, 0)
	streams[erin.identity].untilCaughtUp(t)
	if r, err := e.client.Send(carol.ctx(), carol.groupReq(group, "g4", "welcome erin", 2)); err != nil || r.GetSequence() != 3 {
		t.Fatalf("send after the join: %v, %v", r, err)
	}
	if it := streams[erin.identity].nextItem(t); string(it.GetMessage().GetEnvelope()) != "welcome erin" {
		t.Errorf("erin got %v", it)
	}
	if h := e.history(t, erin, group); !equalSeqs(seqs(h), []uint64{3}) {
		t.Errorf("erin's history: %v; want only what was stored since she joined", seqs(h))
	}
	if resp, err := e.client.History(erin.ctx(), &messagingv1.HistoryRequest{ConversationId: group}); err != nil || !equalSeqs(seqs(resp.GetMessages()), []uint64{3}) || resp.GetNextPageToken() != "" {
		t.Errorf("erin's history backwards: %v, %v", resp, err)
	}
	if h := e.history(t, bob, group); !equalSeqs(seqs(h), []uint64{1, 2, 3}) {
		t.Errorf("bob's history: %v", seqs(h))
	}
	select {
	case it := <-streams[dave.identity].items:
		if it.GetHeartbeat() == nil {
			t.Errorf("dave, not a member, got %v", it)
		}
	default:
	}

	// Reading, cursors and listing: members only; a former member no longer sees it.
	_, err = e.client.History(dave.ctx(), &messagingv1.HistoryRequest{ConversationId: group})
	wantCode(t, err, codes.PermissionDenied, "not a member of group")
	_, err = e.client.GetCursors(dave.ctx(), &messagingv1.GetCursorsRequest{ConversationId: group})
	wantCode(t, err, codes.PermissionDenied, "not a member of group")
	_, err = e.client.UpdateCursors(dave.ctx(), &messagingv1.UpdateCursorsRequest{ConversationId: group, ReadSequence: 1})
	wantCode(t, err, codes.PermissionDenied, "not a member of group")
	if r, err := e.client.UpdateCursors(erin.ctx(), &messagingv1.UpdateCursorsRequest{ConversationId: group, ReadSequence: 3}); err != nil || r.GetCursor().GetDeliveredSequence() != 3 {
		t.Errorf("erin's cursor: %v, %v", r, err)
	}
	if r, err := e.client.GetCursors(bob.ctx(), &messagingv1.GetCursorsRequest{ConversationId: group}); err != nil || len(r.GetCursors()) != 1 || r.GetCursors()[0].GetIdentity() != bob.identity {
		t.Errorf("group cursors: %v, %v; want the caller's only", r, err)
	}
	list, err := e.client.ListConversations(bob.ctx(), &messagingv1.ListConversationsRequest{})
	if err != nil || len(list.GetConversations()) != 1 {
		t.Fatalf("bob's conversations: %v, %v", list, err)
	}
	if c := list.GetConversations()[0]; c.GetKind() != messagingv1.ConversationKind_CONVERSATION_KIND_GROUP || c.GetGroupId() != group || c.GetLatestSequence() != 3 {
		t.Errorf("bob's group conversation: %v", c)
	}
	e.groups.update(a.id, group, func(g *fakeGroup) { delete(g.members, bob.identity); g.version++ })
	if list, err := e.client.ListConversations(bob.ctx(), &messagingv1.ListConversationsRequest{}); err != nil || len(list.GetConversations()) != 0 {
		t.Errorf("a former member's conversations: %v, %v", list, err)
	}
	_, err = e.client.Send(bob.ctx(), bob.groupReq(group, "g5", "still here?", 2))
	wantCode(t, err, codes.PermissionDenied, "is not a member")
}

// TestGroupsWithoutGroupService: until the group service answers, group conversations
// are refused, never allowed by default, and nothing is stored.
func TestGroupsWithoutGroupService(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name   string
		groups Groups
	}{
		{"group service unimplemented", nil},
		{"no group service configured", noGroups{}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, envOptions{groups: tc.groups})
			a := e.newApp(t)
			alice := e.newUsers(t, a, "alice")[0]
			group := e.groupID(t, a, "team")
			before := e.snapshot(t)
			calls := map[string]func() error{
				"Send":           servicetest.Call(e.client.Send, alice.ctx(), alice.groupReq(group, "g", "x", 1)),
				"Send plaintext": servicetest.Call(e.client.Send, alice.ctx(), &messagingv1.SendRequest{ConversationId: group, ClientMessageId: "p", Header: plaintext(), Envelope: []byte("x")}),
				"History":        servicetest.Call(e.client.History, alice.ctx(), &messagingv1.HistoryRequest{ConversationId: group}),
				"GetCursors":     servicetest.Call(e.client.GetCursors, alice.ctx(), &messagingv1.GetCursorsRequest{ConversationId: group}),
				"UpdateCursors":  servicetest.Call(e.client.UpdateCursors, alice.ctx(), &messagingv1.UpdateCursorsRequest{ConversationId: group, ReadSequence: 1}),
			}
			for name, call := range calls {
				if err := call(); status.Code(err) != codes.Unavailable || !containsFold(status.Convert(err).Message(), "group service") {
					t.Errorf("%s: %v; want UNAVAILABLE naming the group service", name, err)
				}
			}
			if !maps.Equal(before, e.snapshot(t)) {
				t.Error("refused group calls changed the store")
			}
		})
	}
}
