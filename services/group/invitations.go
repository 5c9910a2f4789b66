package group

import (
	"bytes"
	"cmp"
	"context"
	"slices"
	"strconv"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/umbra-e2ee/umbra/internal/page"
	"github.com/umbra-e2ee/umbra/pkg/auth"
	"github.com/umbra-e2ee/umbra/pkg/e2ee"
	"github.com/umbra-e2ee/umbra/pkg/errs"
	groupv1 "github.com/umbra-e2ee/umbra/proto/umbra/group/v1"
	storagev1 "github.com/umbra-e2ee/umbra/proto/umbra/storage/group/v1"
)

// InviteMember implements GroupService.
func (s *Server) InviteMember(ctx context.Context, req *groupv1.InviteMemberRequest) (*groupv1.InviteMemberResponse, error) {
	var resp *groupv1.InviteMemberResponse
	err := s.updateMembership(ctx, req.GetGroupId(), req.GetStatement(), func(tx Tx, p *auth.Principal, stm *statement, now time.Time) error {
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
		if err := putTouched(tx, g, now); err != nil {
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
	var resp *groupv1.AcceptInvitationResponse
	err := s.updateMembership(ctx, req.GetGroupId(), req.GetStatement(), func(tx Tx, p *auth.Principal, stm *statement, now time.Time) error {
		inv, err := pendingInvitation(tx, p, req.GetGroupId())
		if err != nil {
			return err
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

// pendingInvitation returns the caller's pending invitation to group, which must be
// there.
func pendingInvitation(tx Tx, p *auth.Principal, group string) (*storagev1.GroupInvitationRecord, error) {
	inv, err := tx.Invitation(p.AppID, group, p.Identity)
	if err != nil {
		return nil, err
	}
	if inv == nil {
		return nil, errs.NotFoundf("%s has no pending invitation to group %s", p.Identity, group)
	}
	return inv, nil
}

// DeclineInvitation implements GroupService.
func (s *Server) DeclineInvitation(ctx context.Context, req *groupv1.DeclineInvitationRequest) (*groupv1.DeclineInvitationResponse, error) {
	err := s.updateAsCaller(ctx, req.GetGroupId(), func(tx Tx, p *auth.Principal) error {
		if _, err := pendingInvitation(tx, p, req.GetGroupId()); err != nil {
			return err
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
	size, tok, err := readPage(req, DefaultPage, MaxPage, 2)
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
