package sdk

import (
	"context"
	"fmt"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/umbra-e2ee/umbra/pkg/e2ee"
	groupv1 "github.com/umbra-e2ee/umbra/proto/umbra/group/v1"
)

// How someone joins a group: join requests and invitations.

// RequestJoin asks to join groupID; an admin or the owner approves or declines.
func (c *Client) RequestJoin(ctx context.Context, groupID string) (*groupv1.JoinRequest, error) {
	resp, err := c.groupClient().RequestJoin(ctx, &groupv1.RequestJoinRequest{GroupId: groupID})
	if err != nil {
		return nil, err
	}
	return resp.GetJoinRequest(), nil
}

// ApproveJoin accepts identity's pending join request.
func (g *Group) ApproveJoin(ctx context.Context, identity string) error {
	err := g.change(ctx, subjectChange(e2ee.KindApproveJoin, identity), nil, func(st *e2ee.SignedMembershipStatement) error {
		_, err := g.c.groupClient().ApproveJoinRequest(ctx, &groupv1.ApproveJoinRequestRequest{GroupId: g.ID, Identity: identity, Statement: st})
		return err
	})
	if err != nil {
		return err
	}
	g.c.groups.update(g.ID, func(s *groupState) { s.rotationRequired = true })
	return nil
}

// DeclineJoin refuses identity's pending join request.
func (g *Group) DeclineJoin(ctx context.Context, identity string) error {
	_, err := g.c.groupClient().DeclineJoinRequest(ctx, &groupv1.DeclineJoinRequestRequest{GroupId: g.ID, Identity: identity})
	return err
}

// JoinRequests lists the pending join requests, oldest first.
func (g *Group) JoinRequests(ctx context.Context) ([]*groupv1.JoinRequest, error) {
	return allPages(func(token string) ([]*groupv1.JoinRequest, string, error) {
		resp, err := g.c.groupClient().ListJoinRequests(ctx, &groupv1.ListJoinRequestsRequest{GroupId: g.ID, PageToken: token})
		return resp.GetJoinRequests(), resp.GetNextPageToken(), err
	})
}

// Invite invites identity; it joins when it accepts. ttl 0 means the service's
// default, 7 days.
func (g *Group) Invite(ctx context.Context, identity string, ttl time.Duration) (*groupv1.Invitation, error) {
	if ttl <= 0 {
		ttl = defaultInvitationTTL
	}
	var resp *groupv1.InviteMemberResponse
	err := g.change(ctx, subjectChange(e2ee.KindInvite, identity), func(_ *e2ee.Membership, ch *e2ee.MembershipChange) (bool, error) {
		ch.ExpiresAt = g.c.cfg.Now().Add(ttl)
		return false, nil
	}, func(st *e2ee.SignedMembershipStatement) (err error) {
		resp, err = g.c.groupClient().InviteMember(ctx, &groupv1.InviteMemberRequest{GroupId: g.ID, Identity: identity, Ttl: durationpb.New(ttl), Statement: st})
		return err
	})
	if err != nil {
		return nil, err
	}
	return resp.GetInvitation(), nil
}

// AcceptInvitation accepts the user's pending invitation to groupID and returns the
// group's handle.
//
// Before it accepts, it verifies the group's membership chain (an invitee may read it):
// the invitation it accepts is the pending one that chain holds, signed by an admin or
// the owner, and the members it joins are those the chain yields.
func (c *Client) AcceptInvitation(ctx context.Context, groupID string) (*Group, error) {
	me, err := c.Identity(ctx)
	if err != nil {
		return nil, err
	}
	g := c.Group(groupID)
	err = g.change(ctx, e2ee.MembershipChange{Kind: e2ee.KindAcceptInvitation}, func(m *e2ee.Membership, ch *e2ee.MembershipChange) (bool, error) {
		hash, _, ok := m.Invitation(me)
		if !ok {
			return false, fmt.Errorf("%w: the verified membership chain of %s holds no pending invitation of %s", e2ee.ErrNotMember, groupID, me)
		}
		ch.InvitationHash = hash
		return false, nil
	}, func(st *e2ee.SignedMembershipStatement) error {
		_, err := c.groupClient().AcceptInvitation(ctx, &groupv1.AcceptInvitationRequest{GroupId: groupID, Statement: st})
		return err
	})
	if err != nil {
		return nil, err
	}
	c.groups.update(groupID, func(s *groupState) { s.rotationRequired = true })
	return g, nil
}

// DeclineInvitation declines the user's pending invitation to groupID.
func (c *Client) DeclineInvitation(ctx context.Context, groupID string) error {
	_, err := c.groupClient().DeclineInvitation(ctx, &groupv1.DeclineInvitationRequest{GroupId: groupID})
	return err
}

// Invitations lists the user's pending invitations, newest first.
func (c *Client) Invitations(ctx context.Context) ([]*groupv1.Invitation, error) {
	return allPages(func(token string) ([]*groupv1.Invitation, string, error) {
		resp, err := c.groupClient().ListMyInvitations(ctx, &groupv1.ListMyInvitationsRequest{PageToken: token})
		return resp.GetInvitations(), resp.GetNextPageToken(), err
	})
}
