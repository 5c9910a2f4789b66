package group

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"maps"
	"slices"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/umbra-e2ee/umbra/internal/servicetest"
	"github.com/umbra-e2ee/umbra/pkg/e2ee"
	envelopev1 "github.com/umbra-e2ee/umbra/proto/umbra/envelope/v1"
	groupv1 "github.com/umbra-e2ee/umbra/proto/umbra/group/v1"
)

// TestBadStatementsAreRefusedAndWriteNothing: every membership call whose statement is
// missing, forged, signed by the wrong card or member, out of order, a repeat, or
// saying something else than the request is refused with its code, and group.db is
// left exactly as it was.
func TestBadStatementsAreRefusedAndWriteNothing(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{noLoops: true})
	a, group, us := e.newTeam(t, 3, "owner", "admin", "bob", "carol", "dave", "erin")
	owner, admin, bob, carol, dave, erin := us[0], us[1], us[2], us[3], us[4], us[5]
	if _, err := e.client.SetRole(owner.ctx(), &groupv1.SetRoleRequest{GroupId: group, Identity: admin.identity, Role: groupv1.GroupRole_GROUP_ROLE_ADMIN}); err != nil {
		t.Fatal(err)
	}
	// A statement that was accepted once, and its request: dave added, then removed.
	replayed := e.statementFor(t, owner, group, e2ee.MembershipChange{Kind: e2ee.KindAdd, Subjects: []string{dave.identity}})
	if _, err := e.raw.AddMembers(owner.ctx(), &groupv1.AddMembersRequest{GroupId: group, Identities: identities(dave), Statement: replayed}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.client.RemoveMember(admin.ctx(), &groupv1.RemoveMemberRequest{GroupId: group, Identity: dave.identity}); err != nil {
		t.Fatal(err)
	}
	// An invitation of carol that was renewed, so its first statement is stale.
	if _, err := e.client.InviteMember(admin.ctx(), &groupv1.InviteMemberRequest{GroupId: group, Identity: carol.identity}); err != nil {
		t.Fatal(err)
	}
	chain, err := e.raw.GetMembershipChain(owner.ctx(), &groupv1.GetMembershipChainRequest{GroupId: group})
	if err != nil {
		t.Fatal(err)
	}
	first, err := e2ee.ParseMembershipStatement(chain.GetStatements()[len(chain.GetStatements())-1])
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.client.InviteMember(admin.ctx(), &groupv1.InviteMemberRequest{GroupId: group, Identity: carol.identity}); err != nil {
		t.Fatal(err)
	}
	// A card admin rotated away from.
	old := &user{app: admin.app, identity: admin.identity, token: admin.token, keys: admin.keys, cardID: admin.cardID}
	if err := e.publishCard(admin); err != nil {
		t.Fatal(err)
	}

	add := func(ids ...*user) e2ee.MembershipChange {
		return e2ee.MembershipChange{Kind: e2ee.KindAdd, Subjects: identities(ids...)}
	}
	addReq := func(st *envelopev1.SignedMembershipStatement, ids ...*user) func(context.Context) error {
		return func(ctx context.Context) error {
			_, err := e.raw.AddMembers(ctx, &groupv1.AddMembersRequest{GroupId: group, Identities: identities(ids...), Statement: st})
			return err
		}
	}
	resign := func(u *user, st *envelopev1.SignedMembershipStatement) *envelopev1.SignedMembershipStatement {
		return &envelopev1.SignedMembershipStatement{Content: st.GetContent(), Signature: ed25519Sign(u.keys, st.GetContent())}
	}
	head := func() (uint64, []byte) {
		r, err := e.raw.GetMembershipChain(owner.ctx(), &groupv1.GetMembershipChainRequest{GroupId: group, AfterSequence: 1 << 62})
		if err != nil {
			t.Fatal(err)
		}
		return r.GetHeadSequence(), r.GetHeadHash()
	}
	seq, hash := head()
	signAt := func(u *user, s uint64, prev []byte, change e2ee.MembershipChange, at time.Time) *envelopev1.SignedMembershipStatement {
		st, err := e2ee.SignMembershipStatement(u.keys, u.cardID, u.identity, group, s, prev, change, at)
		if err != nil {
			t.Fatal(err)
		}
		return st
	}
	now := e.clock.Now()
	good := signAt(admin, seq+1, hash, add(erin), now)

	for _, tc := range []struct {
		name string
		as   *user
		call func(context.Context) error
		code codes.Code
		msg  string
	}{
		{"no statement", admin, addReq(nil, erin), codes.InvalidArgument, "statement is missing"},
		{"a signature by another key", admin, addReq(resign(bob, good), erin), codes.InvalidArgument, "signature does not verify"},
		{"a truncated statement", admin, addReq(&envelopev1.SignedMembershipStatement{Content: good.GetContent()[:40], Signature: good.GetSignature()}, erin), codes.InvalidArgument, "statement refused"},
		{"another member's statement", owner, addReq(good, erin), codes.InvalidArgument, "not the caller"},
		{"a card the signer rotated away from", admin, addReq(signAt(old, seq+1, hash, add(erin), now), erin), codes.InvalidArgument, "not the caller's active card"},
		{"a member's own statement of an addition", bob, addReq(signAt(bob, seq+1, hash, add(erin), now), erin), codes.PermissionDenied, "admin or the owner"},
		{"out of order: a statement after the next", admin, addReq(signAt(admin, seq+2, hash, add(erin), now), erin), codes.Aborted, "does not follow"},
		{"a statement for an older head", admin, addReq(signAt(admin, seq, chain.GetHeadHash(), add(erin), now), erin), codes.Aborted, "does not follow"},
		{"a repeat of an accepted statement", owner, addReq(replayed, dave), codes.Aborted, "does not follow"},
		{"a statement naming other identities", admin, addReq(good, dave), codes.InvalidArgument, "statement names"},
		{"a statement of another kind", admin, func(ctx context.Context) error {
			_, err := e.raw.RemoveMember(ctx, &groupv1.RemoveMemberRequest{GroupId: group, Identity: bob.identity,
				Statement: signAt(admin, seq+1, hash, e2ee.MembershipChange{Kind: e2ee.KindBan, Subjects: []string{bob.identity}}, now)})
			return err
		}, codes.InvalidArgument, "kind"},
		{"a statement of another role", owner, func(ctx context.Context) error {
			_, err := e.raw.SetRole(ctx, &groupv1.SetRoleRequest{GroupId: group, Identity: bob.identity, Role: groupv1.GroupRole_GROUP_ROLE_ADMIN,
				Statement: signAt(owner, seq+1, hash, e2ee.MembershipChange{Kind: e2ee.KindSetRole, Subjects: []string{bob.identity}, Role: e2ee.RoleMember}, now)})
			return err
		}, codes.InvalidArgument, "role"},
		{"a statement of another group", admin, addReq(func() *envelopev1.SignedMembershipStatement {
			st, err := e2ee.SignMembershipStatement(admin.keys, admin.cardID, admin.identity, e.groupID(t, a, "other"), seq+1, hash, add(erin), now)
			if err != nil {
				t.Fatal(err)
			}
			return st
		}(), erin), codes.InvalidArgument, "names group"},
		{"a statement dated too far back", admin, addReq(signAt(admin, seq+1, hash, add(erin), now.Add(-StatementSkew-time.Minute)), erin), codes.InvalidArgument, "from the service's clock"},
		{"an invitation lasting another time than the request's", admin, func(ctx context.Context) error {
			_, err := e.raw.InviteMember(ctx, &groupv1.InviteMemberRequest{GroupId: group, Identity: erin.identity, Ttl: durationpb.New(time.Hour),
				Statement: signAt(admin, seq+1, hash, e2ee.MembershipChange{Kind: e2ee.KindInvite, Subjects: []string{erin.identity}, ExpiresAt: now.Add(2 * time.Hour)}, now)})
			return err
		}, codes.InvalidArgument, "lasts"},
		{"an acceptance of a renewed invitation", carol, func(ctx context.Context) error {
			_, err := e.raw.AcceptInvitation(ctx, &groupv1.AcceptInvitationRequest{GroupId: group,
				Statement: signAt(carol, seq+1, hash, e2ee.MembershipChange{Kind: e2ee.KindAcceptInvitation, InvitationHash: first.Hash}, now)})
			return err
		}, codes.FailedPrecondition, "renewed"},
		{"the service's kind, from a client", admin, func(ctx context.Context) error {
			st, err := e2ee.ServiceRemoveStatement(group, seq+1, hash, bob.identity, now)
			if err != nil {
				t.Fatal(err)
			}
			_, err = e.raw.RemoveMember(ctx, &groupv1.RemoveMemberRequest{GroupId: group, Identity: bob.identity, Statement: st})
			return err
		}, codes.InvalidArgument, "signature is 0 bytes"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := e.snapshot(t)
			err := tc.call(tc.as.ctx())
			wantCode(t, err, tc.code, tc.msg)
			if tc.code == codes.Aborted {
				c := detail[*groupv1.MembershipConflict](err)
				if c == nil || c.GetCurrentSequence() != seq || !bytes.Equal(c.GetCurrentHash(), hash) {
					t.Errorf("MembershipConflict %v; want the current head %d", c, seq)
				}
			}
			if !maps.Equal(before, e.snapshot(t)) {
				t.Error("the refused call changed group.db")
			}
		})
	}
	// The good statement is accepted, once.
	if err := addReq(good, erin)(admin.ctx()); err != nil {
		t.Fatal(err)
	}
	wantCode(t, addReq(good, erin)(admin.ctx()), codes.FailedPrecondition, "a member of group")
}

