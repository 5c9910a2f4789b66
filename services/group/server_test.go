package group

import (
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/umbra-e2ee/umbra/internal/servicetest"
	envelopev1 "github.com/umbra-e2ee/umbra/proto/umbra/envelope/v1"
	groupv1 "github.com/umbra-e2ee/umbra/proto/umbra/group/v1"
)

// TestInternalMethods: what the messaging service asks, with the answers it expects
// (services/messaging/groups.go), and only from services.
func TestInternalMethods(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{noLoops: true})
	a, group, us := e.newTeam(t, 5, "owner", "m1", "m2", "m3", "m4", "outsider")
	owner, outsider := us[0], us[5]

	// ListMemberIdentities: identity order, in pages of one membership version.
	var got []string
	tok := ""
	var version uint64
	for {
		r, err := e.client.ListMemberIdentities(asService(), &groupv1.ListMemberIdentitiesRequest{AppId: a.id, GroupId: group, PageSize: 2, PageToken: tok})
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, r.GetIdentities()...)
		version = r.GetMembershipVersion()
		if tok = r.GetNextPageToken(); tok == "" {
			break
		}
	}
	if !slices.Equal(got, sorted(identities(us[:5]...))) || version != 1 {
		t.Fatalf("members %v at version %d", got, version)
	}
	p1, _ := e.client.ListMemberIdentities(asService(), &groupv1.ListMemberIdentitiesRequest{AppId: a.id, GroupId: group, PageSize: 2})
	if _, err := e.client.RemoveMember(owner.ctx(), &groupv1.RemoveMemberRequest{GroupId: group, Identity: us[4].identity}); err != nil {
		t.Fatal(err)
	}
	_, err := e.client.ListMemberIdentities(asService(), &groupv1.ListMemberIdentitiesRequest{AppId: a.id, GroupId: group, PageSize: 2, PageToken: p1.GetNextPageToken()})
	wantCode(t, err, codes.Aborted, "changed")

	// CheckMembership: members and non-members; an unknown group is NOT_FOUND.
	m, err := e.client.CheckMembership(asService(), &groupv1.CheckMembershipRequest{AppId: a.id, GroupId: group, Identity: owner.identity})
	if err != nil || !m.GetMember() || m.GetRole() != groupv1.GroupRole_GROUP_ROLE_OWNER || m.GetMembershipVersion() != 2 || !m.GetRotationRequired() || m.GetEncryptionMode() != groupv1.EncryptionMode_ENCRYPTION_MODE_OPTIONAL {
		t.Errorf("owner: %v, %v", m, err)
	}
	m, err = e.client.CheckMembership(asService(), &groupv1.CheckMembershipRequest{AppId: a.id, GroupId: group, Identity: outsider.identity})
	if err != nil || m.GetMember() || m.GetRole() != groupv1.GroupRole_GROUP_ROLE_UNSPECIFIED || m.GetJoinedAt() != nil {
		t.Errorf("outsider: %v, %v", m, err)
	}
	_, err = e.client.CheckMembership(asService(), &groupv1.CheckMembershipRequest{AppId: a.id, GroupId: e.groupID(t, a, "none"), Identity: owner.identity})
	wantCode(t, err, codes.NotFound, "not found")
	// Another app's view: the group does not exist there.
	b := e.newApp(t)
	_, err = e.client.CheckMembership(asService(), &groupv1.CheckMembershipRequest{AppId: b.id, GroupId: group, Identity: owner.identity})
	wantCode(t, err, codes.NotFound, "not found")

	// AuthorizeSend of plaintext in an OPTIONAL group: accepted, not counted.
	plain := &groupv1.AuthorizeSendRequest{AppId: a.id, GroupId: group, Sender: us[1].identity, Kind: groupv1.MessageKind_MESSAGE_KIND_PLAINTEXT}
	if r, err := e.client.AuthorizeSend(asService(), plain); err != nil || r.GetMembershipVersion() != 2 {
		t.Fatalf("plaintext: %v, %v", r, err)
	}
	if st := e.state(t, owner, group); st.GetEpochMessageCount() != 0 {
		t.Errorf("plaintext counted: %v", st)
	}

	// Users may not call internal methods.
	_, err = e.client.AuthorizeSend(owner.ctx(), plain)
	if c := codesOf(err); c != codes.PermissionDenied && c != codes.Unauthenticated {
		t.Errorf("a user calling AuthorizeSend: %v", err)
	}
	_, err = e.client.ListMemberIdentities(owner.ctx(), &groupv1.ListMemberIdentitiesRequest{AppId: a.id, GroupId: group})
	if c := codesOf(err); c != codes.PermissionDenied && c != codes.Unauthenticated {
		t.Errorf("a user calling ListMemberIdentities: %v", err)
	}
}

