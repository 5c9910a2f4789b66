package group

import (
	"context"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	groupv1 "github.com/umbra-e2ee/umbra/proto/umbra/group/v1"
	messagingv1 "github.com/umbra-e2ee/umbra/proto/umbra/messaging/v1"
	storagev1 "github.com/umbra-e2ee/umbra/proto/umbra/storage/group/v1"
)

// groupEvents subscribes as u from the start of its inbox and returns the first n
// group events, failing the test if they do not arrive within 10 s. With n = 0 it
// returns what arrived by the first heartbeat after catching up.
func (e *env) groupEvents(t testing.TB, u *user, n int) []*groupv1.GroupEvent {
	t.Helper()
	ctx, cancel := context.WithTimeout(u.ctx(), 10*time.Second)
	defer cancel()
	after := uint64(0)
	stream, err := e.msg.Subscribe(ctx, &messagingv1.SubscribeRequest{AfterInboxSequence: &after})
	if err != nil {
		t.Fatal(err)
	}
	var out []*groupv1.GroupEvent
	for n == 0 || len(out) < n {
		item, err := stream.Recv()
		if err != nil {
			t.Fatalf("%s's stream after %d group events of %d: %v", u.identity, len(out), n, err)
		}
		if item.GetHeartbeat() != nil && n == 0 {
			break
		}
		ev := item.GetEvent()
		if ev == nil {
			continue
		}
		if ev.GetType() != EventType {
			t.Fatalf("event of type %q", ev.GetType())
		}
		g := &groupv1.GroupEvent{}
		if err := proto.Unmarshal(ev.GetPayload(), g); err != nil {
			t.Fatal(err)
		}
		if ev.GetGroupId() != g.GetGroupId() {
			t.Errorf("event about %s carries a payload about %s", ev.GetGroupId(), g.GetGroupId())
		}
		out = append(out, g)
	}
	return out
}

func kinds(evs []*groupv1.GroupEvent) []groupv1.GroupEventKind {
	out := make([]groupv1.GroupEventKind, len(evs))
	for i, ev := range evs {
		out[i] = ev.GetKind()
	}
	return out
}

