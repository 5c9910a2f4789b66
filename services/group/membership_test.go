package group

import (
	"maps"
	"slices"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/types/known/durationpb"

	groupv1 "github.com/umbra-e2ee/umbra/proto/umbra/group/v1"
)

func listedMembers(g *groupv1.Group) []string {
	var out []string
	for _, m := range g.GetMembers() {
		out = append(out, m.GetIdentity())
	}
	return out
}

func roleOf(g *groupv1.Group, id string) groupv1.GroupRole {
	for _, m := range g.GetMembers() {
		if m.GetIdentity() == id {
			return m.GetRole()
		}
	}
	return groupv1.GroupRole_GROUP_ROLE_UNSPECIFIED
}

// TestMembership: create, read, add, remove, ban, unban, roles, ownership, leave,
// delete, with their role rules.
func TestMembership(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{noLoops: true})
	a := e.newApp(t)
	us := e.newUsers(t, a, true, "owner", "admin", "bob", "carol", "dave", "erin")
	owner, admin, bob, carol, dave, erin := us[0], us[1], us[2], us[3], us[4], us[5]
	group := e.groupID(t, a, "team")

	g := e.create(t, owner, group, admin, bob, owner, bob)
	if got := listedMembers(g); !slices.Equal(got, identities(owner, admin, bob)) || g.GetOwner() != owner.identity || g.GetMyRole() != groupv1.GroupRole_GROUP_ROLE_OWNER {
		t.Fatalf("created %v", g)
	}
	if !g.GetRotationRequired() || !slices.Equal(g.GetRotationReasons(), []groupv1.RotationReason{groupv1.RotationReason_ROTATION_REASON_ENCRYPTION_ENABLED}) || g.GetEpoch() != 0 {
		t.Errorf("a new encrypted group: epoch %d, rotation %v %v; want epoch 0 with rotation required", g.GetEpoch(), g.GetRotationRequired(), g.GetRotationReasons())
	}
	_, err := e.client.CreateGroup(owner.ctx(), &groupv1.CreateGroupRequest{GroupId: group, EncryptionMode: groupv1.EncryptionMode_ENCRYPTION_MODE_OFF, HistoryVisibility: groupv1.HistoryVisibility_HISTORY_VISIBILITY_SHARED})
	wantCode(t, err, codes.AlreadyExists, "already exists")

	// Non-members read nothing.
	_, err = e.client.GetGroup(carol.ctx(), &groupv1.GetGroupRequest{GroupId: group})
	wantCode(t, err, codes.PermissionDenied, "not a member")
	_, err = e.client.GetEpochState(carol.ctx(), &groupv1.GetEpochStateRequest{GroupId: group})
	wantCode(t, err, codes.PermissionDenied, "not a member")
	_, err = e.client.GetEpochKeys(carol.ctx(), &groupv1.GetEpochKeysRequest{GroupId: group})
	wantCode(t, err, codes.PermissionDenied, "not a member")

	// Only the owner sets roles.
	_, err = e.client.SetRole(admin.ctx(), &groupv1.SetRoleRequest{GroupId: group, Identity: bob.identity, Role: groupv1.GroupRole_GROUP_ROLE_ADMIN})
	wantCode(t, err, codes.PermissionDenied, "only the owner")
	if r, err := e.client.SetRole(owner.ctx(), &groupv1.SetRoleRequest{GroupId: group, Identity: admin.identity, Role: groupv1.GroupRole_GROUP_ROLE_ADMIN}); err != nil || r.GetMember().GetRole() != groupv1.GroupRole_GROUP_ROLE_ADMIN {
		t.Fatalf("set role: %v, %v", r, err)
	}
	_, err = e.client.SetRole(owner.ctx(), &groupv1.SetRoleRequest{GroupId: group, Identity: admin.identity, Role: groupv1.GroupRole_GROUP_ROLE_OWNER})
	wantCode(t, err, codes.InvalidArgument, "TransferOwnership")

	// Members do not manage membership; admins add; naming a member refuses the call
	// (its statement would add a member twice).
	_, err = e.client.AddMembers(bob.ctx(), &groupv1.AddMembersRequest{GroupId: group, Identities: identities(carol)})
	wantCode(t, err, codes.PermissionDenied, "admin or the owner")
	_, err = e.client.AddMembers(admin.ctx(), &groupv1.AddMembersRequest{GroupId: group, Identities: identities(carol, bob, dave)})
	wantCode(t, err, codes.FailedPrecondition, "a member of group")
	add, err := e.client.AddMembers(admin.ctx(), &groupv1.AddMembersRequest{GroupId: group, Identities: identities(carol, dave)})
	if err != nil || !slices.Equal(add.GetAdded(), identities(carol, dave)) || add.GetGroup().GetMemberCount() != 5 || add.GetGroup().GetMembershipVersion() != 2 {
		t.Fatalf("add: %v, %v", add, err)
	}

	// Remove: admins remove members, not admins; nobody removes the owner.
	if _, err := e.client.SetRole(owner.ctx(), &groupv1.SetRoleRequest{GroupId: group, Identity: carol.identity, Role: groupv1.GroupRole_GROUP_ROLE_ADMIN}); err != nil {
		t.Fatal(err)
	}
	_, err = e.client.RemoveMember(admin.ctx(), &groupv1.RemoveMemberRequest{GroupId: group, Identity: carol.identity})
	wantCode(t, err, codes.PermissionDenied, "only the owner of group")
	_, err = e.client.BanMember(admin.ctx(), &groupv1.BanMemberRequest{GroupId: group, Identity: carol.identity})
	wantCode(t, err, codes.PermissionDenied, "only the owner of group")
	if _, err := e.client.SetRole(owner.ctx(), &groupv1.SetRoleRequest{GroupId: group, Identity: carol.identity, Role: groupv1.GroupRole_GROUP_ROLE_MEMBER}); err != nil {
		t.Fatal(err)
	}
	_, err = e.client.RemoveMember(admin.ctx(), &groupv1.RemoveMemberRequest{GroupId: group, Identity: owner.identity})
	wantCode(t, err, codes.PermissionDenied, "nobody may remove the owner")
	_, err = e.client.RemoveMember(owner.ctx(), &groupv1.RemoveMemberRequest{GroupId: group, Identity: owner.identity})
	wantCode(t, err, codes.InvalidArgument, "LeaveGroup")
	_, err = e.client.RemoveMember(admin.ctx(), &groupv1.RemoveMemberRequest{GroupId: group, Identity: erin.identity})
	wantCode(t, err, codes.NotFound, "not a member")
	if r, err := e.client.RemoveMember(admin.ctx(), &groupv1.RemoveMemberRequest{GroupId: group, Identity: dave.identity}); err != nil || r.GetGroup().GetMemberCount() != 4 {
		t.Fatalf("remove: %v, %v", r, err)
	}
	_, err = e.client.GetGroup(dave.ctx(), &groupv1.GetGroupRequest{GroupId: group})
	wantCode(t, err, codes.PermissionDenied, "not a member")

	// Ban: a member is removed, a non-member is kept out; adding a banned identity
	// refuses the whole call.
	b, err := e.client.BanMember(admin.ctx(), &groupv1.BanMemberRequest{GroupId: group, Identity: carol.identity})
	if err != nil || !b.GetRemoved() {
		t.Fatalf("ban carol: %v, %v", b, err)
	}
	if b, err := e.client.BanMember(admin.ctx(), &groupv1.BanMemberRequest{GroupId: group, Identity: erin.identity}); err != nil || b.GetRemoved() {
		t.Fatalf("ban erin (not a member): %v, %v", b, err)
	}
	_, err = e.client.BanMember(admin.ctx(), &groupv1.BanMemberRequest{GroupId: group, Identity: owner.identity})
	wantCode(t, err, codes.PermissionDenied, "owner")
	before := e.snapshot(t)
	_, err = e.client.AddMembers(owner.ctx(), &groupv1.AddMembersRequest{GroupId: group, Identities: identities(dave, erin)})
	wantCode(t, err, codes.FailedPrecondition, "banned")
	if !maps.Equal(before, e.snapshot(t)) {
		t.Error("the refused AddMembers changed the store")
	}
	full, err := e.client.GetGroup(admin.ctx(), &groupv1.GetGroupRequest{GroupId: group})
	if err != nil || !slices.Equal(full.GetGroup().GetBanned(), sorted(identities(carol, erin))) {
		t.Fatalf("admin's view: %v, %v", full, err)
	}
	if plain, err := e.client.GetGroup(bob.ctx(), &groupv1.GetGroupRequest{GroupId: group}); err != nil || len(plain.GetGroup().GetBanned()) != 0 || plain.GetGroup().GetMyRole() != groupv1.GroupRole_GROUP_ROLE_MEMBER {
		t.Fatalf("a member's view: %v, %v", plain, err)
	}
	_, err = e.client.UnbanMember(bob.ctx(), &groupv1.UnbanMemberRequest{GroupId: group, Identity: erin.identity})
	wantCode(t, err, codes.PermissionDenied, "admin or the owner")
	if _, err := e.client.UnbanMember(admin.ctx(), &groupv1.UnbanMemberRequest{GroupId: group, Identity: erin.identity}); err != nil {
		t.Fatal(err)
	}
	_, err = e.client.UnbanMember(admin.ctx(), &groupv1.UnbanMemberRequest{GroupId: group, Identity: erin.identity})
	wantCode(t, err, codes.NotFound, "not banned")

	// ListMyGroups pages.
	other := e.groupID(t, a, "other")
	e.create(t, bob, other)
	l1, err := e.client.ListMyGroups(bob.ctx(), &groupv1.ListMyGroupsRequest{PageSize: 1})
	if err != nil || len(l1.GetGroups()) != 1 || l1.GetNextPageToken() == "" {
		t.Fatalf("page 1: %v, %v", l1, err)
	}
	l2, err := e.client.ListMyGroups(bob.ctx(), &groupv1.ListMyGroupsRequest{PageSize: 1, PageToken: l1.GetNextPageToken()})
	if err != nil || len(l2.GetGroups()) != 1 || l2.GetNextPageToken() != "" || l2.GetGroups()[0].GetGroupId() == l1.GetGroups()[0].GetGroupId() {
		t.Fatalf("page 2: %v, %v", l2, err)
	}

	// Ownership: transfer, then the owner leaves and the longest-serving admin takes
	// over; with no admin, the longest-serving member.
	if r, err := e.client.TransferOwnership(owner.ctx(), &groupv1.TransferOwnershipRequest{GroupId: group, NewOwner: bob.identity}); err != nil || r.GetGroup().GetOwner() != bob.identity {
		t.Fatalf("transfer: %v, %v", r, err)
	}
	g2, _ := e.client.GetGroup(bob.ctx(), &groupv1.GetGroupRequest{GroupId: group})
	if roleOf(g2.GetGroup(), owner.identity) != groupv1.GroupRole_GROUP_ROLE_ADMIN || g2.GetGroup().GetMembers()[0].GetIdentity() != bob.identity {
		t.Errorf("after the transfer: %v", g2)
	}
	// Members now: bob (owner), owner and admin (admins, owner joined first).
	lv, err := e.client.LeaveGroup(bob.ctx(), &groupv1.LeaveGroupRequest{GroupId: group})
	if err != nil || lv.GetNewOwner() != owner.identity || lv.GetGroupDeleted() {
		t.Fatalf("owner leaves: %v, %v; want the longest-serving admin as owner", lv, err)
	}
	if _, err := e.client.SetRole(owner.ctx(), &groupv1.SetRoleRequest{GroupId: group, Identity: admin.identity, Role: groupv1.GroupRole_GROUP_ROLE_MEMBER}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.client.AddMembers(owner.ctx(), &groupv1.AddMembersRequest{GroupId: group, Identities: identities(erin)}); err != nil {
		t.Fatal(err)
	}
	lv, err = e.client.LeaveGroup(owner.ctx(), &groupv1.LeaveGroupRequest{GroupId: group})
	if err != nil || lv.GetNewOwner() != admin.identity {
		t.Fatalf("owner leaves with members only: %v, %v; want the longest-serving member", lv, err)
	}
	if _, err := e.client.LeaveGroup(erin.ctx(), &groupv1.LeaveGroupRequest{GroupId: group}); err != nil {
		t.Fatal(err)
	}
	lv, err = e.client.LeaveGroup(admin.ctx(), &groupv1.LeaveGroupRequest{GroupId: group})
	if err != nil || !lv.GetGroupDeleted() {
		t.Fatalf("last member leaves: %v, %v; want the group deleted", lv, err)
	}
	_, err = e.client.RequestJoin(carol.ctx(), &groupv1.RequestJoinRequest{GroupId: group})
	wantCode(t, err, codes.NotFound, "not found")

	// Delete: owner only; afterwards it is gone for everyone.
	_, err = e.client.DeleteGroup(owner.ctx(), &groupv1.DeleteGroupRequest{GroupId: other})
	wantCode(t, err, codes.PermissionDenied, "not a member")
	if _, err := e.client.DeleteGroup(bob.ctx(), &groupv1.DeleteGroupRequest{GroupId: other}); err != nil {
		t.Fatal(err)
	}
	if l, err := e.client.ListMyGroups(bob.ctx(), &groupv1.ListMyGroupsRequest{}); err != nil || len(l.GetGroups()) != 0 {
		t.Errorf("bob's groups after both are gone: %v, %v", l, err)
	}
	// Nothing of the deleted groups is left but their undelivered events (and the
	// file's own state).
	for k := range e.snapshot(t) {
		if !hasPrefix(k, "group_outbox/") && !hasPrefix(k, "_meta/") && k != "group_state/invitation_expiry_indexed" {
			t.Errorf("left in group.db: %q", k)
		}
	}
}

