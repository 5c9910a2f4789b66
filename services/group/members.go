package group

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"math"
	"slices"
	"strconv"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/umbra-e2ee/umbra/internal/page"
	"github.com/umbra-e2ee/umbra/pkg/e2ee"
	"github.com/umbra-e2ee/umbra/pkg/errs"
	"github.com/umbra-e2ee/umbra/pkg/ident"
	groupv1 "github.com/umbra-e2ee/umbra/proto/umbra/group/v1"
	storagev1 "github.com/umbra-e2ee/umbra/proto/umbra/storage/v1"
)

// CreateGroup implements GroupService.
func (s *Server) CreateGroup(ctx context.Context, req *groupv1.CreateGroupRequest) (*groupv1.CreateGroupResponse, error) {
	p, err := s.groupCaller(ctx, req.GetGroupId())
	if err != nil {
		return nil, err
	}
	if err := validMode("encryption_mode", req.GetEncryptionMode()); err != nil {
		return nil, err
	}
	if err := validVisibility("history_visibility", req.GetHistoryVisibility()); err != nil {
		return nil, err
	}
	period, limit := s.cfg.RotationPeriod, s.cfg.MaxMessagesPerEpoch
	if pol := req.GetRotationPolicy(); pol != nil {
		if period, err = validRotationPolicy(pol); err != nil {
			return nil, err
		}
		limit = pol.GetMaxMessagesPerEpoch()
	}
	var others []string
	if len(req.GetMembers()) > 0 {
		ids, err := validIdentities("members", req.GetMembers(), 0, math.MaxInt)
		if err != nil {
			return nil, err
		}
		others = slices.DeleteFunc(ids, func(id string) bool { return id == p.Identity })
		if len(others) > MaxInitialMembers {
			return nil, errs.Invalidf("members names %d identities besides the caller; at most %d", len(others), MaxInitialMembers)
		}
	}
	if len(others)+1 > s.cfg.MaxMembers {
		return nil, errs.Preconditionf("a group has at most %d members; %d were named with the owner", s.cfg.MaxMembers, len(others)+1)
	}
	stm := s.readStatement(ctx, p, req.GetGroupId(), req.GetStatement())
	now := s.now()
	var resp *groupv1.CreateGroupResponse
	err = s.update(func(tx Tx) error {
		if _, err := tx.Group(p.AppID, req.GetGroupId()); err == nil {
			return errs.Existsf("group %s already exists", req.GetGroupId())
		} else if !isNotFound(err) {
			return err
		}
		g := &storagev1.GroupRecord{
			AppId:               p.AppID,
			GroupId:             req.GetGroupId(),
			Owner:               p.Identity,
			EncryptionMode:      uint32(req.GetEncryptionMode()),
			HistoryVisibility:   uint32(req.GetHistoryVisibility()),
			RotationPeriod:      durationOrNil(period),
			MaxMessagesPerEpoch: limit,
			EpochStartedAt:      timestamppb.New(now),
			MembershipVersion:   1,
			CreatedAt:           timestamppb.New(now),
			UpdatedAt:           timestamppb.New(now),
		}
		markRotation(g, groupv1.RotationReason_ROTATION_REASON_ENCRYPTION_ENABLED)
		if err := s.accept(tx, g, stm, e2ee.MembershipChange{Kind: e2ee.KindCreate, Subjects: others}, now); err != nil {
			return err
		}
		members := []*storagev1.GroupMemberRecord{}
		owner, err := addMember(tx, g, p.Identity, groupv1.GroupRole_GROUP_ROLE_OWNER, p.Identity, now)
		if err != nil {
			return err
		}
		members = append(members, owner)
		for _, id := range others {
			m, err := addMember(tx, g, id, groupv1.GroupRole_GROUP_ROLE_MEMBER, p.Identity, now)
			if err != nil {
				return err
			}
			members = append(members, m)
		}
		if err := tx.PutGroup(g); err != nil {
			return err
		}
		if err := s.toMembers(tx, g, &groupv1.GroupEvent{Kind: groupv1.GroupEventKind_GROUP_EVENT_KIND_CREATED, Actor: p.Identity, Identities: append([]string{p.Identity}, others...)}); err != nil {
			return err
		}
		v := viewFor(g, now, owner)
		for _, m := range members {
			v.Members = append(v.Members, memberView(m))
		}
		resp = &groupv1.CreateGroupResponse{Group: v}
		return nil
	})
	return resp, err
}