// TestBadInput: malformed requests get INVALID_ARGUMENT with a message naming what is
// wrong, and write nothing.
func TestBadInput(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{noLoops: true})
	a, group, us := e.newTeam(t, 2, "owner", "bob")
	owner, bob := us[0], us[1]
	c, keys := e.commitFor(t, group, 0, nil, owner, owner, bob)
	badKey := proto.Clone(keys[0]).(*groupv1.MemberKey)
	badKey.WrappedKey.Enc = make([]byte, 31)
	tooMany := make([]string, 1001)
	for i := range tooMany {
		tooMany[i] = "u_" + strings.Repeat("a", 28) + string(rune('a'+i%26)) + string(rune('a'+i/26%26)) + string(rune('a'+i/676)) + "a"
	}
	ctx := owner.ctx()
	servicetest.CheckRefusals(t, []servicetest.Refusal{
		{"create: no group id", servicetest.Call(e.client.CreateGroup, ctx, &groupv1.CreateGroupRequest{EncryptionMode: 1, HistoryVisibility: 1}), codes.InvalidArgument, "group_id is empty"},
		{"create: user id as group", servicetest.Call(e.client.CreateGroup, ctx, &groupv1.CreateGroupRequest{GroupId: bob.identity, EncryptionMode: 1, HistoryVisibility: 1}), codes.InvalidArgument, "group_id"},
		{"create: no mode", servicetest.Call(e.client.CreateGroup, ctx, &groupv1.CreateGroupRequest{GroupId: e.groupID(t, a, "x"), HistoryVisibility: 1}), codes.InvalidArgument, "encryption_mode is unspecified"},
		{"create: no visibility", servicetest.Call(e.client.CreateGroup, ctx, &groupv1.CreateGroupRequest{GroupId: e.groupID(t, a, "x"), EncryptionMode: 1}), codes.InvalidArgument, "history_visibility is unspecified"},
		{"create: bad member", servicetest.Call(e.client.CreateGroup, ctx, &groupv1.CreateGroupRequest{GroupId: e.groupID(t, a, "x"), EncryptionMode: 1, HistoryVisibility: 1, Members: []string{"bob"}}), codes.InvalidArgument, "members[0]"},
		{"create: too many members", servicetest.Call(e.client.CreateGroup, ctx, &groupv1.CreateGroupRequest{GroupId: e.groupID(t, a, "x"), EncryptionMode: 1, HistoryVisibility: 1, Members: tooMany[:1001]}), codes.InvalidArgument, "at most 1000"},
		{"add: none", servicetest.Call(e.client.AddMembers, ctx, &groupv1.AddMembersRequest{GroupId: group}), codes.InvalidArgument, "identities is empty"},
		{"add: too many", servicetest.Call(e.client.AddMembers, ctx, &groupv1.AddMembersRequest{GroupId: group, Identities: tooMany}), codes.InvalidArgument, "at most 1000"},
		{"remove: bad identity", servicetest.Call(e.client.RemoveMember, ctx, &groupv1.RemoveMemberRequest{GroupId: group, Identity: "g_x"}), codes.InvalidArgument, "identity"},
		{"set role: unspecified", servicetest.Call(e.client.SetRole, ctx, &groupv1.SetRoleRequest{GroupId: group, Identity: bob.identity}), codes.InvalidArgument, "not ADMIN or MEMBER"},
		{"transfer: to self", servicetest.Call(e.client.TransferOwnership, ctx, &groupv1.TransferOwnershipRequest{GroupId: group, NewOwner: owner.identity}), codes.InvalidArgument, "owns the group already"},
		{"list: page too large", servicetest.Call(e.client.ListMyGroups, ctx, &groupv1.ListMyGroupsRequest{PageSize: 1001}), codes.InvalidArgument, "page_size"},
		{"list: forged token", servicetest.Call(e.client.ListMyGroups, ctx, &groupv1.ListMyGroupsRequest{PageToken: "nonsense!"}), codes.InvalidArgument, "page_token"},
		{"mode: unspecified", servicetest.Call(e.client.SetEncryptionMode, ctx, &groupv1.SetEncryptionModeRequest{GroupId: group}), codes.InvalidArgument, "encryption_mode is unspecified"},
		{"stage: no keys", servicetest.Call(e.client.StageEpochKeys, ctx, &groupv1.StageEpochKeysRequest{GroupId: group}), codes.InvalidArgument, "keys is empty"},
		{"stage: bad upload id", servicetest.Call(e.client.StageEpochKeys, ctx, &groupv1.StageEpochKeysRequest{GroupId: group, UploadId: "x", Keys: keys}), codes.InvalidArgument, "upload_id"},
		{"stage: duplicate identity", servicetest.Call(e.client.StageEpochKeys, ctx, &groupv1.StageEpochKeysRequest{GroupId: group, Keys: []*groupv1.MemberKey{keys[0], keys[0]}}), codes.InvalidArgument, "appears twice"},
		{"commit: bad enc size", servicetest.Call(e.client.CommitEpoch, ctx, &groupv1.CommitEpochRequest{GroupId: group, Commit: c, Keys: []*groupv1.MemberKey{badKey, keys[1]}}), codes.InvalidArgument, "enc is 31 bytes"},
		{"commit: no commit", servicetest.Call(e.client.CommitEpoch, ctx, &groupv1.CommitEpochRequest{GroupId: group, Keys: keys}), codes.InvalidArgument, "commit is missing"},
		{"commit: garbage content", servicetest.Call(e.client.CommitEpoch, ctx, &groupv1.CommitEpochRequest{GroupId: group, Commit: &envelopev1.SignedEpochCommit{Content: []byte{0xff, 0xff}, Signature: make([]byte, 64)}, Keys: keys}), codes.InvalidArgument, "commit refused"},
		{"commit: wrong epoch", func() error {
			c2, _ := e.commitFor(t, group, 1, make([]byte, 32), owner, owner, bob)
			_, err := e.client.CommitEpoch(ctx, &groupv1.CommitEpochRequest{GroupId: group, Commit: c2, Keys: keys})
			return err
		}, codes.InvalidArgument, "creates epoch 2"},
		{"commit: short signature", servicetest.Call(e.client.CommitEpoch, ctx, &groupv1.CommitEpochRequest{GroupId: group, Commit: &envelopev1.SignedEpochCommit{Content: c.GetContent(), Signature: []byte{1}}, Keys: keys}), codes.InvalidArgument, "commit.signature"},
		{"keys: bad page token", servicetest.Call(e.client.GetEpochKeys, ctx, &groupv1.GetEpochKeysRequest{GroupId: group, PageToken: pageToken("x")}), codes.InvalidArgument, "page_token"},
		{"share: none", servicetest.Call(e.client.ShareEpochKeys, ctx, &groupv1.ShareEpochKeysRequest{GroupId: group}), codes.InvalidArgument, "shares holds 0"},
		{"share: epoch 0", servicetest.Call(e.client.ShareEpochKeys, ctx, &groupv1.ShareEpochKeysRequest{GroupId: group, Shares: []*groupv1.EpochShare{{Recipient: bob.identity, WrappedKey: wrapped(bob)}}}), codes.InvalidArgument, "epoch is 0"},
		{"invite: ttl too long", servicetest.Call(e.client.InviteMember, ctx, &groupv1.InviteMemberRequest{GroupId: group, Identity: bob.identity, Ttl: durationOrNil(31 * 24 * 3600e9)}), codes.InvalidArgument, "ttl"},
		{"authorize: no app", servicetest.Call(e.client.AuthorizeSend, asService(), &groupv1.AuthorizeSendRequest{GroupId: group, Sender: bob.identity, Kind: groupv1.MessageKind_MESSAGE_KIND_PLAINTEXT}), codes.InvalidArgument, "app_id"},
		{"authorize: no kind", servicetest.Call(e.client.AuthorizeSend, asService(), &groupv1.AuthorizeSendRequest{AppId: a.id, GroupId: group, Sender: bob.identity}), codes.InvalidArgument, "kind"},
		{"authorize: encrypted without card", servicetest.Call(e.client.AuthorizeSend, asService(), &groupv1.AuthorizeSendRequest{AppId: a.id, GroupId: group, Sender: bob.identity, Kind: groupv1.MessageKind_MESSAGE_KIND_ENCRYPTED, Epoch: 1}), codes.InvalidArgument, "sender_card_id"},
		{"authorize: plaintext with an epoch", servicetest.Call(e.client.AuthorizeSend, asService(), &groupv1.AuthorizeSendRequest{AppId: a.id, GroupId: group, Sender: bob.identity, Kind: groupv1.MessageKind_MESSAGE_KIND_PLAINTEXT, Epoch: 2}), codes.InvalidArgument, "no epoch"},
		{"members: page too large", servicetest.Call(e.client.ListMemberIdentities, asService(), &groupv1.ListMemberIdentitiesRequest{AppId: a.id, GroupId: group, PageSize: 10001}), codes.InvalidArgument, "page_size"},
	}, e.snapshot)
}

