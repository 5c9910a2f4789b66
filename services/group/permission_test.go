package group

import (
	"maps"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
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
	a := e.newApp(t)
	us := e.newUsers(t, a, true, "owner", "admin", "bob", "carol", "outsider")
	owner, admin, bob, carol, outsider := us[0], us[1], us[2], us[3], us[4]
	group := e.groupID(t, a, "team")
	e.create(t, owner, group, admin, bob, carol)
	if _, err := e.client.SetRole(owner.ctx(), &groupv1.SetRoleRequest{GroupId: group, Identity: admin.identity, Role: groupv1.GroupRole_GROUP_ROLE_ADMIN}); err != nil {
		t.Fatal(err)
	}

	const badID = "not-an-identity"
	tooLong := durationpb.New(365 * 24 * 3600e9)
	for _, tc := range []struct {
		name string
		// call makes the request as u: malformed, or well-formed (naming carol).
		call func(u *user, malformed bool) error
		// ownerOnly says an admin is refused too.
		ownerOnly bool
	}{
		{"SetRole", func(u *user, bad bool) error {
			req := &groupv1.SetRoleRequest{GroupId: group, Identity: carol.identity, Role: groupv1.GroupRole_GROUP_ROLE_ADMIN}
			if bad {
				req.Role = groupv1.GroupRole_GROUP_ROLE_OWNER
			}
			_, err := e.client.SetRole(u.ctx(), req)
			return err
		}, true},
		{"SetRole: malformed identity", func(u *user, bad bool) error {
			req := &groupv1.SetRoleRequest{GroupId: group, Identity: carol.identity, Role: groupv1.GroupRole_GROUP_ROLE_MEMBER}
			if bad {
				req.Identity = badID
			}
			_, err := e.client.SetRole(u.ctx(), req)
			return err
		}, true},
		{"SetRole: the caller itself", func(u *user, bad bool) error {
			req := &groupv1.SetRoleRequest{GroupId: group, Identity: carol.identity, Role: groupv1.GroupRole_GROUP_ROLE_MEMBER}
			if bad {
				req.Identity = u.identity
			}
			_, err := e.client.SetRole(u.ctx(), req)
			return err
		}, true},
		{"TransferOwnership", func(u *user, bad bool) error {
			req := &groupv1.TransferOwnershipRequest{GroupId: group, NewOwner: carol.identity}
			if bad {
				req.NewOwner = badID
			}
			_, err := e.client.TransferOwnership(u.ctx(), req)
			return err
		}, true},
		{"TransferOwnership: to the caller", func(u *user, bad bool) error {
			req := &groupv1.TransferOwnershipRequest{GroupId: group, NewOwner: carol.identity}
			if bad {
				req.NewOwner = u.identity
			}
			_, err := e.client.TransferOwnership(u.ctx(), req)
			return err
		}, true},
		{"SetEncryptionMode", func(u *user, bad bool) error {
			req := &groupv1.SetEncryptionModeRequest{GroupId: group, EncryptionMode: groupv1.EncryptionMode_ENCRYPTION_MODE_REQUIRED}
			if bad {
				req.EncryptionMode = 99
			}
			_, err := e.client.SetEncryptionMode(u.ctx(), req)
			return err
		}, true},
		{"SetRotationPolicy", func(u *user, bad bool) error {
			req := &groupv1.SetRotationPolicyRequest{GroupId: group, RotationPolicy: &groupv1.RotationPolicy{MaxMessagesPerEpoch: 1000}}
			if bad {
				req.RotationPolicy = nil
			}
			_, err := e.client.SetRotationPolicy(u.ctx(), req)
			return err
		}, true},
		{"SetHistoryVisibility", func(u *user, bad bool) error {
			req := &groupv1.SetHistoryVisibilityRequest{GroupId: group, HistoryVisibility: groupv1.HistoryVisibility_HISTORY_VISIBILITY_SHARED}
			if bad {
				req.HistoryVisibility = 0
			}
			_, err := e.client.SetHistoryVisibility(u.ctx(), req)
			return err
		}, true},
		{"AddMembers", func(u *user, bad bool) error {
			req := &groupv1.AddMembersRequest{GroupId: group, Identities: []string{outsider.identity}}
			if bad {
				req.Identities = []string{badID}
			}
			_, err := e.client.AddMembers(u.ctx(), req)
			return err
		}, false},
		{"RemoveMember", func(u *user, bad bool) error {
			req := &groupv1.RemoveMemberRequest{GroupId: group, Identity: carol.identity}
			if bad {
				req.Identity = badID
			}
			_, err := e.client.RemoveMember(u.ctx(), req)
			return err
		}, false},
		{"RemoveMember: the caller itself", func(u *user, bad bool) error {
			req := &groupv1.RemoveMemberRequest{GroupId: group, Identity: carol.identity}
			if bad {
				req.Identity = u.identity
			}
			_, err := e.client.RemoveMember(u.ctx(), req)
			return err
		}, false},
		{"BanMember", func(u *user, bad bool) error {
			req := &groupv1.BanMemberRequest{GroupId: group, Identity: carol.identity}
			if bad {
				req.Identity = badID
			}
			_, err := e.client.BanMember(u.ctx(), req)
			return err
		}, false},
		{"UnbanMember", func(u *user, bad bool) error {
			req := &groupv1.UnbanMemberRequest{GroupId: group, Identity: outsider.identity}
			if bad {
				req.Identity = badID
			}
			_, err := e.client.UnbanMember(u.ctx(), req)
			return err
		}, false},
		{"ApproveJoinRequest", func(u *user, bad bool) error {
			req := &groupv1.ApproveJoinRequestRequest{GroupId: group, Identity: outsider.identity}
			if bad {
				req.Identity = badID
			}
			_, err := e.client.ApproveJoinRequest(u.ctx(), req)
			return err
		}, false},
		{"DeclineJoinRequest", func(u *user, bad bool) error {
			req := &groupv1.DeclineJoinRequestRequest{GroupId: group, Identity: outsider.identity}
			if bad {
				req.Identity = badID
			}
			_, err := e.client.DeclineJoinRequest(u.ctx(), req)
			return err
		}, false},
		{"ListJoinRequests", func(u *user, bad bool) error {
			req := &groupv1.ListJoinRequestsRequest{GroupId: group}
			if bad {
				req.PageSize = MaxPage + 1
			}
			_, err := e.client.ListJoinRequests(u.ctx(), req)
			return err
		}, false},
		{"ListJoinRequests: forged page token", func(u *user, bad bool) error {
			req := &groupv1.ListJoinRequestsRequest{GroupId: group}
			if bad {
				req.PageToken = "nonsense!"
			}
			_, err := e.client.ListJoinRequests(u.ctx(), req)
			return err
		}, false},
		{"InviteMember", func(u *user, bad bool) error {
			req := &groupv1.InviteMemberRequest{GroupId: group, Identity: outsider.identity}
			if bad {
				req.Ttl = tooLong
			}
			_, err := e.client.InviteMember(u.ctx(), req)
			return err
		}, false},
		{"InviteMember: malformed identity", func(u *user, bad bool) error {
			req := &groupv1.InviteMemberRequest{GroupId: group, Identity: outsider.identity}
			if bad {
				req.Identity = badID
			}
			_, err := e.client.InviteMember(u.ctx(), req)
			return err
		}, false},
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