func hasPrefix(s, p string) bool { return len(s) >= len(p) && s[:len(p)] == p }

func sorted(s []string) []string { return slices.Sorted(slices.Values(s)) }

// TestJoinRequests: request, approve, decline, list; who may do what.
func TestJoinRequests(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{noLoops: true})
	a := e.newApp(t)
	us := e.newUsers(t, a, true, "owner", "admin", "member", "ann", "ben", "cat", "banned")
	owner, admin, member, ann, ben, cat, banned := us[0], us[1], us[2], us[3], us[4], us[5], us[6]
	group := e.groupID(t, a, "club")
	e.create(t, owner, group, admin, member)
	if _, err := e.client.SetRole(owner.ctx(), &groupv1.SetRoleRequest{GroupId: group, Identity: admin.identity, Role: groupv1.GroupRole_GROUP_ROLE_ADMIN}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.client.BanMember(owner.ctx(), &groupv1.BanMemberRequest{GroupId: group, Identity: banned.identity}); err != nil {
		t.Fatal(err)
	}
	r1, err := e.client.RequestJoin(ann.ctx(), &groupv1.RequestJoinRequest{GroupId: group})
	if err != nil || r1.GetJoinRequest().GetIdentity() != ann.identity {
		t.Fatalf("request: %v, %v", r1, err)
	}
	e.clock.Add(time.Second)
	r2, err := e.client.RequestJoin(ann.ctx(), &groupv1.RequestJoinRequest{GroupId: group})
	if err != nil || !r2.GetJoinRequest().GetCreatedAt().AsTime().Equal(r1.GetJoinRequest().GetCreatedAt().AsTime()) {
		t.Fatalf("second request: %v, %v; want the pending one", r2, err)
	}
	for _, u := range []*user{ben, cat} {
		e.clock.Add(time.Second)
		if _, err := e.client.RequestJoin(u.ctx(), &groupv1.RequestJoinRequest{GroupId: group}); err != nil {
			t.Fatal(err)
		}
	}
	_, err = e.client.RequestJoin(member.ctx(), &groupv1.RequestJoinRequest{GroupId: group})
	wantCode(t, err, codes.AlreadyExists, "member")
	_, err = e.client.RequestJoin(banned.ctx(), &groupv1.RequestJoinRequest{GroupId: group})
	wantCode(t, err, codes.PermissionDenied, "banned")
	_, err = e.client.RequestJoin(ann.ctx(), &groupv1.RequestJoinRequest{GroupId: e.groupID(t, a, "nowhere")})
	wantCode(t, err, codes.NotFound, "not found")

	// Oldest first, in pages.
	p1, err := e.client.ListJoinRequests(admin.ctx(), &groupv1.ListJoinRequestsRequest{GroupId: group, PageSize: 2})
	if err != nil || len(p1.GetJoinRequests()) != 2 || p1.GetJoinRequests()[0].GetIdentity() != ann.identity || p1.GetJoinRequests()[1].GetIdentity() != ben.identity {
		t.Fatalf("page 1: %v, %v", p1, err)
	}
	p2, err := e.client.ListJoinRequests(admin.ctx(), &groupv1.ListJoinRequestsRequest{GroupId: group, PageSize: 2, PageToken: p1.GetNextPageToken()})
	if err != nil || len(p2.GetJoinRequests()) != 1 || p2.GetJoinRequests()[0].GetIdentity() != cat.identity || p2.GetNextPageToken() != "" {
		t.Fatalf("page 2: %v, %v", p2, err)
	}
	_, err = e.client.ListJoinRequests(member.ctx(), &groupv1.ListJoinRequestsRequest{GroupId: group})
	wantCode(t, err, codes.PermissionDenied, "admin or the owner")

	// An approver without permission is refused, and nothing changes.
	before := e.snapshot(t)
	_, err = e.client.ApproveJoinRequest(member.ctx(), &groupv1.ApproveJoinRequestRequest{GroupId: group, Identity: ann.identity})
	wantCode(t, err, codes.PermissionDenied, "admin or the owner")
	_, err = e.client.ApproveJoinRequest(ann.ctx(), &groupv1.ApproveJoinRequestRequest{GroupId: group, Identity: ann.identity})
	wantCode(t, err, codes.PermissionDenied, "not a member")
	_, err = e.client.DeclineJoinRequest(member.ctx(), &groupv1.DeclineJoinRequestRequest{GroupId: group, Identity: ben.identity})
	wantCode(t, err, codes.PermissionDenied, "admin or the owner")
	if !maps.Equal(before, e.snapshot(t)) {
		t.Error("refused approvals changed the store")
	}

	ap, err := e.client.ApproveJoinRequest(admin.ctx(), &groupv1.ApproveJoinRequestRequest{GroupId: group, Identity: ann.identity})
	if err != nil || ap.GetMember().GetIdentity() != ann.identity || ap.GetMember().GetAddedBy() != admin.identity || ap.GetMember().GetRole() != groupv1.GroupRole_GROUP_ROLE_MEMBER {
		t.Fatalf("approve: %v, %v", ap, err)
	}
	_, err = e.client.ApproveJoinRequest(admin.ctx(), &groupv1.ApproveJoinRequestRequest{GroupId: group, Identity: ann.identity})
	wantCode(t, err, codes.NotFound, "no pending join request")
	if _, err := e.client.DeclineJoinRequest(owner.ctx(), &groupv1.DeclineJoinRequestRequest{GroupId: group, Identity: ben.identity}); err != nil {
		t.Fatal(err)
	}
	_, err = e.client.DeclineJoinRequest(owner.ctx(), &groupv1.DeclineJoinRequestRequest{GroupId: group, Identity: ben.identity})
	wantCode(t, err, codes.NotFound, "no pending join request")
	// Banning drops a pending request.
	if _, err := e.client.BanMember(admin.ctx(), &groupv1.BanMemberRequest{GroupId: group, Identity: cat.identity}); err != nil {
		t.Fatal(err)
	}
	if l, err := e.client.ListJoinRequests(owner.ctx(), &groupv1.ListJoinRequestsRequest{GroupId: group}); err != nil || len(l.GetJoinRequests()) != 0 {
		t.Errorf("pending after approve, decline and ban: %v, %v", l, err)
	}
	st, err := e.client.GetEpochState(ann.ctx(), &groupv1.GetEpochStateRequest{GroupId: group})
	if err != nil || st.GetMemberCount() != 4 || !st.GetRotationRequired() {
		t.Errorf("state after the approval: %v, %v", st, err)
	}
}