// ed25519Sign signs content as a membership statement with kp's key.
func ed25519Sign(kp *e2ee.KeyPair, content []byte) []byte {
	return ed25519.Sign(kp.Signing, append([]byte(e2ee.LabelMembershipStatementSignature+"\x00"), content...))
}

// TestMembershipChain: the stored chain is what the members signed, in order; members
// and invitees read it, others do not; it pages; and verified from the start with
// pkg/e2ee it yields exactly the service's members.
func TestMembershipChain(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{noLoops: true})
	_, group, us := e.newTeam(t, 3, "owner", "admin", "bob", "carol", "dave", "outsider")
	owner, admin, bob, carol, dave, outsider := us[0], us[1], us[2], us[3], us[4], us[5]
	steps := []func() error{
		servicetest.Call(e.client.SetRole, owner.ctx(), &groupv1.SetRoleRequest{GroupId: group, Identity: admin.identity, Role: groupv1.GroupRole_GROUP_ROLE_ADMIN}),
		servicetest.Call(e.client.InviteMember, admin.ctx(), &groupv1.InviteMemberRequest{GroupId: group, Identity: carol.identity}),
		func() error {
			// carol, invited, reads the chain before she accepts.
			if _, err := e.raw.GetMembershipChain(carol.ctx(), &groupv1.GetMembershipChainRequest{GroupId: group}); err != nil {
				return err
			}
			_, err := e.client.AcceptInvitation(carol.ctx(), &groupv1.AcceptInvitationRequest{GroupId: group})
			return err
		},
		func() error {
			_, err := e.client.RequestJoin(dave.ctx(), &groupv1.RequestJoinRequest{GroupId: group})
			if err == nil {
				_, err = e.client.ApproveJoinRequest(admin.ctx(), &groupv1.ApproveJoinRequestRequest{GroupId: group, Identity: dave.identity})
			}
			return err
		},
		servicetest.Call(e.client.BanMember, admin.ctx(), &groupv1.BanMemberRequest{GroupId: group, Identity: bob.identity}),
		servicetest.Call(e.client.UnbanMember, admin.ctx(), &groupv1.UnbanMemberRequest{GroupId: group, Identity: bob.identity}),
		servicetest.Call(e.client.TransferOwnership, owner.ctx(), &groupv1.TransferOwnershipRequest{GroupId: group, NewOwner: carol.identity}),
		servicetest.Call(e.client.LeaveGroup, carol.ctx(), &groupv1.LeaveGroupRequest{GroupId: group}),
	}
	for i, step := range steps {
		if err := step(); err != nil {
			t.Fatalf("step %d: %v", i, err)
		}
	}
	_, err := e.raw.GetMembershipChain(outsider.ctx(), &groupv1.GetMembershipChainRequest{GroupId: group})
	wantCode(t, err, codes.PermissionDenied, "no pending invitation")
	_, err = e.raw.GetMembershipChain(bob.ctx(), &groupv1.GetMembershipChainRequest{GroupId: group})
	wantCode(t, err, codes.PermissionDenied, "not a member")

	// Read in pages of 3, and verify it as a client does.
	cards := map[string]*e2ee.Card{}
	for _, u := range us {
		cards[string(u.cardID)] = &e2ee.Card{ID: u.cardID, SigningKey: u.keys.SigningPublicKey(), Identity: u.identity}
	}
	m := e2ee.NewMembership(group)
	req := &groupv1.GetMembershipChainRequest{GroupId: group, PageSize: 3}
	pages := 0
	var resp *groupv1.GetMembershipChainResponse
	for {
		if resp, err = e.raw.GetMembershipChain(admin.ctx(), req); err != nil {
			t.Fatal(err)
		}
		pages++
		for _, signed := range resp.GetStatements() {
			parsed, err := e2ee.ParseMembershipStatement(signed)
			if err != nil {
				t.Fatal(err)
			}
			st, err := e2ee.VerifyMembershipStatement(signed, group, cards[string(parsed.SignerCardID)])
			if err != nil {
				t.Fatal(err)
			}
			if err := m.Apply(st); err != nil {
				t.Fatal(err)
			}
		}
		if resp.GetNextPageToken() == "" {
			break
		}
		req = &groupv1.GetMembershipChainRequest{GroupId: group, PageSize: 3, PageToken: resp.GetNextPageToken()}
	}
	if m.Sequence() != 9 || pages != 3 || resp.GetHeadSequence() != 9 || !bytes.Equal(m.Head(), resp.GetHeadHash()) {
		t.Fatalf("verified %d statements in %d pages; head %d", m.Sequence(), pages, resp.GetHeadSequence())
	}
	g, err := e.client.GetGroup(admin.ctx(), &groupv1.GetGroupRequest{GroupId: group})
	if err != nil {
		t.Fatal(err)
	}
	if got := sorted(listedMembers(g.GetGroup())); !slices.Equal(got, m.Members()) || g.GetGroup().GetOwner() != m.Owner() || g.GetGroup().GetMembershipSequence() != 9 {
		t.Fatalf("the service's members %v (owner %s); the chain's %v (owner %s)", got, g.GetGroup().GetOwner(), m.Members(), m.Owner())
	}
	// Deleting the group deletes its chain.
	if _, err := e.client.DeleteGroup(owner.ctx(), &groupv1.DeleteGroupRequest{GroupId: group}); err != nil {
		t.Fatal(err)
	}
	for k := range e.snapshot(t) {
		if hasPrefix(k, "membership/") {
			t.Errorf("left in group.db: %q", k)
		}
	}
}

