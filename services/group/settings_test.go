package group

import (
	"maps"
	"slices"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/types/known/durationpb"

	groupv1 "github.com/umbra-e2ee/umbra/proto/umbra/group/v1"
	messagingv1 "github.com/umbra-e2ee/umbra/proto/umbra/messaging/v1"
)

func (e *env) sendPlain(u *user, group, cmid string) (*messagingv1.SendResponse, error) {
	return e.msg.Send(u.ctx(), &messagingv1.SendRequest{ConversationId: group, ClientMessageId: cmid,
		Header: &messagingv1.MessageHeader{Kind: messagingv1.MessageKind_MESSAGE_KIND_PLAINTEXT}, Envelope: []byte("hello")})
}

func (e *env) sendEncrypted(u *user, group, cmid string, epoch uint64) (*messagingv1.SendResponse, error) {
	return e.msg.Send(u.ctx(), &messagingv1.SendRequest{ConversationId: group, ClientMessageId: cmid,
		Header: &messagingv1.MessageHeader{Kind: messagingv1.MessageKind_MESSAGE_KIND_ENCRYPTED, Epoch: epoch, SenderCardId: u.cardID}, Envelope: []byte("ciphertext")})
}

// TestEncryptionModes: through the real messaging service, REQUIRED refuses plaintext,
// OFF refuses ciphertext and commits, and switching encryption on requires a new epoch.
func TestEncryptionModes(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{noLoops: true})
	_, group, us := e.newTeam(t, 2, "owner", "bob", "eve")
	owner, bob, eve := us[0], us[1], us[2]
	e.commit(t, group, owner, owner, bob)

	if r, err := e.sendPlain(bob, group, "p1"); err != nil || r.GetSequence() != 1 {
		t.Fatalf("plaintext in OPTIONAL: %v, %v", r, err)
	}
	if r, err := e.sendEncrypted(bob, group, "e1", 1); err != nil || r.GetSequence() != 2 {
		t.Fatalf("ciphertext at epoch 1: %v, %v", r, err)
	}
	_, err := e.sendEncrypted(eve, group, "x", 1)
	wantCode(t, err, codes.PermissionDenied, "not a member")

	_, err = e.client.SetEncryptionMode(bob.ctx(), &groupv1.SetEncryptionModeRequest{GroupId: group, EncryptionMode: groupv1.EncryptionMode_ENCRYPTION_MODE_REQUIRED})
	wantCode(t, err, codes.PermissionDenied, "only the owner")
	if r, err := e.client.SetEncryptionMode(owner.ctx(), &groupv1.SetEncryptionModeRequest{GroupId: group, EncryptionMode: groupv1.EncryptionMode_ENCRYPTION_MODE_REQUIRED}); err != nil || r.GetGroup().GetEncryptionMode() != groupv1.EncryptionMode_ENCRYPTION_MODE_REQUIRED || r.GetGroup().GetRotationRequired() {
		t.Fatalf("REQUIRED: %v, %v", r, err)
	}
	_, err = e.sendPlain(bob, group, "p2")
	wantCode(t, err, codes.FailedPrecondition, "requires encryption")
	if _, err := e.sendEncrypted(bob, group, "e2", 1); err != nil {
		t.Fatal(err)
	}

	// OFF: no ciphertext, no commits; the epoch stays as it was.
	if _, err := e.client.SetEncryptionMode(owner.ctx(), &groupv1.SetEncryptionModeRequest{GroupId: group, EncryptionMode: groupv1.EncryptionMode_ENCRYPTION_MODE_OFF}); err != nil {
		t.Fatal(err)
	}
	_, err = e.sendEncrypted(bob, group, "e3", 1)
	wantCode(t, err, codes.FailedPrecondition, "encryption OFF")
	if _, err := e.sendPlain(bob, group, "p3"); err != nil {
		t.Fatal(err)
	}
	st := e.state(t, owner, group)
	c, keys := e.commitFor(t, group, 1, st.GetCommit().GetCommitHash(), owner, owner, bob)
	_, err = e.client.CommitEpoch(owner.ctx(), &groupv1.CommitEpochRequest{GroupId: group, FromEpoch: 1, Commit: c, Keys: keys})
	wantCode(t, err, codes.FailedPrecondition, "encryption OFF")
	// A membership change in OFF mode marks nothing; switching on does.
	if _, err := e.client.AddMembers(owner.ctx(), &groupv1.AddMembersRequest{GroupId: group, Identities: identities(eve)}); err != nil {
		t.Fatal(err)
	}
	if st := e.state(t, owner, group); st.GetRotationRequired() {
		t.Errorf("OFF group marked: %v", st)
	}
	r, err := e.client.SetEncryptionMode(owner.ctx(), &groupv1.SetEncryptionModeRequest{GroupId: group, EncryptionMode: groupv1.EncryptionMode_ENCRYPTION_MODE_REQUIRED})
	if err != nil || !r.GetGroup().GetRotationRequired() || !slices.Equal(r.GetGroup().GetRotationReasons(), []groupv1.RotationReason{groupv1.RotationReason_ROTATION_REASON_ENCRYPTION_ENABLED}) {
		t.Fatalf("switching on: %v, %v", r, err)
	}
	_, err = e.sendEncrypted(bob, group, "e4", 1)
	wantCode(t, err, codes.FailedPrecondition, "epoch required")
	e.commit(t, group, bob, owner, bob, eve)
	if _, err := e.sendEncrypted(eve, group, "e5", 2); err != nil {
		t.Fatal(err)
	}
}