// TestInvitations: invite, accept before expiry, decline, list newest first.
func TestInvitations(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{noLoops: true})
	a := e.newApp(t)
	us := e.newUsers(t, a, true, "owner", "member", "ann", "ben", "banned")
	owner, member, ann, ben, banned := us[0], us[1], us[2], us[3], us[4]
	g1, g2, g3 := e.groupID(t, a, "g1"), e.groupID(t, a, "g2"), e.groupID(t, a, "g3")
	for _, g := range []string{g1, g2, g3} {
		e.create(t, owner, g, member)
	}
	if _, err := e.client.BanMember(owner.ctx(), &groupv1.BanMemberRequest{GroupId: g1, Identity: banned.identity}); err != nil {
		t.Fatal(err)
	}
	_, err := e.client.InviteMember(member.ctx(), &groupv1.InviteMemberRequest{GroupId: g1, Identity: ann.identity})
	wantCode(t, err, codes.PermissionDenied, "admin or the owner")
	_, err = e.client.InviteMember(owner.ctx(), &groupv1.InviteMemberRequest{GroupId: g1, Identity: member.identity})
	wantCode(t, err, codes.AlreadyExists, "member")
	_, err = e.client.InviteMember(owner.ctx(), &groupv1.InviteMemberRequest{GroupId: g1, Identity: banned.identity})
	wantCode(t, err, codes.FailedPrecondition, "banned")
	_, err = e.client.InviteMember(owner.ctx(), &groupv1.InviteMemberRequest{GroupId: g1, Identity: ann.identity, Ttl: durationpb.New(time.Second)})
	wantCode(t, err, codes.InvalidArgument, "ttl")

	inv, err := e.client.InviteMember(owner.ctx(), &groupv1.InviteMemberRequest{GroupId: g1, Identity: ann.identity, Ttl: durationpb.New(time.Hour)})
	if err != nil || inv.GetInvitation().GetInviter() != owner.identity || !inv.GetInvitation().GetExpiresAt().AsTime().Equal(e.clock.Now().Add(time.Hour)) {
		t.Fatalf("invite: %v, %v", inv, err)
	}
	e.clock.Add(time.Minute)
	if _, err := e.client.InviteMember(owner.ctx(), &groupv1.InviteMemberRequest{GroupId: g2, Identity: ann.identity}); err != nil {
		t.Fatal(err)
	}
	e.clock.Add(time.Minute)
	if _, err := e.client.InviteMember(owner.ctx(), &groupv1.InviteMemberRequest{GroupId: g3, Identity: ann.identity, Ttl: durationpb.New(2 * time.Minute)}); err != nil {
		t.Fatal(err)
	}
	l, err := e.client.ListMyInvitations(ann.ctx(), &groupv1.ListMyInvitationsRequest{PageSize: 2})
	if err != nil || len(l.GetInvitations()) != 2 || l.GetInvitations()[0].GetGroupId() != g3 || l.GetInvitations()[1].GetGroupId() != g2 {
		t.Fatalf("newest first: %v, %v", l, err)
	}
	l2, err := e.client.ListMyInvitations(ann.ctx(), &groupv1.ListMyInvitationsRequest{PageSize: 2, PageToken: l.GetNextPageToken()})
	if err != nil || len(l2.GetInvitations()) != 1 || l2.GetInvitations()[0].GetGroupId() != g1 {
		t.Fatalf("page 2: %v, %v", l2, err)
	}

	// g3's invitation expires; accepting it then is refused; expired ones are not listed.
	e.clock.Add(3 * time.Minute)
	_, err = e.client.AcceptInvitation(ann.ctx(), &groupv1.AcceptInvitationRequest{GroupId: g3})
	wantCode(t, err, codes.FailedPrecondition, "expired")
	if l, _ := e.client.ListMyInvitations(ann.ctx(), &groupv1.ListMyInvitationsRequest{}); len(l.GetInvitations()) != 2 {
		t.Errorf("listed %v; want the two unexpired", l)
	}
	acc, err := e.client.AcceptInvitation(ann.ctx(), &groupv1.AcceptInvitationRequest{GroupId: g1})
	if err != nil || acc.GetMember().GetAddedBy() != owner.identity {
		t.Fatalf("accept: %v, %v", acc, err)
	}
	_, err = e.client.AcceptInvitation(ann.ctx(), &groupv1.AcceptInvitationRequest{GroupId: g1})
	wantCode(t, err, codes.NotFound, "no pending invitation")
	if _, err := e.client.DeclineInvitation(ann.ctx(), &groupv1.DeclineInvitationRequest{GroupId: g2}); err != nil {
		t.Fatal(err)
	}
	_, err = e.client.DeclineInvitation(ann.ctx(), &groupv1.DeclineInvitationRequest{GroupId: g2})
	wantCode(t, err, codes.NotFound, "no pending invitation")
	_, err = e.client.AcceptInvitation(ben.ctx(), &groupv1.AcceptInvitationRequest{GroupId: g2})
	wantCode(t, err, codes.NotFound, "no pending invitation")
	if g, err := e.client.GetGroup(ann.ctx(), &groupv1.GetGroupRequest{GroupId: g1}); err != nil || g.GetGroup().GetMemberCount() != 3 {
		t.Errorf("g1 after the acceptance: %v, %v", g, err)
	}

	// The sweeper drops invitations long expired.
	e.clock.Add(DefaultExpiredInviteKeep + time.Hour)
	if err := e.srv.sweep(e.clock.Now()); err != nil {
		t.Fatal(err)
	}
	for k := range e.snapshot(t) {
		if hasPrefix(k, "invitations/") || hasPrefix(k, "invitee_groups/") {
			t.Errorf("left after the sweep: %q", k)
		}
	}
}
