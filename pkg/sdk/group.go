package sdk

import (
	"context"
	"fmt"
	"slices"

	"github.com/umbra-e2ee/umbra/pkg/e2ee"
	groupv1 "github.com/umbra-e2ee/umbra/proto/umbra/group/v1"
)

// Group is the user's handle on one group: its membership calls, and encrypting,
// decrypting and sending its messages. Handles are cheap; the epoch keys and the
// members seen are kept per Client, so every handle of a group shares them.
type Group struct {
	c  *Client
	ID string
}

// CreateGroupOptions are the settings of a new group.
type CreateGroupOptions struct {
	// Members besides the creator, who becomes the owner: up to 1,000 identities.
	Members []string
	// EncryptionMode; zero means ENCRYPTION_MODE_REQUIRED.
	EncryptionMode groupv1.EncryptionMode
	// HistoryVisibility; zero means HISTORY_VISIBILITY_SINCE_JOIN.
	HistoryVisibility groupv1.HistoryVisibility
	// RotationPolicy; nil means the server's default.
	RotationPolicy *groupv1.RotationPolicy
}

func (c *Client) groupClient() groupv1.GroupServiceClient {
	return groupv1.NewGroupServiceClient(c.conn)
}

// Group returns a handle on groupID without asking the server anything.
func (c *Client) Group(groupID string) *Group { return &Group{c: c, ID: groupID} }

// CreateGroup creates groupID (a group identity the app resolved) with the user as its
// owner. Unless encryption is OFF, its first encrypted message commits epoch 1.
func (c *Client) CreateGroup(ctx context.Context, groupID string, opts CreateGroupOptions) (*Group, *groupv1.Group, error) {
	if opts.EncryptionMode == 0 {
		opts.EncryptionMode = groupv1.EncryptionMode_ENCRYPTION_MODE_REQUIRED
	}
	if opts.HistoryVisibility == 0 {
		opts.HistoryVisibility = groupv1.HistoryVisibility_HISTORY_VISIBILITY_SINCE_JOIN
	}
	me, err := c.Identity(ctx)
	if err != nil {
		return nil, nil, err
	}
	others := slices.DeleteFunc(slices.Clone(opts.Members), func(id string) bool { return id == me })
	g := c.Group(groupID)
	var resp *groupv1.CreateGroupResponse
	err = g.change(ctx, e2ee.MembershipChange{Kind: e2ee.KindCreate, Subjects: others}, nil, func(st *e2ee.SignedMembershipStatement) (err error) {
		resp, err = c.groupClient().CreateGroup(ctx, &groupv1.CreateGroupRequest{
			GroupId:           groupID,
			Members:           opts.Members,
			EncryptionMode:    opts.EncryptionMode,
			HistoryVisibility: opts.HistoryVisibility,
			RotationPolicy:    opts.RotationPolicy,
			Statement:         st,
		})
		return err
	})
	if err != nil {
		return nil, nil, err
	}
	g.observe(resp.GetGroup())
	return g, resp.GetGroup(), nil
}

// LoadGroup returns a handle on groupID and the group with its members, which the
// user must be one of.
func (c *Client) LoadGroup(ctx context.Context, groupID string) (*Group, *groupv1.Group, error) {
	g := c.Group(groupID)
	info, err := g.Info(ctx)
	if err != nil {
		return nil, nil, err
	}
	return g, info, nil
}

// Info returns the group with its members (and bans for admins and the owner).
func (g *Group) Info(ctx context.Context) (*groupv1.Group, error) {
	resp, err := g.c.groupClient().GetGroup(ctx, &groupv1.GetGroupRequest{GroupId: g.ID})
	if err != nil {
		return nil, err
	}
	g.observe(resp.GetGroup())
	return resp.GetGroup(), nil
}

// observe records what a reply says about the group: its mode and epoch. (Its member
// list is the service's word, which decides nothing: see Membership.)
func (g *Group) observe(info *groupv1.Group) {
	if info == nil {
		return
	}
	g.c.groups.update(g.ID, func(s *groupState) {
		s.mode = info.GetEncryptionMode()
		if info.GetEpoch() >= s.current {
			s.current = info.GetEpoch()
			s.rotationRequired = info.GetRotationRequired()
		}
	})
}

// groupReply is a group service reply that carries the group as the call left it.
type groupReply interface{ GetGroup() *groupv1.Group }

// observed records what reply says about the group (observe) if err, the error of the
// call that returned it, is nil, and returns err.
func (g *Group) observed(reply groupReply, err error) error {
	if err == nil {
		g.observe(reply.GetGroup())
	}
	return err
}