// TestRotationPolicy: the message limit and the period mark rotation required.
func TestRotationPolicy(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{noLoops: true, quiet: true})
	owner, bob, group := e.twoMemberGroup(t)

	for _, tc := range []struct {
		name string
		pol  *groupv1.RotationPolicy
		msg  string
	}{
		{"missing", nil, "rotation_policy is missing"},
		{"period too short", &groupv1.RotationPolicy{Period: durationpb.New(time.Second)}, "period"},
		{"period too long", &groupv1.RotationPolicy{Period: durationpb.New(400 * 24 * time.Hour)}, "period"},
		{"limit too low", &groupv1.RotationPolicy{MaxMessagesPerEpoch: 10}, "max_messages_per_epoch"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := e.client.SetRotationPolicy(owner.ctx(), &groupv1.SetRotationPolicyRequest{GroupId: group, RotationPolicy: tc.pol})
			wantCode(t, err, codes.InvalidArgument, tc.msg)
		})
	}
	_, err := e.client.SetRotationPolicy(bob.ctx(), &groupv1.SetRotationPolicyRequest{GroupId: group, RotationPolicy: &groupv1.RotationPolicy{MaxMessagesPerEpoch: 100}})
	wantCode(t, err, codes.PermissionDenied, "only the owner")
	if r, err := e.client.SetRotationPolicy(owner.ctx(), &groupv1.SetRotationPolicyRequest{GroupId: group, RotationPolicy: &groupv1.RotationPolicy{MaxMessagesPerEpoch: 100}}); err != nil || r.GetGroup().GetRotationPolicy().GetPeriod() != nil {
		t.Fatalf("set policy: %v, %v", r, err)
	}
	for i := range 100 {
		if _, err := e.authorize(bob, group, 1); err != nil {
			t.Fatalf("message %d: %v", i+1, err)
		}
	}
	_, err = e.authorize(bob, group, 1)
	wantCode(t, err, codes.FailedPrecondition, "epoch required")
	if d := detail[*groupv1.EpochRequired](err); d == nil || !slices.Equal(d.GetRotationReasons(), []groupv1.RotationReason{groupv1.RotationReason_ROTATION_REASON_MESSAGE_LIMIT}) {
		t.Errorf("%v", d)
	}
	if st := e.state(t, bob, group); st.GetEpochMessageCount() != 100 || !st.GetRotationRequired() {
		t.Errorf("state: %v", st)
	}
	e.commit(t, group, bob, owner, bob)
	if st := e.state(t, bob, group); st.GetEpochMessageCount() != 0 || st.GetRotationRequired() {
		t.Errorf("state after the commit: %v", st)
	}

	// The period: due at epoch start + period; refused once it elapsed, marked by the
	// sweeper.
	if _, err := e.client.SetRotationPolicy(owner.ctx(), &groupv1.SetRotationPolicyRequest{GroupId: group, RotationPolicy: &groupv1.RotationPolicy{Period: durationpb.New(time.Hour)}}); err != nil {
		t.Fatal(err)
	}
	st := e.state(t, bob, group)
	if st.GetRotationDueAt() == nil || !st.GetRotationDueAt().AsTime().Equal(st.GetCommit().GetCommittedAt().AsTime().Add(time.Hour)) {
		t.Errorf("due at %v", st.GetRotationDueAt())
	}
	e.clock.Add(59 * time.Minute)
	if _, err := e.authorize(bob, group, 2); err != nil {
		t.Fatal(err)
	}
	e.clock.Add(time.Minute)
	if st := e.state(t, bob, group); !st.GetRotationRequired() || !slices.Contains(st.GetRotationReasons(), groupv1.RotationReason_ROTATION_REASON_PERIOD_ELAPSED) {
		t.Errorf("state once the period elapsed: %v", st)
	}
	before := e.snapshot(t)
	if err := e.srv.sweep(e.clock.Now()); err != nil {
		t.Fatal(err)
	}
	if maps.Equal(before, e.snapshot(t)) {
		t.Error("the sweeper marked nothing")
	}
	_, err = e.authorize(bob, group, 2)
	wantCode(t, err, codes.FailedPrecondition, "epoch required")
	e.commit(t, group, owner, owner, bob)
	if _, err := e.authorize(bob, group, 3); err != nil {
		t.Fatal(err)
	}
}

