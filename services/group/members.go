package group

import (
	"context"
	"slices"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/umbra-e2ee/umbra/pkg/auth"
	"github.com/umbra-e2ee/umbra/pkg/e2ee"
	"github.com/umbra-e2ee/umbra/pkg/errs"
	groupv1 "github.com/umbra-e2ee/umbra/proto/umbra/group/v1"
	storagev1 "github.com/umbra-e2ee/umbra/proto/umbra/storage/group/v1"
)

// addMember makes identity a member of g (which the caller writes), dropping its
// pending join request and invitation.
func addMember(tx Tx, g *storagev1.GroupRecord, identity string, r groupv1.GroupRole, addedBy string, now time.Time) (*storagev1.GroupMemberRecord, error) {
	if err := dropPending(tx, g, identity); err != nil {
		return nil, err
	}
	g.LastSequence++
	m := &storagev1.GroupMemberRecord{
		Identity:   identity,
		Role:       uint32(r),
		JoinedAt:   timestamppb.New(now),
		AddedBy:    addedBy,
		Sequence:   g.GetLastSequence(),
		FirstEpoch: g.GetEpoch() + 1,
	}
	g.MemberCount++
	return m, tx.PutMember(g.GetAppId(), g.GetGroupId(), m)
}

// dropPending deletes identity's pending join request and invitation in g (which the
// caller writes), if it has them.
func dropPending(tx Tx, g *storagev1.GroupRecord, identity string) error {
	app, group := g.GetAppId(), g.GetGroupId()
	if jr, err := tx.JoinRequest(app, group, identity); err != nil {
		return err
	} else if jr != nil {
		if err := tx.DeleteJoinRequest(app, group, identity); err != nil {
			return err
		}
		g.JoinRequestCount--
	}
	if inv, err := tx.Invitation(app, group, identity); err != nil {
		return err
	} else if inv != nil {
		if err := tx.DeleteInvitation(app, group, identity); err != nil {
			return err
		}
		g.InvitationCount--
	}
	return nil
}

// removeMember ends identity's membership of g: its record, its keys and its upload.
func removeMember(tx Tx, g *storagev1.GroupRecord, identity string) error {
	if err := tx.DeleteMember(g.GetAppId(), g.GetGroupId(), identity); err != nil {
		return err
	}
	g.MemberCount--
	return tx.DeleteUpload(g.GetAppId(), g.GetGroupId(), identity)
}

// AddMembers implements GroupService.
func (s *Server) AddMembers(ctx context.Context, req *groupv1.AddMembersRequest) (*groupv1.AddMembersResponse, error) {
	var resp *groupv1.AddMembersResponse
	err := s.updateMembership(ctx, req.GetGroupId(), req.GetStatement(), func(tx Tx, p *auth.Principal, stm *statement, now time.Time) error {
		g, me, err := loadAsManager(tx, p.AppID, req.GetGroupId(), p.Identity, "add members")
		if err != nil {
			return err
		}
		ids, err := validIdentities("identities", req.GetIdentities(), 1, MaxAddMembers)
		if err != nil {
			return err
		}
		for _, id := range ids {
			if ban, err := tx.Ban(p.AppID, g.GetGroupId(), id); err != nil {
				return err
			} else if ban != nil {
				return errs.Preconditionf("%s is banned from group %s: unban it before adding it; nothing was added", id, g.GetGroupId())
			}
			if m, err := tx.Member(p.AppID, g.GetGroupId(), id); err != nil {
				return err
			} else if m != nil {
				return errs.Preconditionf("%s is a member of group %s already: nothing was added", id, g.GetGroupId())
			}
		}
		if n := int(g.GetMemberCount()) + len(ids); n > s.cfg.MaxMembers {
			return errs.Preconditionf("group %s would have %d members; at most %d: nothing was added", g.GetGroupId(), n, s.cfg.MaxMembers)
		}
		if err := s.accept(tx, g, stm, e2ee.MembershipChange{Kind: e2ee.KindAdd, Subjects: ids}, now); err != nil {
			return err
		}
		for _, id := range ids {
			if _, err := addMember(tx, g, id, groupv1.GroupRole_GROUP_ROLE_MEMBER, p.Identity, now); err != nil {
				return err
			}
		}
		if err := s.membersJoined(tx, g, p.Identity, ids, now); err != nil {
			return err
		}
		resp = &groupv1.AddMembersResponse{Added: ids, Group: viewFor(g, now, me)}
		return nil
	})
	return resp, err
}