// MyGroups lists the groups the user is a member of, without their members.
func (c *Client) MyGroups(ctx context.Context) ([]*groupv1.Group, error) {
	return allPages(func(token string) ([]*groupv1.Group, string, error) {
		resp, err := c.groupClient().ListMyGroups(ctx, &groupv1.ListMyGroupsRequest{PageToken: token})
		return resp.GetGroups(), resp.GetNextPageToken(), err
	})
}

// Delete deletes the group. Owner only.
func (g *Group) Delete(ctx context.Context) error {
	_, err := g.c.groupClient().DeleteGroup(ctx, &groupv1.DeleteGroupRequest{GroupId: g.ID})
	if err == nil {
		g.c.groups.forget(g.ID)
	}
	return err
}

// Add adds identities as members; it returns those that became members (identities
// that are members already are left out of the signed statement). The next encrypted
// message commits a new epoch that includes them.
func (g *Group) Add(ctx context.Context, identities ...string) ([]string, error) {
	var resp *groupv1.AddMembersResponse
	err := g.change(ctx, e2ee.MembershipChange{Kind: e2ee.KindAdd}, func(m *e2ee.Membership, ch *e2ee.MembershipChange) (bool, error) {
		ch.Subjects = nil
		for _, id := range identities {
			if m.Role(id) == e2ee.RoleNone && !slices.Contains(ch.Subjects, id) {
				ch.Subjects = append(ch.Subjects, id)
			}
		}
		return len(ch.Subjects) == 0, nil
	}, func(st *e2ee.SignedMembershipStatement) (err error) {
		parsed, err := e2ee.ParseMembershipStatement(st)
		if err != nil {
			return err
		}
		resp, err = g.c.groupClient().AddMembers(ctx, &groupv1.AddMembersRequest{GroupId: g.ID, Identities: parsed.Subjects, Statement: st})
		return err
	})
	if err := g.observed(resp, err); err != nil {
		return nil, err
	}
	return resp.GetAdded(), nil
}

// Remove removes (kicks) a member. The next encrypted message commits a new epoch
// whose key the removed member does not get.
func (g *Group) Remove(ctx context.Context, identity string) error {
	var resp *groupv1.RemoveMemberResponse
	err := g.change(ctx, subjectChange(e2ee.KindRemove, identity), nil, func(st *e2ee.SignedMembershipStatement) (err error) {
		resp, err = g.c.groupClient().RemoveMember(ctx, &groupv1.RemoveMemberRequest{GroupId: g.ID, Identity: identity, Statement: st})
		return err
	})
	return g.observed(resp, err)
}

// Ban bans identity, removing it if it is a member; it reports whether it was one.
func (g *Group) Ban(ctx context.Context, identity string) (removed bool, err error) {
	var resp *groupv1.BanMemberResponse
	err = g.change(ctx, subjectChange(e2ee.KindBan, identity), func(m *e2ee.Membership, _ *e2ee.MembershipChange) (bool, error) {
		return m.Banned(identity), nil // banned already: nothing to state
	}, func(st *e2ee.SignedMembershipStatement) (err error) {
		resp, err = g.c.groupClient().BanMember(ctx, &groupv1.BanMemberRequest{GroupId: g.ID, Identity: identity, Statement: st})
		return err
	})
	if err := g.observed(resp, err); err != nil {
		return false, err
	}
	return resp.GetRemoved(), nil
}

// Unban lifts a ban; it does not make the identity a member again.
func (g *Group) Unban(ctx context.Context, identity string) error {
	return g.change(ctx, subjectChange(e2ee.KindUnban, identity), nil, func(st *e2ee.SignedMembershipStatement) error {
		_, err := g.c.groupClient().UnbanMember(ctx, &groupv1.UnbanMemberRequest{GroupId: g.ID, Identity: identity, Statement: st})
		return err
	})
}

// subjectChange is a change of kind about one identity.
func subjectChange(kind e2ee.MembershipKind, identity string) e2ee.MembershipChange {
	return e2ee.MembershipChange{Kind: kind, Subjects: []string{identity}}
}