// TestHistoryVisibility: CheckMembership tells the messaging service from when a
// member reads; SetHistoryVisibility is the owner's.
func TestHistoryVisibility(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{noLoops: true})
	a, group, us := e.newTeam(t, 2, "owner", "bob")
	owner, bob := us[0], us[1]
	m, err := e.client.CheckMembership(asService(), &groupv1.CheckMembershipRequest{AppId: a.id, GroupId: group, Identity: bob.identity})
	if err != nil || !m.GetMember() || m.GetHistoryVisibleFrom() == nil || !m.GetHistoryVisibleFrom().AsTime().Equal(m.GetJoinedAt().AsTime()) {
		t.Fatalf("SINCE_JOIN: %v, %v", m, err)
	}
	_, err = e.client.SetHistoryVisibility(bob.ctx(), &groupv1.SetHistoryVisibilityRequest{GroupId: group, HistoryVisibility: groupv1.HistoryVisibility_HISTORY_VISIBILITY_SHARED})
	wantCode(t, err, codes.PermissionDenied, "only the owner")
	_, err = e.client.SetHistoryVisibility(owner.ctx(), &groupv1.SetHistoryVisibilityRequest{GroupId: group})
	wantCode(t, err, codes.InvalidArgument, "unspecified")
	if _, err := e.client.SetHistoryVisibility(owner.ctx(), &groupv1.SetHistoryVisibilityRequest{GroupId: group, HistoryVisibility: groupv1.HistoryVisibility_HISTORY_VISIBILITY_SHARED}); err != nil {
		t.Fatal(err)
	}
	m, err = e.client.CheckMembership(asService(), &groupv1.CheckMembershipRequest{AppId: a.id, GroupId: group, Identity: bob.identity})
	if err != nil || !m.GetMember() || m.GetHistoryVisibleFrom() != nil {
		t.Fatalf("SHARED: %v, %v", m, err)
	}
}

// TestAuthorizeSendCountsEveryMessage: concurrent sends, batched into shared commits,
// are each counted once.
func TestAuthorizeSendCountsEveryMessage(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{noLoops: true, quiet: true})
	a := e.newApp(t)
	us := e.newUsers(t, a, true, "owner", "bob", "carol", "dave")
	group := e.groupID(t, a, "busy")
	e.create(t, us[0], group, us[1:]...)
	e.commit(t, group, us[0], us...)
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Go(func() {
			for range 25 {
				if _, err := e.authorize(us[i%len(us)], group, 1); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	if st := e.state(t, us[0], group); st.GetEpochMessageCount() != 200 {
		t.Errorf("%d messages counted; want 200", st.GetEpochMessageCount())
	}
}