// membersJoined records that ids became members of g, writes g, and tells the members.
func (s *Server) membersJoined(tx Tx, g *storagev1.GroupRecord, actor string, ids []string, now time.Time) error {
	return s.membersChanged(tx, g, &groupv1.GroupEvent{Kind: groupv1.GroupEventKind_GROUP_EVENT_KIND_MEMBERS_ADDED, Actor: actor, Identities: ids}, now)
}

// checkTarget says whether actor may remove or ban target (nil: not a member).
func checkTarget(g *storagev1.GroupRecord, actor, target *storagev1.GroupMemberRecord, what string) error {
	switch role(target) {
	case groupv1.GroupRole_GROUP_ROLE_OWNER:
		return errs.Permissionf("nobody may %s the owner of group %s", what, g.GetGroupId())
	case groupv1.GroupRole_GROUP_ROLE_ADMIN:
		if role(actor) != groupv1.GroupRole_GROUP_ROLE_OWNER {
			return errs.Permissionf("only the owner of group %s may %s an admin", g.GetGroupId(), what)
		}
	}
	return nil
}

// RemoveMember implements GroupService.
func (s *Server) RemoveMember(ctx context.Context, req *groupv1.RemoveMemberRequest) (*groupv1.RemoveMemberResponse, error) {
	var resp *groupv1.RemoveMemberResponse
	err := s.updateMembership(ctx, req.GetGroupId(), req.GetStatement(), func(tx Tx, p *auth.Principal, stm *statement, now time.Time) error {
		g, me, err := loadAsManager(tx, p.AppID, req.GetGroupId(), p.Identity, "remove members")
		if err != nil {
			return err
		}
		if err := validTarget(p, "identity", req.GetIdentity(), "identity is the caller: leave a group with LeaveGroup"); err != nil {
			return err
		}
		target, err := targetMember(tx, g, req.GetIdentity(), "")
		if err != nil {
			return err
		}
		if err := checkTarget(g, me, target, "remove"); err != nil {
			return err
		}
		if err := s.accept(tx, g, stm, e2ee.MembershipChange{Kind: e2ee.KindRemove, Subjects: []string{target.GetIdentity()}}, now); err != nil {
			return err
		}
		if err := removeMember(tx, g, target.GetIdentity()); err != nil {
			return err
		}
		ev := &groupv1.GroupEvent{Kind: groupv1.GroupEventKind_GROUP_EVENT_KIND_MEMBER_REMOVED, Actor: p.Identity, Identities: []string{target.GetIdentity()}}
		if err := s.membersChanged(tx, g, ev, now); err != nil {
			return err
		}
		if err := s.toOutsider(tx, g, &groupv1.GroupEvent{Kind: ev.Kind, Actor: p.Identity, Identities: ev.Identities}, target.GetIdentity()); err != nil {
			return err
		}
		resp = &groupv1.RemoveMemberResponse{Group: viewFor(g, now, me)}
		return nil
	})
	return resp, err
}

// membersChanged records that members joined or left g, writes g, and tells the
// members (the remaining ones) with ev.
func (s *Server) membersChanged(tx Tx, g *storagev1.GroupRecord, ev *groupv1.GroupEvent, now time.Time) error {
	membershipChanged(g, now)
	newly := markRotation(g, groupv1.RotationReason_ROTATION_REASON_MEMBERSHIP_CHANGED)
	if err := tx.PutGroup(g); err != nil {
		return err
	}
	if err := s.toMembers(tx, g, ev); err != nil {
		return err
	}
	return s.rotationEvent(tx, g, newly)
}