func isNotFound(err error) bool { return errors.Is(err, errs.ErrNotFound) }

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

// GetGroup implements GroupService.
func (s *Server) GetGroup(ctx context.Context, req *groupv1.GetGroupRequest) (*groupv1.GetGroupResponse, error) {
	p, err := s.groupCaller(ctx, req.GetGroupId())
	if err != nil {
		return nil, err
	}
	var resp *groupv1.GetGroupResponse
	err = s.store.View(func(tx Tx) error {
		g, me, err := loadAsMember(tx, p.AppID, req.GetGroupId(), p.Identity)
		if err != nil {
			return err
		}
		members, err := tx.AllMembers(p.AppID, req.GetGroupId())
		if err != nil {
			return err
		}
		sortMembers(members)
		v := viewFor(g, s.now(), me)
		for _, m := range members {
			v.Members = append(v.Members, memberView(m))
		}
		if isManager(me) {
			if v.Banned, err = tx.Bans(p.AppID, req.GetGroupId()); err != nil {
				return err
			}
		}
		resp = &groupv1.GetGroupResponse{Group: v}
		return nil
	})
	return resp, err
}

// ListMyGroups implements GroupService.
func (s *Server) ListMyGroups(ctx context.Context, req *groupv1.ListMyGroupsRequest) (*groupv1.ListMyGroupsResponse, error) {
	p, err := s.caller(ctx)
	if err != nil {
		return nil, err
	}
	size, err := page.Size(req.GetPageSize(), DefaultPage, MaxPage)
	if err != nil {
		return nil, err
	}
	tok, err := parsePageToken(req.GetPageToken(), 1)
	if err != nil {
		return nil, err
	}
	after := ""
	if tok != nil {
		if after = tok[0]; ident.ValidGroup("page_token", after) != nil {
			return nil, page.ErrMalformedToken
		}
	}
	resp := &groupv1.ListMyGroupsResponse{}
	now := s.now()
	err = s.store.View(func(tx Tx) error {
		return tx.MemberGroups(p.AppID, p.Identity, after, func(group string) (bool, error) {
			if len(resp.Groups) == size {
				resp.NextPageToken = pageToken(resp.Groups[size-1].GetGroupId())
				return false, nil
			}
			g, err := tx.Group(p.AppID, group)
			if err != nil {
				return false, err
			}
			me, err := tx.Member(p.AppID, group, p.Identity)
			if err != nil {
				return false, err
			}
			resp.Groups = append(resp.Groups, viewFor(g, now, me))
			return true, nil
		})
	})
	if err != nil {
		return nil, err
	}
	return resp, nil
}

// DeleteGroup implements GroupService.
func (s *Server) DeleteGroup(ctx context.Context, req *groupv1.DeleteGroupRequest) (*groupv1.DeleteGroupResponse, error) {
	p, err := s.groupCaller(ctx, req.GetGroupId())
	if err != nil {
		return nil, err
	}
	err = s.update(func(tx Tx) error {
		g, _, err := loadAsOwner(tx, p.AppID, req.GetGroupId(), p.Identity, "delete it")
		if err != nil {
			return err
		}
		return s.deleteGroup(tx, g, p.Identity)
	})
	if err != nil {
		return nil, err
	}
	return &groupv1.DeleteGroupResponse{}, nil
}

// deleteGroup deletes g and tells its members.
func (s *Server) deleteGroup(tx Tx, g *storagev1.GroupRecord, actor string) error {
	ids, err := memberIDs(tx, g)
	if err != nil {
		return err
	}
	if err := tx.DeleteGroupData(g); err != nil {
		return err
	}
	return s.emit(tx, g.GetAppId(), &groupv1.GroupEvent{Kind: groupv1.GroupEventKind_GROUP_EVENT_KIND_DELETED, GroupId: g.GetGroupId(), Actor: actor, Epoch: g.GetEpoch()}, ids)
}