func codesOf(err error) codes.Code { return status.Code(err) }

// TestCallRateLimit: an identity's group calls, all methods together, are limited.
// Past the burst a call is refused with RESOURCE_EXHAUSTED before it does anything;
// malformed calls count; other identities and the services' internal calls are not
// held back; the bucket refills with time.
func TestCallRateLimit(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{noLoops: true, cfg: Config{CallRate: 1, CallBurst: 4}})
	a := e.newApp(t)
	us := e.newUsers(t, a, true, "alice", "bob")
	alice, bob := us[0], us[1]
	group := e.groupID(t, a, "limited")
	get := func(u *user, id string) error {
		_, err := e.client.GetGroup(u.ctx(), &groupv1.GetGroupRequest{GroupId: id})
		return err
	}
	e.create(t, alice, group, bob)
	if err := get(alice, group); err != nil {
		t.Fatal(err)
	}
	wantCode(t, get(alice, "not a group id"), codes.InvalidArgument, "group_id")
	_, err := e.client.SetEncryptionMode(alice.ctx(), &groupv1.SetEncryptionModeRequest{GroupId: group, EncryptionMode: 99})
	wantCode(t, err, codes.InvalidArgument, "encryption_mode")
	_, err = e.client.DeleteGroup(alice.ctx(), &groupv1.DeleteGroupRequest{GroupId: group})
	wantCode(t, err, codes.ResourceExhausted, "group call rate limit exceeded")
	// The refused delete did nothing; bob is not held back by alice's calls.
	if err := get(bob, group); err != nil {
		t.Fatalf("bob: %v (the group must still be there)", err)
	}
	// The messaging service's membership checks are not counted.
	for range 5 {
		resp, err := e.client.CheckMembership(asService(), &groupv1.CheckMembershipRequest{AppId: a.id, GroupId: group, Identity: alice.identity})
		if err != nil || !resp.GetMember() {
			t.Fatalf("CheckMembership: %v, %v", resp, err)
		}
	}
	e.clock.Add(time.Second)
	if err := get(alice, group); err != nil {
		t.Fatalf("a second later: %v", err)
	}
	wantCode(t, get(alice, group), codes.ResourceExhausted, "retry in")
}