// BanMember implements GroupService.
func (s *Server) BanMember(ctx context.Context, req *groupv1.BanMemberRequest) (*groupv1.BanMemberResponse, error) {
	var resp *groupv1.BanMemberResponse
	err := s.updateMembership(ctx, req.GetGroupId(), req.GetStatement(), func(tx Tx, p *auth.Principal, stm *statement, now time.Time) error {
		g, me, err := loadAsManager(tx, p.AppID, req.GetGroupId(), p.Identity, "ban")
		if err != nil {
			return err
		}
		if err := validTarget(p, "identity", req.GetIdentity(), "identity is the caller: nobody bans itself"); err != nil {
			return err
		}
		app, group, id := p.AppID, g.GetGroupId(), req.GetIdentity()
		target, err := tx.Member(app, group, id)
		if err != nil {
			return err
		}
		if err := checkTarget(g, me, target, "ban"); err != nil {
			return err
		}
		if ban, err := tx.Ban(app, group, id); err != nil {
			return err
		} else if ban != nil {
			return errs.Preconditionf("%s is banned from group %s already", id, group)
		}
		if int(g.GetBanCount()) >= s.cfg.MaxBans {
			return errs.Preconditionf("group %s has %d bans, its limit: unban someone first", group, g.GetBanCount())
		}
		if err := s.accept(tx, g, stm, e2ee.MembershipChange{Kind: e2ee.KindBan, Subjects: []string{id}}, now); err != nil {
			return err
		}
		if err := tx.PutBan(app, group, &storagev1.GroupBanRecord{Identity: id, BannedBy: p.Identity, BannedAt: timestamppb.New(now)}); err != nil {
			return err
		}
		g.BanCount++
		if err := dropPending(tx, g, id); err != nil {
			return err
		}
		ev := &groupv1.GroupEvent{Kind: groupv1.GroupEventKind_GROUP_EVENT_KIND_MEMBER_BANNED, Actor: p.Identity, Identities: []string{id}}
		if target != nil {
			if err := removeMember(tx, g, id); err != nil {
				return err
			}
			if err := s.membersChanged(tx, g, ev, now); err != nil {
				return err
			}
		} else {
			if err := putTouched(tx, g, now); err != nil {
				return err
			}
			if err := s.toMembers(tx, g, ev); err != nil {
				return err
			}
		}
		if err := s.toOutsider(tx, g, &groupv1.GroupEvent{Kind: ev.Kind, Actor: p.Identity, Identities: ev.Identities}, id); err != nil {
			return err
		}
		resp = &groupv1.BanMemberResponse{Group: viewFor(g, now, me), Removed: target != nil}
		return nil
	})
	return resp, err
}

// UnbanMember implements GroupService.
func (s *Server) UnbanMember(ctx context.Context, req *groupv1.UnbanMemberRequest) (*groupv1.UnbanMemberResponse, error) {
	err := s.updateMembership(ctx, req.GetGroupId(), req.GetStatement(), func(tx Tx, p *auth.Principal, stm *statement, now time.Time) error {
		g, _, err := loadAsManager(tx, p.AppID, req.GetGroupId(), p.Identity, "unban")
		if err != nil {
			return err
		}
		if err := validTarget(p, "identity", req.GetIdentity(), ""); err != nil {
			return err
		}
		if ban, err := tx.Ban(p.AppID, g.GetGroupId(), req.GetIdentity()); err != nil {
			return err
		} else if ban == nil {
			return errs.NotFoundf("%s is not banned from group %s", req.GetIdentity(), g.GetGroupId())
		}
		if err := s.accept(tx, g, stm, e2ee.MembershipChange{Kind: e2ee.KindUnban, Subjects: []string{req.GetIdentity()}}, now); err != nil {
			return err
		}
		if err := tx.DeleteBan(p.AppID, g.GetGroupId(), req.GetIdentity()); err != nil {
			return err
		}
		g.BanCount--
		if err := putTouched(tx, g, now); err != nil {
			return err
		}
		ev := &groupv1.GroupEvent{Kind: groupv1.GroupEventKind_GROUP_EVENT_KIND_MEMBER_UNBANNED, Actor: p.Identity, Identities: []string{req.GetIdentity()}}
		if err := s.toManagers(tx, g, ev); err != nil {
			return err
		}
		return s.toOutsider(tx, g, &groupv1.GroupEvent{Kind: ev.Kind, Actor: p.Identity, Identities: ev.Identities}, req.GetIdentity())
	})
	if err != nil {
		return nil, err
	}
	return &groupv1.UnbanMemberResponse{}, nil
}