// TestEventsReachTheRightStreams: each event reaches exactly the identities group.proto
// names, through the outbox and the messaging service's streams, with the group's
// state only for members.
func TestEventsReachTheRightStreams(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{})
	_, group, us := e.newTeam(t, 3, "owner", "bob", "carol", "dave", "erin", "frank")
	owner, bob, carol, dave, erin, frank := us[0], us[1], us[2], us[3], us[4], us[5]
	if _, err := e.client.RequestJoin(dave.ctx(), &groupv1.RequestJoinRequest{GroupId: group}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.client.InviteMember(owner.ctx(), &groupv1.InviteMemberRequest{GroupId: group, Identity: erin.identity}); err != nil {
		t.Fatal(err)
	}
	e.commit(t, group, bob, owner, bob, carol)
	if _, err := e.client.RemoveMember(owner.ctx(), &groupv1.RemoveMemberRequest{GroupId: group, Identity: carol.identity}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.client.DeclineJoinRequest(owner.ctx(), &groupv1.DeclineJoinRequestRequest{GroupId: group, Identity: dave.identity}); err != nil {
		t.Fatal(err)
	}
	K := func(ks ...groupv1.GroupEventKind) []groupv1.GroupEventKind { return ks }
	const (
		created  = groupv1.GroupEventKind_GROUP_EVENT_KIND_CREATED
		joinReq  = groupv1.GroupEventKind_GROUP_EVENT_KIND_JOIN_REQUESTED
		epoch    = groupv1.GroupEventKind_GROUP_EVENT_KIND_EPOCH_COMMITTED
		removed  = groupv1.GroupEventKind_GROUP_EVENT_KIND_MEMBER_REMOVED
		rotation = groupv1.GroupEventKind_GROUP_EVENT_KIND_ROTATION_REQUIRED
		declined = groupv1.GroupEventKind_GROUP_EVENT_KIND_JOIN_REQUEST_DECLINED
		invited  = groupv1.GroupEventKind_GROUP_EVENT_KIND_INVITED
	)
	for _, tc := range []struct {
		u    *user
		want []groupv1.GroupEventKind
	}{
		{owner, K(created, joinReq, epoch, removed, rotation)},
		{bob, K(created, epoch, removed, rotation)},
		{carol, K(created, epoch, removed)},
		{dave, K(declined)},
		{erin, K(invited)},
	} {
		evs := e.groupEvents(t, tc.u, len(tc.want))
		if got := kinds(evs); !slices.Equal(got, tc.want) {
			t.Errorf("%s got %v; want %v", tc.u.identity, got, tc.want)
		}
		for _, ev := range evs {
			member := tc.u != dave && tc.u != erin && !(tc.u == carol && ev.GetKind() == removed)
			if (ev.GetGroup() != nil) != member {
				t.Errorf("%s's %s event: group state %v; want it only for members", tc.u.identity, ev.GetKind(), ev.GetGroup())
			}
		}
		switch tc.u {
		case owner:
			if ev := evs[2]; ev.GetEpoch() != 1 || ev.GetActor() != bob.identity {
				t.Errorf("EPOCH_COMMITTED %v", ev)
			}
			if ev := evs[4]; !slices.Equal(ev.GetRotationReasons(), []groupv1.RotationReason{groupv1.RotationReason_ROTATION_REASON_MEMBERSHIP_CHANGED}) {
				t.Errorf("ROTATION_REQUIRED %v", ev)
			}
		case erin:
			if ev := evs[0]; ev.GetExpiresAt() == nil || ev.GetActor() != owner.identity || !slices.Equal(ev.GetIdentities(), []string{erin.identity}) {
				t.Errorf("INVITED %v", ev)
			}
		}
	}
	// The owner leaves: bob, the only member left, becomes the owner; then he deletes
	// the group.
	if _, err := e.client.LeaveGroup(owner.ctx(), &groupv1.LeaveGroupRequest{GroupId: group}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.client.DeleteGroup(bob.ctx(), &groupv1.DeleteGroupRequest{GroupId: group}); err != nil {
		t.Fatal(err)
	}
	evs := e.groupEvents(t, bob, 7)[4:]
	if got := kinds(evs); !slices.Equal(got, K(groupv1.GroupEventKind_GROUP_EVENT_KIND_MEMBER_LEFT, groupv1.GroupEventKind_GROUP_EVENT_KIND_ROLE_CHANGED, groupv1.GroupEventKind_GROUP_EVENT_KIND_DELETED)) {
		t.Errorf("bob's last events: %v", got)
	}
	if ev := evs[1]; ev.GetRole() != groupv1.GroupRole_GROUP_ROLE_OWNER || !slices.Equal(ev.GetIdentities(), []string{bob.identity}) || ev.GetGroup().GetOwner() != bob.identity {
		t.Errorf("ROLE_CHANGED %v", ev)
	}
	if ev := evs[2]; ev.GetGroup() != nil || ev.GetActor() != bob.identity {
		t.Errorf("DELETED %v", ev)
	}

	// More events after the first ones would show up by now; frank, an outsider, has none.
	if evs := e.groupEvents(t, frank, 0); len(evs) != 0 {
		t.Errorf("frank got %v", kinds(evs))
	}
	if evs := e.groupEvents(t, carol, 0); len(evs) != 3 {
		t.Errorf("carol got %v after her removal", kinds(evs))
	}
}

// flakyEvents fails the first `failures` PublishEvent calls as an unreachable peer.
type flakyEvents struct {
	Events
	failures atomic.Int32
	calls    atomic.Int32
}

func (f *flakyEvents) PublishEvent(ctx context.Context, in *messagingv1.PublishEventRequest, opts ...grpc.CallOption) (*messagingv1.PublishEventResponse, error) {
	f.calls.Add(1)
	if f.failures.Add(-1) >= 0 {
		return nil, status.Error(codes.Unavailable, "connection refused")
	}
	return f.Events.PublishEvent(ctx, in, opts...)
}

// TestOutboxRetries: an event whose delivery fails stays in the outbox and is
// delivered, once, when the messaging service answers again.
func TestOutboxRetries(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{noLoops: true})
	_, _, us := e.newTeam(t, 2, "owner", "bob")
	// Delivery runs only when called (noLoops): the creation's event meets the flaky peer.
	flaky := &flakyEvents{Events: e.srv.events}
	flaky.failures.Store(1)
	e.srv.events = flaky
	outbox := func() int {
		n := 0
		for k := range e.snapshot(t) {
			if hasPrefix(k, "group_outbox/") {
				n++
			}
		}
		return n
	}
	if n := outbox(); n != 1 {
		t.Fatalf("%d outbox records after the creation; want 1", n)
	}
	if e.srv.deliverOutbox(context.Background()) || outbox() != 1 {
		t.Fatal("a failed delivery emptied the outbox")
	}
	if !e.srv.deliverOutbox(context.Background()) || outbox() != 0 {
		t.Fatal("the retry did not empty the outbox")
	}
	// Delivered once, to both members.
	for _, u := range us {
		if evs := e.groupEvents(t, u, 0); !slices.Equal(kinds(evs), []groupv1.GroupEventKind{groupv1.GroupEventKind_GROUP_EVENT_KIND_CREATED}) {
			t.Errorf("%s got %v", u.identity, kinds(evs))
		}
	}
	if c := flaky.calls.Load(); c != 2 {
		t.Errorf("%d PublishEvent calls; want 2", c)
	}
}

// TestOutboxDropsRefusedEvents: an event the messaging service refuses for good
// (malformed, or its id taken by another event) is dropped from the outbox instead of
// holding back the events behind it, which are delivered.
func TestOutboxDropsRefusedEvents(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{noLoops: true})
	a := e.newApp(t)
	us := e.newUsers(t, a, true, "owner", "bob", "carol")
	owner, bob, carol := us[0], us[1], us[2]
	us = us[:2]
	// Ahead of the group's own event: one with no recipients (INVALID_ARGUMENT), and one
	// whose id was taken by another event (ALREADY_EXISTS), both for carol.
	taken := &messagingv1.PublishEventRequest{AppId: a.id, EventId: "evt-taken", Type: "umbra.group.v1.GroupEvent", Recipients: []string{carol.identity}, Payload: []byte("first")}
	if _, err := e.srv.events.PublishEvent(context.Background(), taken); err != nil {
		t.Fatal(err)
	}
	err := e.srv.store.Update(func(tx Tx) error {
		for _, r := range []*storagev1.GroupOutboxRecord{
			{AppId: a.id, EventId: "evt-no-recipients", Type: "umbra.group.v1.GroupEvent", Payload: []byte("x")},
			{AppId: a.id, EventId: "evt-taken", Type: "umbra.group.v1.GroupEvent", Recipients: []string{carol.identity}, Payload: []byte("second")},
		} {
			if err := tx.AppendOutbox(r); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	group := e.groupID(t, a, "team")
	e.create(t, owner, group, bob)
	if !e.srv.deliverOutbox(context.Background()) {
		t.Fatal("the refused events held back the outbox")
	}
	for k := range e.snapshot(t) {
		if hasPrefix(k, "group_outbox/") {
			t.Errorf("left in the outbox: %s", k)
		}
	}
	for _, u := range us {
		if evs := e.groupEvents(t, u, 0); !slices.Equal(kinds(evs), []groupv1.GroupEventKind{groupv1.GroupEventKind_GROUP_EVENT_KIND_CREATED}) {
			t.Errorf("%s got %v", u.identity, kinds(evs))
		}
	}
}