// TestCommitForAnotherHeadIsRefused: a commit names the membership head it was made
// for; one made before the latest statement (here a role change, which moves the head
// but not the member list) is refused with the current head, and writes nothing.
func TestCommitForAnotherHeadIsRefused(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{noLoops: true})
	owner, bob, group := e.twoMemberGroup(t)
	st := e.state(t, owner, group)
	stale, keys := e.commitFor(t, group, st.GetEpoch(), st.GetCommit().GetCommitHash(), owner, owner, bob)
	if _, err := e.client.SetRole(owner.ctx(), &groupv1.SetRoleRequest{GroupId: group, Identity: bob.identity, Role: groupv1.GroupRole_GROUP_ROLE_ADMIN}); err != nil {
		t.Fatal(err)
	}
	now := e.state(t, owner, group)
	before := e.snapshot(t)
	_, err := e.client.CommitEpoch(owner.ctx(), &groupv1.CommitEpochRequest{GroupId: group, FromEpoch: st.GetEpoch(), Commit: stale, Keys: keys})
	wantCode(t, err, codes.FailedPrecondition, "membership chain is at statement")
	if m := detail[*groupv1.CommitMismatch](err); m == nil || m.GetMembershipSequence() != now.GetMembershipSequence() || !bytes.Equal(m.GetMembershipHash(), now.GetMembershipHash()) {
		t.Errorf("CommitMismatch %v; want the current head %d", m, now.GetMembershipSequence())
	}
	if !maps.Equal(before, e.snapshot(t)) {
		t.Error("the refused commit changed group.db")
	}
	e.commit(t, group, owner, owner, bob)
}
