package group

import (
	"context"
	"math"
	"slices"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/umbra-e2ee/umbra/internal/page"
	"github.com/umbra-e2ee/umbra/pkg/auth"
	"github.com/umbra-e2ee/umbra/pkg/e2ee"
	"github.com/umbra-e2ee/umbra/pkg/errs"
	"github.com/umbra-e2ee/umbra/pkg/ident"
	groupv1 "github.com/umbra-e2ee/umbra/proto/umbra/group/v1"
	storagev1 "github.com/umbra-e2ee/umbra/proto/umbra/storage/group/v1"
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

// GetGroup implements GroupService.
func (s *Server) GetGroup(ctx context.Context, req *groupv1.GetGroupRequest) (*groupv1.GetGroupResponse, error) {
	var resp *groupv1.GetGroupResponse
	err := s.viewAsCaller(ctx, req.GetGroupId(), func(tx Tx, p *auth.Principal) error {
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
	size, tok, err := readPage(req, DefaultPage, MaxPage, 1)
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
	err := s.updateAsCaller(ctx, req.GetGroupId(), func(tx Tx, p *auth.Principal) error {
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