// LeaveGroup implements GroupService.
func (s *Server) LeaveGroup(ctx context.Context, req *groupv1.LeaveGroupRequest) (*groupv1.LeaveGroupResponse, error) {
	resp := &groupv1.LeaveGroupResponse{}
	err := s.updateMembership(ctx, req.GetGroupId(), req.GetStatement(), func(tx Tx, p *auth.Principal, stm *statement, now time.Time) error {
		g, me, err := loadAsMember(tx, p.AppID, req.GetGroupId(), p.Identity)
		if err != nil {
			return err
		}
		if g.GetMemberCount() <= 1 {
			if err := s.accept(tx, g, stm, e2ee.MembershipChange{Kind: e2ee.KindLeave}, now); err != nil {
				return err
			}
			resp.GroupDeleted = true
			return s.deleteGroup(tx, g, p.Identity)
		}
		var successor *storagev1.GroupMemberRecord
		want := e2ee.MembershipChange{Kind: e2ee.KindLeave}
		if role(me) == groupv1.GroupRole_GROUP_ROLE_OWNER {
			if successor, err = ownerAfter(tx, g, p.Identity); err != nil {
				return err
			}
			want.Subjects = []string{successor.GetIdentity()}
		}
		if err := s.accept(tx, g, stm, want, now); err != nil {
			return err
		}
		if err := removeMember(tx, g, p.Identity); err != nil {
			return err
		}
		if successor != nil {
			successor.Role = uint32(groupv1.GroupRole_GROUP_ROLE_OWNER)
			if err := tx.PutMember(p.AppID, g.GetGroupId(), successor); err != nil {
				return err
			}
			g.Owner = successor.GetIdentity()
			resp.NewOwner = successor.GetIdentity()
		}
		if err := s.membersChanged(tx, g, &groupv1.GroupEvent{Kind: groupv1.GroupEventKind_GROUP_EVENT_KIND_MEMBER_LEFT, Actor: p.Identity}, now); err != nil {
			return err
		}
		if successor != nil {
			return s.toMembers(tx, g, &groupv1.GroupEvent{Kind: groupv1.GroupEventKind_GROUP_EVENT_KIND_ROLE_CHANGED, Actor: p.Identity, Identities: []string{successor.GetIdentity()}, Role: groupv1.GroupRole_GROUP_ROLE_OWNER})
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return resp, nil
}

// ownerAfter is who owns g when its owner, leaving, leaves others: the longest-serving
// admin, or else the longest-serving member.
func ownerAfter(tx Tx, g *storagev1.GroupRecord, owner string) (*storagev1.GroupMemberRecord, error) {
	members, err := tx.AllMembers(g.GetAppId(), g.GetGroupId())
	if err != nil {
		return nil, err
	}
	members = slices.DeleteFunc(members, func(m *storagev1.GroupMemberRecord) bool { return m.GetIdentity() == owner })
	sortMembers(members)
	for _, m := range members {
		if role(m) == groupv1.GroupRole_GROUP_ROLE_ADMIN {
			return m, nil
		}
	}
	return members[0], nil
}

// SetRole implements GroupService.
func (s *Server) SetRole(ctx context.Context, req *groupv1.SetRoleRequest) (*groupv1.SetRoleResponse, error) {
	var resp *groupv1.SetRoleResponse
	err := s.updateMembership(ctx, req.GetGroupId(), req.GetStatement(), func(tx Tx, p *auth.Principal, stm *statement, now time.Time) error {
		g, _, err := loadAsOwner(tx, p.AppID, req.GetGroupId(), p.Identity, "set roles")
		if err != nil {
			return err
		}
		if err := validTarget(p, "identity", req.GetIdentity(), "identity is the owner: its role changes only with TransferOwnership"); err != nil {
			return err
		}
		switch req.GetRole() {
		case groupv1.GroupRole_GROUP_ROLE_ADMIN, groupv1.GroupRole_GROUP_ROLE_MEMBER:
		case groupv1.GroupRole_GROUP_ROLE_OWNER:
			return errs.Invalidf("role OWNER is given only with TransferOwnership")
		default:
			return errs.Invalidf("role %s is not ADMIN or MEMBER", req.GetRole())
		}
		m, err := targetMember(tx, g, req.GetIdentity(), "")
		if err != nil {
			return err
		}
		if role(m) == req.GetRole() {
			return errs.Preconditionf("%s is %s of group %s already", m.GetIdentity(), roleWord(req.GetRole()), g.GetGroupId())
		}
		if err := s.accept(tx, g, stm, e2ee.MembershipChange{Kind: e2ee.KindSetRole, Subjects: []string{m.GetIdentity()}, Role: e2ee.MembershipRole(req.GetRole())}, now); err != nil {
			return err
		}
		m.Role = uint32(req.GetRole())
		if err := tx.PutMember(p.AppID, g.GetGroupId(), m); err != nil {
			return err
		}
		if err := putTouched(tx, g, now); err != nil {
			return err
		}
		resp = &groupv1.SetRoleResponse{Member: memberView(m)}
		return s.toMembers(tx, g, &groupv1.GroupEvent{Kind: groupv1.GroupEventKind_GROUP_EVENT_KIND_ROLE_CHANGED, Actor: p.Identity, Identities: []string{m.GetIdentity()}, Role: req.GetRole()})
	})
	return resp, err
}

// TransferOwnership implements GroupService.
func (s *Server) TransferOwnership(ctx context.Context, req *groupv1.TransferOwnershipRequest) (*groupv1.TransferOwnershipResponse, error) {
	var resp *groupv1.TransferOwnershipResponse
	err := s.updateMembership(ctx, req.GetGroupId(), req.GetStatement(), func(tx Tx, p *auth.Principal, stm *statement, now time.Time) error {
		g, me, err := loadAsOwner(tx, p.AppID, req.GetGroupId(), p.Identity, "transfer ownership")
		if err != nil {
			return err
		}
		if err := validTarget(p, "new_owner", req.GetNewOwner(), "new_owner is the caller, who owns the group already"); err != nil {
			return err
		}
		next, err := targetMember(tx, g, req.GetNewOwner(), ": only a member can become the owner")
		if err != nil {
			return err
		}
		if err := s.accept(tx, g, stm, e2ee.MembershipChange{Kind: e2ee.KindTransferOwnership, Subjects: []string{next.GetIdentity()}}, now); err != nil {
			return err
		}
		next.Role = uint32(groupv1.GroupRole_GROUP_ROLE_OWNER)
		me.Role = uint32(groupv1.GroupRole_GROUP_ROLE_ADMIN)
		for _, m := range []*storagev1.GroupMemberRecord{next, me} {
			if err := tx.PutMember(p.AppID, g.GetGroupId(), m); err != nil {
				return err
			}
		}
		g.Owner = next.GetIdentity()
		if err := putTouched(tx, g, now); err != nil {
			return err
		}
		resp = &groupv1.TransferOwnershipResponse{Group: viewFor(g, now, me)}
		return s.toMembers(tx, g, &groupv1.GroupEvent{Kind: groupv1.GroupEventKind_GROUP_EVENT_KIND_ROLE_CHANGED, Actor: p.Identity, Identities: []string{next.GetIdentity()}, Role: groupv1.GroupRole_GROUP_ROLE_OWNER})
	})
	return resp, err
}

// roleWord is a role as a word of a message: "an admin", "a member".
func roleWord(r groupv1.GroupRole) string {
	switch r {
	case groupv1.GroupRole_GROUP_ROLE_OWNER:
		return "the owner"
	case groupv1.GroupRole_GROUP_ROLE_ADMIN:
		return "an admin"
	}
	return "a member"
}