// Leave removes the user from the group. An owner who leaves hands the group to the
// longest-serving admin or member; the reply names the new owner, or says that the
// group was deleted because the user was its last member.
func (g *Group) Leave(ctx context.Context) (*groupv1.LeaveGroupResponse, error) {
	me, err := g.c.Identity(ctx)
	if err != nil {
		return nil, err
	}
	var resp *groupv1.LeaveGroupResponse
	err = g.change(ctx, e2ee.MembershipChange{Kind: e2ee.KindLeave}, func(m *e2ee.Membership, ch *e2ee.MembershipChange) (bool, error) {
		ch.Subjects = nil
		if m.Role(me) != e2ee.RoleOwner || m.MemberCount() < 2 {
			return false, nil
		}
		next, err := g.successor(ctx, m, me)
		if err != nil {
			return false, err
		}
		ch.Subjects = []string{next}
		return false, nil
	}, func(st *e2ee.SignedMembershipStatement) (err error) {
		resp, err = g.c.groupClient().LeaveGroup(ctx, &groupv1.LeaveGroupRequest{GroupId: g.ID, Statement: st})
		return err
	})
	if err != nil {
		return nil, err
	}
	g.c.groups.forget(g.ID)
	return resp, nil
}

// successor is who the owner me names as the group's next owner when it leaves: the
// service's rule, the longest-serving admin or else the longest-serving member. The
// order of seniority is the service's member list (GetGroup lists members by when they
// joined), kept to the members and roles of the verified chain m, so the service can at
// most reorder real members, never name another identity.
func (g *Group) successor(ctx context.Context, m *e2ee.Membership, me string) (string, error) {
	info, err := g.Info(ctx)
	if err != nil {
		return "", err
	}
	var first, admin string
	for _, member := range info.GetMembers() {
		id := member.GetIdentity()
		switch {
		case id == me || m.Role(id) == e2ee.RoleNone:
		case m.Role(id) == e2ee.RoleAdmin && admin == "":
			admin = id
		case first == "":
			first = id
		}
	}
	switch {
	case admin != "":
		return admin, nil
	case first != "":
		return first, nil
	}
	return "", fmt.Errorf("%w: the service lists none of the members of %s's verified chain", ErrMembershipChain, g.ID)
}

// SetRole makes a member an admin or a plain member. Owner only.
func (g *Group) SetRole(ctx context.Context, identity string, role groupv1.GroupRole) error {
	ch := subjectChange(e2ee.KindSetRole, identity)
	ch.Role = e2ee.MembershipRole(role)
	return g.change(ctx, ch, func(m *e2ee.Membership, _ *e2ee.MembershipChange) (bool, error) {
		return m.Role(identity) == ch.Role, nil // has the role already
	}, func(st *e2ee.SignedMembershipStatement) error {
		_, err := g.c.groupClient().SetRole(ctx, &groupv1.SetRoleRequest{GroupId: g.ID, Identity: identity, Role: role, Statement: st})
		return err
	})
}

// TransferOwnership makes another member the owner; the user becomes an admin.
func (g *Group) TransferOwnership(ctx context.Context, newOwner string) error {
	var resp *groupv1.TransferOwnershipResponse
	err := g.change(ctx, subjectChange(e2ee.KindTransferOwnership, newOwner), nil, func(st *e2ee.SignedMembershipStatement) (err error) {
		resp, err = g.c.groupClient().TransferOwnership(ctx, &groupv1.TransferOwnershipRequest{GroupId: g.ID, NewOwner: newOwner, Statement: st})
		return err
	})
	return g.observed(resp, err)
}

// SetEncryptionMode sets whether the group's messages must, may or may not be
// encrypted. Switching encryption on makes the next encrypted message commit a new
// epoch. Owner only.
func (g *Group) SetEncryptionMode(ctx context.Context, mode groupv1.EncryptionMode) error {
	return g.observed(g.c.groupClient().SetEncryptionMode(ctx, &groupv1.SetEncryptionModeRequest{GroupId: g.ID, EncryptionMode: mode}))
}

// SetRotationPolicy sets when the group's key must rotate besides membership and card
// changes. Owner only.
func (g *Group) SetRotationPolicy(ctx context.Context, policy *groupv1.RotationPolicy) error {
	return g.observed(g.c.groupClient().SetRotationPolicy(ctx, &groupv1.SetRotationPolicyRequest{GroupId: g.ID, RotationPolicy: policy}))
}

// SetHistoryVisibility sets which epoch keys, and so which history, members can read.
// Owner only.
func (g *Group) SetHistoryVisibility(ctx context.Context, v groupv1.HistoryVisibility) error {
	return g.observed(g.c.groupClient().SetHistoryVisibility(ctx, &groupv1.SetHistoryVisibilityRequest{GroupId: g.ID, HistoryVisibility: v}))
}
