package group

import (
	"context"
	"math"
	"slices"
	"strings"
	"sync"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/umbra-e2ee/umbra/pkg/e2ee"
	envelopev1 "github.com/umbra-e2ee/umbra/proto/umbra/envelope/v1"
	groupv1 "github.com/umbra-e2ee/umbra/proto/umbra/group/v1"
)

// signer signs the membership statement of every membership call a test makes through
// env.client without one, as the SDK does: with the caller's current card, after the
// head of the group's chain as the service reports it. The tests of the role rules,
// limits and events so run against the service's real statement checks; the tests of
// the statements themselves (statements_test.go) use env.raw and sign by hand.
type signer struct {
	mu    sync.Mutex
	users map[string]*user // by token
	env   *env
}

func (s *signer) add(u *user) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.users == nil {
		s.users = map[string]*user{}
	}
	s.users[u.token] = u
}

func (s *signer) caller(ctx context.Context) *user {
	md, _ := metadata.FromOutgoingContext(ctx)
	for _, v := range md.Get("authorization") {
		s.mu.Lock()
		u := s.users[strings.TrimPrefix(v, "Bearer ")]
		s.mu.Unlock()
		if u != nil {
			return u
		}
	}
	return nil
}

// interceptor fills in the statement of a membership request that has none.
func (s *signer) interceptor(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
	if m, ok := req.(interface {
		GetStatement() *envelopev1.SignedMembershipStatement
		GetGroupId() string
	}); ok && m.GetStatement() == nil {
		if u := s.caller(ctx); u != nil && u.keys != nil {
			if st := s.sign(ctx, u, m.GetGroupId(), req); st != nil {
				req = proto.Clone(req.(proto.Message))
				req.(proto.Message).ProtoReflect().Set(req.(proto.Message).ProtoReflect().Descriptor().Fields().ByName("statement"), protoreflect.ValueOfMessage(st.ProtoReflect()))
			}
		}
	}
	return invoker(ctx, method, req, reply, cc, opts...)
}

// sign returns u's statement of req, or nil when there is none to make (the request
// is malformed, or u may not read the group: the service refuses it for that first).
func (s *signer) sign(ctx context.Context, u *user, group string, req any) *envelopev1.SignedMembershipStatement {
	e := s.env
	one := func(k e2ee.MembershipKind, id string) e2ee.MembershipChange {
		return e2ee.MembershipChange{Kind: k, Subjects: []string{id}}
	}
	var change e2ee.MembershipChange
	switch r := req.(type) {
	case *groupv1.CreateGroupRequest:
		others := slices.DeleteFunc(slices.Clone(r.GetMembers()), func(id string) bool { return id == u.identity })
		change = e2ee.MembershipChange{Kind: e2ee.KindCreate, Subjects: others}
	case *groupv1.AddMembersRequest:
		change = e2ee.MembershipChange{Kind: e2ee.KindAdd, Subjects: r.GetIdentities()}
	case *groupv1.RemoveMemberRequest:
		change = one(e2ee.KindRemove, r.GetIdentity())
	case *groupv1.BanMemberRequest:
		change = one(e2ee.KindBan, r.GetIdentity())
	case *groupv1.UnbanMemberRequest:
		change = one(e2ee.KindUnban, r.GetIdentity())
	case *groupv1.SetRoleRequest:
		change = one(e2ee.KindSetRole, r.GetIdentity())
		change.Role = e2ee.MembershipRole(r.GetRole())
	case *groupv1.TransferOwnershipRequest:
		change = one(e2ee.KindTransferOwnership, r.GetNewOwner())
	case *groupv1.ApproveJoinRequestRequest:
		change = one(e2ee.KindApproveJoin, r.GetIdentity())
	case *groupv1.InviteMemberRequest:
		change = one(e2ee.KindInvite, r.GetIdentity())
		ttl := e.srv.cfg.InvitationTTL
		if d := r.GetTtl().AsDuration(); d != 0 {
			ttl = d
		}
		change.ExpiresAt = e.clock.Now().Add(ttl)
	case *groupv1.LeaveGroupRequest:
		change = e2ee.MembershipChange{Kind: e2ee.KindLeave}
		if g, err := e.raw.GetGroup(ctx, &groupv1.GetGroupRequest{GroupId: group}); err == nil && g.GetGroup().GetOwner() == u.identity && len(g.GetGroup().GetMembers()) > 1 {
			// The service's successor: the longest-serving admin, else member (GetGroup
			// lists the owner first, then by seniority).
			others := g.GetGroup().GetMembers()[1:]
			next := others[0]
			for _, m := range others {
				if m.GetRole() == groupv1.GroupRole_GROUP_ROLE_ADMIN {
					next = m
					break
				}
			}
			change.Subjects = []string{next.GetIdentity()}
		}
	case *groupv1.AcceptInvitationRequest:
		change = e2ee.MembershipChange{Kind: e2ee.KindAcceptInvitation}
		chain, err := e.raw.GetMembershipChain(ctx, &groupv1.GetMembershipChainRequest{GroupId: group, PageSize: MaxChainPage})
		if err != nil {
			return nil
		}
		for _, signed := range chain.GetStatements() {
			if st, err := e2ee.ParseMembershipStatement(signed); err == nil && st.Kind == e2ee.KindInvite && st.Subject() == u.identity {
				change.InvitationHash = st.Hash
			}
		}
	default:
		return nil
	}
	seq, prev := uint64(0), []byte(nil)
	if _, create := req.(*groupv1.CreateGroupRequest); !create {
		seq, prev, _ = e.chainHead(ctx, group) // unread (0, nil): the service refuses the call first
	}
	signed, err := e2ee.SignMembershipStatement(u.keys, u.cardID, u.identity, group, seq+1, prev, change, e.clock.Now())
	if err != nil {
		return nil
	}
	return signed
}

// statementFor signs u's statement of change after the group's current head, without
// the interceptor: for the tests that send statements of their own.
func (e *env) statementFor(t testing.TB, u *user, group string, change e2ee.MembershipChange) *envelopev1.SignedMembershipStatement {
	t.Helper()
	seq, prev := uint64(0), []byte(nil)
	if change.Kind != e2ee.KindCreate {
		var err error
		if seq, prev, err = e.chainHead(u.ctx(), group); err != nil {
			t.Fatal(err)
		}
	}
	signed, err := e2ee.SignMembershipStatement(u.keys, u.cardID, u.identity, group, seq+1, prev, change, e.clock.Now())
	if err != nil {
		t.Fatal(err)
	}
	return signed
}

// chainHead returns the sequence and hash of group's last membership statement, as
// the caller of ctx reads them.
func (e *env) chainHead(ctx context.Context, group string) (uint64, []byte, error) {
	resp, err := e.raw.GetMembershipChain(ctx, &groupv1.GetMembershipChainRequest{GroupId: group, AfterSequence: math.MaxInt64})
	if err != nil {
		return 0, nil, err
	}
	return resp.GetHeadSequence(), resp.GetHeadHash(), nil
}