// AddMembers implements GroupService.
func (s *Server) AddMembers(ctx context.Context, req *groupv1.AddMembersRequest) (*groupv1.AddMembersResponse, error) {
	p, err := s.groupCaller(ctx, req.GetGroupId())
	if err != nil {
		return nil, err
	}
	stm := s.readStatement(ctx, p, req.GetGroupId(), req.GetStatement())
	now := s.now()
	var resp *groupv1.AddMembersResponse
	err = s.update(func(tx Tx) error {
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
	p, err := s.groupCaller(ctx, req.GetGroupId())
	if err != nil {
		return nil, err
	}
	stm := s.readStatement(ctx, p, req.GetGroupId(), req.GetStatement())
	now := s.now()
	var resp *groupv1.RemoveMemberResponse
	err = s.update(func(tx Tx) error {
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
	p, err := s.groupCaller(ctx, req.GetGroupId())
	if err != nil {
		return nil, err
	}
	stm := s.readStatement(ctx, p, req.GetGroupId(), req.GetStatement())
	now := s.now()
	var resp *groupv1.BanMemberResponse
	err = s.update(func(tx Tx) error {
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
			touch(g, now)
			if err := tx.PutGroup(g); err != nil {
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
	p, err := s.groupCaller(ctx, req.GetGroupId())
	if err != nil {
		return nil, err
	}
	stm := s.readStatement(ctx, p, req.GetGroupId(), req.GetStatement())
	now := s.now()
	err = s.update(func(tx Tx) error {
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
		touch(g, now)
		if err := tx.PutGroup(g); err != nil {
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
	p, err := s.groupCaller(ctx, req.GetGroupId())
	if err != nil {
		return nil, err
	}
	stm := s.readStatement(ctx, p, req.GetGroupId(), req.GetStatement())
	now := s.now()
	resp := &groupv1.LeaveGroupResponse{}
	err = s.update(func(tx Tx) error {
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
	p, err := s.groupCaller(ctx, req.GetGroupId())
	if err != nil {
		return nil, err
	}
	stm := s.readStatement(ctx, p, req.GetGroupId(), req.GetStatement())
	now := s.now()
	var resp *groupv1.SetRoleResponse
	err = s.update(func(tx Tx) error {
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
		touch(g, now)
		if err := tx.PutGroup(g); err != nil {
			return err
		}
		resp = &groupv1.SetRoleResponse{Member: memberView(m)}
		return s.toMembers(tx, g, &groupv1.GroupEvent{Kind: groupv1.GroupEventKind_GROUP_EVENT_KIND_ROLE_CHANGED, Actor: p.Identity, Identities: []string{m.GetIdentity()}, Role: req.GetRole()})
	})
	return resp, err
}

// TransferOwnership implements GroupService.
func (s *Server) TransferOwnership(ctx context.Context, req *groupv1.TransferOwnershipRequest) (*groupv1.TransferOwnershipResponse, error) {
	p, err := s.groupCaller(ctx, req.GetGroupId())
	if err != nil {
		return nil, err
	}
	stm := s.readStatement(ctx, p, req.GetGroupId(), req.GetStatement())
	now := s.now()
	var resp *groupv1.TransferOwnershipResponse
	err = s.update(func(tx Tx) error {
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
		touch(g, now)
		if err := tx.PutGroup(g); err != nil {
			return err
		}
		resp = &groupv1.TransferOwnershipResponse{Group: viewFor(g, now, me)}
		return s.toMembers(tx, g, &groupv1.GroupEvent{Kind: groupv1.GroupEventKind_GROUP_EVENT_KIND_ROLE_CHANGED, Actor: p.Identity, Identities: []string{next.GetIdentity()}, Role: groupv1.GroupRole_GROUP_ROLE_OWNER})
	})
	return resp, err
}

// RequestJoin implements GroupService.
func (s *Server) RequestJoin(ctx context.Context, req *groupv1.RequestJoinRequest) (*groupv1.RequestJoinResponse, error) {
	p, err := s.groupCaller(ctx, req.GetGroupId())
	if err != nil {
		return nil, err
	}
	now := s.now()
	var resp *groupv1.RequestJoinResponse
	err = s.update(func(tx Tx) error {
		g, err := tx.Group(p.AppID, req.GetGroupId())
		if err != nil {
			return err
		}
		app, group := p.AppID, g.GetGroupId()
		if m, err := tx.Member(app, group, p.Identity); err != nil {
			return err
		} else if m != nil {
			return errs.Existsf("%s is a member of group %s already", p.Identity, group)
		}
		if ban, err := tx.Ban(app, group, p.Identity); err != nil {
			return err
		} else if ban != nil {
			return errs.Permissionf("%s is banned from group %s and may not ask to join", p.Identity, group)
		}
		jr, err := tx.JoinRequest(app, group, p.Identity)
		if err != nil {
			return err
		}
		if jr == nil {
			if int(g.GetJoinRequestCount()) >= s.cfg.MaxJoinRequests {
				return errs.Preconditionf("group %s has %d pending join requests, its limit: try again later", group, g.GetJoinRequestCount())
			}
			g.LastSequence++
			g.JoinRequestCount++
			jr = &storagev1.GroupJoinRequestRecord{Identity: p.Identity, CreatedAt: timestamppb.New(now), Sequence: g.GetLastSequence()}
			if err := tx.PutJoinRequest(app, group, jr); err != nil {
				return err
			}
			if err := tx.PutGroup(g); err != nil {
				return err
			}
			if err := s.toManagers(tx, g, &groupv1.GroupEvent{Kind: groupv1.GroupEventKind_GROUP_EVENT_KIND_JOIN_REQUESTED, Actor: p.Identity, Identities: []string{p.Identity}}); err != nil {
				return err
			}
		}
		resp = &groupv1.RequestJoinResponse{JoinRequest: &groupv1.JoinRequest{GroupId: group, Identity: jr.GetIdentity(), CreatedAt: jr.GetCreatedAt()}}
		return nil
	})
	return resp, err
}

// ApproveJoinRequest implements GroupService.
func (s *Server) ApproveJoinRequest(ctx context.Context, req *groupv1.ApproveJoinRequestRequest) (*groupv1.ApproveJoinRequestResponse, error) {
	p, err := s.groupCaller(ctx, req.GetGroupId())
	if err != nil {
		return nil, err
	}
	stm := s.readStatement(ctx, p, req.GetGroupId(), req.GetStatement())
	now := s.now()
	var resp *groupv1.ApproveJoinRequestResponse
	err = s.update(func(tx Tx) error {
		g, _, err := loadAsManager(tx, p.AppID, req.GetGroupId(), p.Identity, "approve join requests")
		if err != nil {
			return err
		}
		if err := validTarget(p, "identity", req.GetIdentity(), ""); err != nil {
			return err
		}
		if jr, err := tx.JoinRequest(p.AppID, g.GetGroupId(), req.GetIdentity()); err != nil {
			return err
		} else if jr == nil {
			return errs.NotFoundf("%s has no pending join request in group %s", req.GetIdentity(), g.GetGroupId())
		}
		if int(g.GetMemberCount()) >= s.cfg.MaxMembers {
			return errs.Preconditionf("group %s has %d members, its limit", g.GetGroupId(), g.GetMemberCount())
		}
		if err := s.accept(tx, g, stm, e2ee.MembershipChange{Kind: e2ee.KindApproveJoin, Subjects: []string{req.GetIdentity()}}, now); err != nil {
			return err
		}
		m, err := addMember(tx, g, req.GetIdentity(), groupv1.GroupRole_GROUP_ROLE_MEMBER, p.Identity, now)
		if err != nil {
			return err
		}
		resp = &groupv1.ApproveJoinRequestResponse{Member: memberView(m)}
		return s.membersJoined(tx, g, p.Identity, []string{m.GetIdentity()}, now)
	})
	return resp, err
}

// DeclineJoinRequest implements GroupService.
func (s *Server) DeclineJoinRequest(ctx context.Context, req *groupv1.DeclineJoinRequestRequest) (*groupv1.DeclineJoinRequestResponse, error) {
	p, err := s.groupCaller(ctx, req.GetGroupId())
	if err != nil {
		return nil, err
	}
	err = s.update(func(tx Tx) error {
		g, _, err := loadAsManager(tx, p.AppID, req.GetGroupId(), p.Identity, "decline join requests")
		if err != nil {
			return err
		}
		if err := validTarget(p, "identity", req.GetIdentity(), ""); err != nil {
			return err
		}
		if jr, err := tx.JoinRequest(p.AppID, g.GetGroupId(), req.GetIdentity()); err != nil {
			return err
		} else if jr == nil {
			return errs.NotFoundf("%s has no pending join request in group %s", req.GetIdentity(), g.GetGroupId())
		}
		if err := tx.DeleteJoinRequest(p.AppID, g.GetGroupId(), req.GetIdentity()); err != nil {
			return err
		}
		g.JoinRequestCount--
		if err := tx.PutGroup(g); err != nil {
			return err
		}
		return s.toOutsider(tx, g, &groupv1.GroupEvent{Kind: groupv1.GroupEventKind_GROUP_EVENT_KIND_JOIN_REQUEST_DECLINED, Actor: p.Identity, Identities: []string{req.GetIdentity()}}, req.GetIdentity())
	})
	if err != nil {
		return nil, err
	}
	return &groupv1.DeclineJoinRequestResponse{}, nil
}

// ListJoinRequests implements GroupService.
func (s *Server) ListJoinRequests(ctx context.Context, req *groupv1.ListJoinRequestsRequest) (*groupv1.ListJoinRequestsResponse, error) {
	p, err := s.groupCaller(ctx, req.GetGroupId())
	if err != nil {
		return nil, err
	}
	resp := &groupv1.ListJoinRequestsResponse{}
	err = s.store.View(func(tx Tx) error {
		g, _, err := loadAsManager(tx, p.AppID, req.GetGroupId(), p.Identity, "list join requests")
		if err != nil {
			return err
		}
		size, err := page.Size(req.GetPageSize(), DefaultPage, MaxPage)
		if err != nil {
			return err
		}
		after, err := uintPageToken(req.GetPageToken(), 0)
		if err != nil {
			return err
		}
		all, err := tx.JoinRequests(p.AppID, g.GetGroupId())
		if err != nil {
			return err
		}
		slices.SortFunc(all, func(a, b *storagev1.GroupJoinRequestRecord) int { return cmp.Compare(a.GetSequence(), b.GetSequence()) })
		for _, jr := range all {
			if jr.GetSequence() <= after {
				continue
			}
			if len(resp.JoinRequests) == size {
				resp.NextPageToken = pageToken(strconv.FormatUint(after, 10))
				break
			}
			after = jr.GetSequence()
			resp.JoinRequests = append(resp.JoinRequests, &groupv1.JoinRequest{GroupId: g.GetGroupId(), Identity: jr.GetIdentity(), CreatedAt: jr.GetCreatedAt()})
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return resp, nil
}

// InviteMember implements GroupService.
func (s *Server) InviteMember(ctx context.Context, req *groupv1.InviteMemberRequest) (*groupv1.InviteMemberResponse, error) {
	p, err := s.groupCaller(ctx, req.GetGroupId())
	if err != nil {
		return nil, err
	}
	stm := s.readStatement(ctx, p, req.GetGroupId(), req.GetStatement())
	now := s.now()
	var resp *groupv1.InviteMemberResponse
	err = s.update(func(tx Tx) error {
		g, _, err := loadAsManager(tx, p.AppID, req.GetGroupId(), p.Identity, "invite")
		if err != nil {
			return err
		}
		if err := validTarget(p, "identity", req.GetIdentity(), ""); err != nil {
			return err
		}
		ttl, err := s.invitationTTL(req)
		if err != nil {
			return err
		}
		app, group, id := p.AppID, g.GetGroupId(), req.GetIdentity()
		if m, err := tx.Member(app, group, id); err != nil {
			return err
		} else if m != nil {
			return errs.Existsf("%s is a member of group %s already", id, group)
		}
		if ban, err := tx.Ban(app, group, id); err != nil {
			return err
		} else if ban != nil {
			return errs.Preconditionf("%s is banned from group %s: unban it before inviting it", id, group)
		}
		old, err := tx.Invitation(app, group, id)
		if err != nil {
			return err
		}
		if old == nil && int(g.GetInvitationCount()) >= s.cfg.MaxInvitations {
			return errs.Preconditionf("group %s has %d pending invitations, its limit", group, g.GetInvitationCount())
		}
		if stm.err != nil {
			return stm.err
		}
		st := stm.st
		if st.Kind == e2ee.KindInvite && st.ExpiresAt.Sub(st.CreatedAt) != ttl {
			return errs.Invalidf("statement's invitation lasts %s (expires_at - created_at); the request asks for %s", st.ExpiresAt.Sub(st.CreatedAt), ttl)
		}
		if err := s.accept(tx, g, stm, e2ee.MembershipChange{Kind: e2ee.KindInvite, Subjects: []string{id}}, now); err != nil {
			return err
		}
		if old == nil {
			g.InvitationCount++
		}
		touch(g, now)
		if err := tx.PutGroup(g); err != nil {
			return err
		}
		inv := &storagev1.GroupInvitationRecord{GroupId: group, Invitee: id, Inviter: p.Identity, CreatedAt: timestamppb.New(now), ExpiresAt: timestamppb.New(st.ExpiresAt), StatementHash: st.Hash}
		if err := tx.PutInvitation(app, inv); err != nil {
			return err
		}
		resp = &groupv1.InviteMemberResponse{Invitation: invitationView(inv)}
		return s.toOutsider(tx, g, &groupv1.GroupEvent{Kind: groupv1.GroupEventKind_GROUP_EVENT_KIND_INVITED, Actor: p.Identity, Identities: []string{id}, ExpiresAt: inv.GetExpiresAt()}, id)
	})
	return resp, err
}

// invitationTTL is how long the invitation req asks for lasts.
func (s *Server) invitationTTL(req *groupv1.InviteMemberRequest) (time.Duration, error) {
	d := req.GetTtl()
	if d == nil {
		return s.cfg.InvitationTTL, nil
	}
	if err := d.CheckValid(); err != nil {
		return 0, errs.Invalidf("ttl is not a valid duration: %v", err)
	}
	switch v := d.AsDuration(); {
	case v == 0:
		return s.cfg.InvitationTTL, nil
	case v < MinInvitationTTL || v > MaxInvitationTTL:
		return 0, errs.Invalidf("ttl %s is out of range: 0 for the default, otherwise %s to %s", v, MinInvitationTTL, MaxInvitationTTL)
	default:
		return v, nil
	}
}

func invitationView(inv *storagev1.GroupInvitationRecord) *groupv1.Invitation {
	return &groupv1.Invitation{GroupId: inv.GetGroupId(), Invitee: inv.GetInvitee(), Inviter: inv.GetInviter(), CreatedAt: inv.GetCreatedAt(), ExpiresAt: inv.GetExpiresAt()}
}

// AcceptInvitation implements GroupService.
func (s *Server) AcceptInvitation(ctx context.Context, req *groupv1.AcceptInvitationRequest) (*groupv1.AcceptInvitationResponse, error) {
	p, err := s.groupCaller(ctx, req.GetGroupId())
	if err != nil {
		return nil, err
	}
	stm := s.readStatement(ctx, p, req.GetGroupId(), req.GetStatement())
	now := s.now()
	var resp *groupv1.AcceptInvitationResponse
	err = s.update(func(tx Tx) error {
		inv, err := tx.Invitation(p.AppID, req.GetGroupId(), p.Identity)
		if err != nil {
			return err
		}
		if inv == nil {
			return errs.NotFoundf("%s has no pending invitation to group %s", p.Identity, req.GetGroupId())
		}
		if !now.Before(inv.GetExpiresAt().AsTime()) {
			return errs.Preconditionf("the invitation to group %s expired at %s: ask for a new one", req.GetGroupId(), inv.GetExpiresAt().AsTime().Format(time.RFC3339))
		}
		g, err := tx.Group(p.AppID, req.GetGroupId())
		if err != nil {
			return err
		}
		if int(g.GetMemberCount()) >= s.cfg.MaxMembers {
			return errs.Preconditionf("group %s has %d members, its limit", g.GetGroupId(), g.GetMemberCount())
		}
		if stm.err != nil {
			return stm.err
		}
		if !bytes.Equal(stm.st.InvitationHash, inv.GetStatementHash()) {
			return errs.Preconditionf("statement accepts invitation %x; the pending invitation to group %s is %x (it was renewed): accept that one", stm.st.InvitationHash, g.GetGroupId(), inv.GetStatementHash())
		}
		if err := s.accept(tx, g, stm, e2ee.MembershipChange{Kind: e2ee.KindAcceptInvitation}, now); err != nil {
			return err
		}
		m, err := addMember(tx, g, p.Identity, groupv1.GroupRole_GROUP_ROLE_MEMBER, inv.GetInviter(), now)
		if err != nil {
			return err
		}
		resp = &groupv1.AcceptInvitationResponse{Member: memberView(m)}
		return s.membersJoined(tx, g, p.Identity, []string{p.Identity}, now)
	})
	return resp, err
}

// DeclineInvitation implements GroupService.
func (s *Server) DeclineInvitation(ctx context.Context, req *groupv1.DeclineInvitationRequest) (*groupv1.DeclineInvitationResponse, error) {
	p, err := s.groupCaller(ctx, req.GetGroupId())
	if err != nil {
		return nil, err
	}
	err = s.update(func(tx Tx) error {
		inv, err := tx.Invitation(p.AppID, req.GetGroupId(), p.Identity)
		if err != nil {
			return err
		}
		if inv == nil {
			return errs.NotFoundf("%s has no pending invitation to group %s", p.Identity, req.GetGroupId())
		}
		g, err := tx.Group(p.AppID, req.GetGroupId())
		if err != nil {
			return err
		}
		if err := tx.DeleteInvitation(p.AppID, g.GetGroupId(), p.Identity); err != nil {
			return err
		}
		g.InvitationCount--
		if err := tx.PutGroup(g); err != nil {
			return err
		}
		return s.toManagers(tx, g, &groupv1.GroupEvent{Kind: groupv1.GroupEventKind_GROUP_EVENT_KIND_INVITATION_DECLINED, Actor: p.Identity, Identities: []string{p.Identity}})
	})
	if err != nil {
		return nil, err
	}
	return &groupv1.DeclineInvitationResponse{}, nil
}

// ListMyInvitations implements GroupService.
func (s *Server) ListMyInvitations(ctx context.Context, req *groupv1.ListMyInvitationsRequest) (*groupv1.ListMyInvitationsResponse, error) {
	p, err := s.caller(ctx)
	if err != nil {
		return nil, err
	}
	size, err := page.Size(req.GetPageSize(), DefaultPage, MaxPage)
	if err != nil {
		return nil, err
	}
	tok, err := parsePageToken(req.GetPageToken(), 2)
	if err != nil {
		return nil, err
	}
	var afterNanos int64
	var afterGroup string
	if tok != nil {
		if afterNanos, err = strconv.ParseInt(tok[0], 10, 64); err != nil {
			return nil, page.ErrMalformedToken
		}
		afterGroup = tok[1]
	}
	now := s.now()
	var all []*storagev1.GroupInvitationRecord
	if err := s.store.View(func(tx Tx) error {
		all, err = tx.InviteeInvitations(p.AppID, p.Identity)
		return err
	}); err != nil {
		return nil, err
	}
	// Newest first; ties by group id.
	key := func(inv *storagev1.GroupInvitationRecord) (int64, string) {
		return inv.GetCreatedAt().AsTime().UnixNano(), inv.GetGroupId()
	}
	slices.SortFunc(all, func(a, b *storagev1.GroupInvitationRecord) int {
		an, ag := key(a)
		bn, bg := key(b)
		return cmp.Or(cmp.Compare(bn, an), cmp.Compare(ag, bg))
	})
	resp := &groupv1.ListMyInvitationsResponse{}
	for _, inv := range all {
		n, g := key(inv)
		if tok != nil && (n > afterNanos || n == afterNanos && g <= afterGroup) {
			continue // on an earlier page
		}
		if !now.Before(inv.GetExpiresAt().AsTime()) {
			continue
		}
		if len(resp.Invitations) == size {
			last := resp.Invitations[size-1]
			resp.NextPageToken = pageToken(strconv.FormatInt(last.GetCreatedAt().AsTime().UnixNano(), 10), last.GetGroupId())
			break
		}
		resp.Invitations = append(resp.Invitations, invitationView(inv))
	}
	return resp, nil
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
