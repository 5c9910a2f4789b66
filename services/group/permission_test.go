package group

import (
	"context"
	"maps"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"

	groupv1 "github.com/umbra-e2ee/umbra/proto/umbra/group/v1"
)

// TestAdminCallsCheckPermissionFirst: every call reserved to a group's owner or admins
// answers a caller without that role PERMISSION_DENIED whatever the arguments, so a
// member (or an outsider) cannot probe which arguments would be valid; the owner gets
// INVALID_ARGUMENT for the same malformed request, which shows the request really is
// malformed; and nothing is written either way.
func TestAdminCallsCheckPermissionFirst(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{noLoops: true})
	_, group, us := e.newTeam(t, 4, "owner", "admin", "bob", "carol", "outsider")
	owner, admin, bob, carol, outsider := us[0], us[1], us[2], us[3], us[4]
	if _, err := e.client.SetRole(owner.ctx(), &groupv1.SetRoleRequest{GroupId: group, Identity: admin.identity, Role: groupv1.GroupRole_GROUP_ROLE_ADMIN}); err != nil {
		t.Fatal(err)
	}

	const badID = "not-an-identity"
	tooLong := durationpb.New(365 * 24 * 3600e9)
	for _, tc := range []struct {
		name string
		// ownerOnly says an admin is refused too.
		ownerOnly bool
		// call makes the request as u: malformed, or well-formed (naming carol).
		call func(u *user, malformed bool) error
	}{
		{"SetRole", true, probe(e.client.SetRole, &groupv1.SetRoleRequest{GroupId: group, Identity: carol.identity, Role: groupv1.GroupRole_GROUP_ROLE_ADMIN},
			func(r *groupv1.SetRoleRequest, _ *user) { r.Role = groupv1.GroupRole_GROUP_ROLE_OWNER })},
		{"SetRole: malformed identity", true, probe(e.client.SetRole, &groupv1.SetRoleRequest{GroupId: group, Identity: carol.identity, Role: groupv1.GroupRole_GROUP_ROLE_MEMBER},
			func(r *groupv1.SetRoleRequest, _ *user) { r.Identity = badID })},
		{"SetRole: the caller itself", true, probe(e.client.SetRole, &groupv1.SetRoleRequest{GroupId: group, Identity: carol.identity, Role: groupv1.GroupRole_GROUP_ROLE_MEMBER},
			func(r *groupv1.SetRoleRequest, u *user) { r.Identity = u.identity })},
		{"TransferOwnership", true, probe(e.client.TransferOwnership, &groupv1.TransferOwnershipRequest{GroupId: group, NewOwner: carol.identity},
			func(r *groupv1.TransferOwnershipRequest, _ *user) { r.NewOwner = badID })},
		{"TransferOwnership: to the caller", true, probe(e.client.TransferOwnership, &groupv1.TransferOwnershipRequest{GroupId: group, NewOwner: carol.identity},
			func(r *groupv1.TransferOwnershipRequest, u *user) { r.NewOwner = u.identity })},
		{"SetEncryptionMode", true, probe(e.client.SetEncryptionMode, &groupv1.SetEncryptionModeRequest{GroupId: group, EncryptionMode: groupv1.EncryptionMode_ENCRYPTION_MODE_REQUIRED},
			func(r *groupv1.SetEncryptionModeRequest, _ *user) { r.EncryptionMode = 99 })},
		{"SetRotationPolicy", true, probe(e.client.SetRotationPolicy, &groupv1.SetRotationPolicyRequest{GroupId: group, RotationPolicy: &groupv1.RotationPolicy{MaxMessagesPerEpoch: 1000}},
			func(r *groupv1.SetRotationPolicyRequest, _ *user) { r.RotationPolicy = nil })},
		{"SetHistoryVisibility", true, probe(e.client.SetHistoryVisibility, &groupv1.SetHistoryVisibilityRequest{GroupId: group, HistoryVisibility: groupv1.HistoryVisibility_HISTORY_VISIBILITY_SHARED},
			func(r *groupv1.SetHistoryVisibilityRequest, _ *user) { r.HistoryVisibility = 0 })},
		{"AddMembers", false, probe(e.client.AddMembers, &groupv1.AddMembersRequest{GroupId: group, Identities: []string{outsider.identity}},
			func(r *groupv1.AddMembersRequest, _ *user) { r.Identities = []string{badID} })},
		{"RemoveMember", false, probe(e.client.RemoveMember, &groupv1.RemoveMemberRequest{GroupId: group, Identity: carol.identity},
			func(r *groupv1.RemoveMemberRequest, _ *user) { r.Identity = badID })},
		{"RemoveMember: the caller itself", false, probe(e.client.RemoveMember, &groupv1.RemoveMemberRequest{GroupId: group, Identity: carol.identity},
			func(r *groupv1.RemoveMemberRequest, u *user) { r.Identity = u.identity })},
		{"BanMember", false, probe(e.client.BanMember, &groupv1.BanMemberRequest{GroupId: group, Identity: carol.identity},
			func(r *groupv1.BanMemberRequest, _ *user) { r.Identity = badID })},
		{"UnbanMember", false, probe(e.client.UnbanMember, &groupv1.UnbanMemberRequest{GroupId: group, Identity: outsider.identity},
			func(r *groupv1.UnbanMemberRequest, _ *user) { r.Identity = badID })},
		{"ApproveJoinRequest", false, probe(e.client.ApproveJoinRequest, &groupv1.ApproveJoinRequestRequest{GroupId: group, Identity: outsider.identity},
			func(r *groupv1.ApproveJoinRequestRequest, _ *user) { r.Identity = badID })},
		{"DeclineJoinRequest", false, probe(e.client.DeclineJoinRequest, &groupv1.DeclineJoinRequestRequest{GroupId: group, Identity: outsider.identity},
			func(r *groupv1.DeclineJoinRequestRequest, _ *user) { r.Identity = badID })},
		{"ListJoinRequests", false, probe(e.client.ListJoinRequests, &groupv1.ListJoinRequestsRequest{GroupId: group},
			func(r *groupv1.ListJoinRequestsRequest, _ *user) { r.PageSize = MaxPage + 1 })},
		{"ListJoinRequests: forged page token", false, probe(e.client.ListJoinRequests, &groupv1.ListJoinRequestsRequest{GroupId: group},
			func(r *groupv1.ListJoinRequestsRequest, _ *user) { r.PageToken = "nonsense!" })},
		{"InviteMember", false, probe(e.client.InviteMember, &groupv1.InviteMemberRequest{GroupId: group, Identity: outsider.identity},
			func(r *groupv1.InviteMemberRequest, _ *user) { r.Ttl = tooLong })},
		{"InviteMember: malformed identity", false, probe(e.client.InviteMember, &groupv1.InviteMemberRequest{GroupId: group, Identity: outsider.identity},
			func(r *groupv1.InviteMemberRequest, _ *user) { r.Identity = badID })},
	} {
		t.Run(tc.name, func(t *testing.T) {
			refused := []*user{bob, outsider}
			if tc.ownerOnly {
				refused = append(refused, admin)
			}
			before := e.snapshot(t)
			for _, u := range refused {
				valid := tc.call(u, false)
				malformed := tc.call(u, true)
				if status.Code(valid) != codes.PermissionDenied || status.Code(malformed) != codes.PermissionDenied {
					t.Errorf("%s: well-formed %v; malformed %v; want PERMISSION_DENIED for both", u.identity, valid, malformed)
				}
				if status.Convert(valid).Message() != status.Convert(malformed).Message() {
					t.Errorf("%s: the answers differ: %q and %q", u.identity, status.Convert(valid).Message(), status.Convert(malformed).Message())
				}
			}
			// The request is malformed: the owner is told so.
			if err := tc.call(owner, true); status.Code(err) != codes.InvalidArgument {
				t.Errorf("the owner's malformed request: %v; want INVALID_ARGUMENT", err)
			}
			if !maps.Equal(before, e.snapshot(t)) {
				t.Error("a refused request changed the store")
			}
		})
	}
}

// probe is a call of rpc as a user, with req (well-formed), or with req spoiled
// (malformed) when asked.
func probe[Req proto.Message, Resp any](rpc func(context.Context, Req, ...grpc.CallOption) (Resp, error), req Req, spoil func(r Req, u *user)) func(u *user, malformed bool) error {
	return func(u *user, malformed bool) error {
		r := proto.Clone(req).(Req)
		if malformed {
			spoil(r, u)
		}
		_, err := rpc(u.ctx(), r)
		return err
	}
}
