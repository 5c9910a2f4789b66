package group

import (
	"cmp"
	"context"
	"slices"
	"strconv"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/umbra-e2ee/umbra/pkg/auth"
	"github.com/umbra-e2ee/umbra/pkg/e2ee"
	"github.com/umbra-e2ee/umbra/pkg/errs"
	groupv1 "github.com/umbra-e2ee/umbra/proto/umbra/group/v1"
	storagev1 "github.com/umbra-e2ee/umbra/proto/umbra/storage/group/v1"
)

// RequestJoin implements GroupService.
func (s *Server) RequestJoin(ctx context.Context, req *groupv1.RequestJoinRequest) (*groupv1.RequestJoinResponse, error) {
	now := s.now()
	var resp *groupv1.RequestJoinResponse
	err := s.updateAsCaller(ctx, req.GetGroupId(), func(tx Tx, p *auth.Principal) error {
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
	var resp *groupv1.ApproveJoinRequestResponse
	err := s.updateMembership(ctx, req.GetGroupId(), req.GetStatement(), func(tx Tx, p *auth.Principal, stm *statement, now time.Time) error {
		g, err := loadJoinRequest(tx, p, req.GetGroupId(), req.GetIdentity(), "approve join requests")
		if err != nil {
			return err
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
	err := s.updateAsCaller(ctx, req.GetGroupId(), func(tx Tx, p *auth.Principal) error {
		g, err := loadJoinRequest(tx, p, req.GetGroupId(), req.GetIdentity(), "decline join requests")
		if err != nil {
			return err
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

// loadJoinRequest loads group for a manager who may decide (what says how) on the
// pending join request of identity, which must be there.
func loadJoinRequest(tx Tx, p *auth.Principal, group, identity, what string) (*storagev1.GroupRecord, error) {
	g, _, err := loadAsManager(tx, p.AppID, group, p.Identity, what)
	if err != nil {
		return nil, err
	}
	if err := validTarget(p, "identity", identity, ""); err != nil {
		return nil, err
	}
	if jr, err := tx.JoinRequest(p.AppID, g.GetGroupId(), identity); err != nil {
		return nil, err
	} else if jr == nil {
		return nil, errs.NotFoundf("%s has no pending join request in group %s", identity, g.GetGroupId())
	}
	return g, nil
}

// ListJoinRequests implements GroupService.
func (s *Server) ListJoinRequests(ctx context.Context, req *groupv1.ListJoinRequestsRequest) (*groupv1.ListJoinRequestsResponse, error) {
	resp := &groupv1.ListJoinRequestsResponse{}
	err := s.viewAsCaller(ctx, req.GetGroupId(), func(tx Tx, p *auth.Principal) error {
		g, _, err := loadAsManager(tx, p.AppID, req.GetGroupId(), p.Identity, "list join requests")
		if err != nil {
			return err
		}
		size, after, err := readUintPage(req, DefaultPage, MaxPage, 0)
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
