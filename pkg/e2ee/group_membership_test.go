package e2ee

import (
	"bytes"
	"slices"
	"strings"
	"testing"
	"time"

	envelopev1 "github.com/umbra-e2ee/umbra/proto/umbra/envelope/v1"
)

var (
	carol = "u_" + strings.Repeat("c", 32)
	dave  = "u_" + strings.Repeat("d", 32)
)

// chain builds a group's membership chain statement by statement, signing each with
// the key of its signer, and applies it to a Membership as a client would.
type chain struct {
	t       testing.TB
	m       *Membership
	members map[string]member
	signed  []*SignedMembershipStatement
	at      time.Time
}

func newChain(t testing.TB) *chain {
	c := &chain{t: t, m: NewMembership(testGroup), members: map[string]member{}, at: when}
	for i, id := range []string{alice, bob, carol, dave} {
		c.members[id] = newMember(t, SuiteX25519, id, 1+i)
	}
	return c
}

// sign returns signer's statement of ch following the chain's head.
func (c *chain) sign(signer string, ch MembershipChange) *SignedMembershipStatement {
	c.t.Helper()
	c.at = c.at.Add(time.Minute)
	s, err := SignMembershipStatement(c.members[signer].kp, c.members[signer].card.ID, signer, testGroup, c.m.Sequence()+1, c.m.Head(), ch, c.at)
	if err != nil {
		c.t.Fatal(err)
	}
	return s
}

// apply verifies s with its signer's card and applies it.
func (c *chain) apply(s *SignedMembershipStatement) error {
	c.t.Helper()
	parsed, err := ParseMembershipStatement(s)
	if err != nil {
		return err
	}
	var card *Card
	if m, ok := c.members[parsed.Signer]; ok {
		card = m.card
	}
	st, err := VerifyMembershipStatement(s, testGroup, card)
	if err != nil {
		return err
	}
	if err := c.m.Apply(st); err != nil {
		return err
	}
	c.signed = append(c.signed, s)
	return nil
}

// step signs and applies a statement that must be accepted.
func (c *chain) step(signer string, ch MembershipChange) *MembershipStatement {
	c.t.Helper()
	s := c.sign(signer, ch)
	if err := c.apply(s); err != nil {
		c.t.Fatalf("%s: %v", ch.Kind, err)
	}
	st, _ := ParseMembershipStatement(s)
	return st
}

func TestMembershipChainStory(t *testing.T) {
	t.Parallel()
	c := newChain(t)
	c.step(alice, MembershipChange{Kind: KindCreate, Subjects: []string{bob}})
	invite := c.step(alice, MembershipChange{Kind: KindInvite, Subjects: []string{carol}, ExpiresAt: c.at.Add(24 * time.Hour)})
	if _, _, ok := c.m.Invitation(carol); !ok || c.m.Role(carol) != RoleNone {
		t.Fatal("carol is not invited, or is a member before accepting")
	}
	c.step(carol, MembershipChange{Kind: KindAcceptInvitation, InvitationHash: invite.Hash})
	c.step(alice, MembershipChange{Kind: KindSetRole, Subjects: []string{bob}, Role: RoleAdmin})
	c.step(bob, MembershipChange{Kind: KindRemove, Subjects: []string{carol}})
	c.step(bob, MembershipChange{Kind: KindBan, Subjects: []string{carol}})
	c.step(bob, MembershipChange{Kind: KindUnban, Subjects: []string{carol}})
	c.step(bob, MembershipChange{Kind: KindAdd, Subjects: []string{dave, carol}})
	c.step(carol, MembershipChange{Kind: KindLeave})
	c.step(bob, MembershipChange{Kind: KindApproveJoin, Subjects: []string{carol}})
	removal, err := ServiceRemoveStatement(testGroup, c.m.Sequence()+1, c.m.Head(), dave, c.at)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.apply(removal); err != nil {
		t.Fatalf("service removal: %v", err)
	}
	c.step(alice, MembershipChange{Kind: KindTransferOwnership, Subjects: []string{carol}})
	c.step(carol, MembershipChange{Kind: KindLeave, Subjects: []string{alice}})

	if got := c.m.Members(); !slices.Equal(got, []string{alice, bob}) || c.m.Owner() != alice || c.m.Role(bob) != RoleAdmin {
		t.Fatalf("members %v, owner %s, bob %s", got, c.m.Owner(), c.m.Role(bob))
	}
	if c.m.Sequence() != 13 || !bytes.Equal(c.m.Head(), StatementHash(c.signed[12].GetContent())) || !bytes.Equal(c.m.HashAt(1), StatementHash(c.signed[0].GetContent())) {
		t.Fatalf("head %d %x", c.m.Sequence(), c.m.Head())
	}
	for _, tc := range []struct {
		id     string
		seq    uint64
		member bool
	}{
		{carol, 2, false}, {carol, 3, true}, {carol, 4, true}, {carol, 5, false}, {carol, 8, true}, {carol, 9, false},
		{carol, 10, true}, {carol, 13, false}, {dave, 8, true}, {dave, 11, false}, {alice, 1, true}, {alice, 13, true},
	} {
		if got := c.m.MemberAt(tc.id, tc.seq); got != tc.member {
			t.Errorf("%s a member at statement %d: %v; want %v", tc.id[:3], tc.seq, got, tc.member)
		}
	}
	if !c.m.WasMember(dave) || c.m.WasMember("u_"+strings.Repeat("e", 32)) {
		t.Error("WasMember is wrong")
	}
}

// TestMembershipStatementsRefused: every statement a client must refuse, with the
// error kind that names what failed, and the membership unchanged.
func TestMembershipStatementsRefused(t *testing.T) {
	t.Parallel()
	// base is a chain: alice owns the group, bob is an admin, carol a member, dave
	// banned; eve was invited.
	eve := "u_" + strings.Repeat("e", 32)
	base := func(t *testing.T) (*chain, *MembershipStatement) {
		c := newChain(t)
		c.members[eve] = newMember(t, SuiteX25519, eve, 9)
		c.step(alice, MembershipChange{Kind: KindCreate, Subjects: []string{bob, carol}})
		c.step(alice, MembershipChange{Kind: KindSetRole, Subjects: []string{bob}, Role: RoleAdmin})
		c.step(alice, MembershipChange{Kind: KindBan, Subjects: []string{dave}})
		inv := c.step(bob, MembershipChange{Kind: KindInvite, Subjects: []string{eve}, ExpiresAt: c.at.Add(time.Hour)})
		return c, inv
	}
	add := func(subjects ...string) MembershipChange { return MembershipChange{Kind: KindAdd, Subjects: subjects} }
	one := func(k MembershipKind, subject string) MembershipChange {
		return MembershipChange{Kind: k, Subjects: []string{subject}}
	}
	frank := "u_" + strings.Repeat("f", 32)
	for _, tc := range []struct {
		name  string
		build func(c *chain, inv *MembershipStatement) *SignedMembershipStatement
		want  error
	}{
		{"a member adds", func(c *chain, _ *MembershipStatement) *SignedMembershipStatement { return c.sign(carol, add(frank)) }, ErrNotAuthorized},
		{"an outsider adds", func(c *chain, _ *MembershipStatement) *SignedMembershipStatement { return c.sign(dave, add(frank)) }, ErrNotAuthorized},
		{"an admin removes an admin", func(c *chain, _ *MembershipStatement) *SignedMembershipStatement {
			c.step(alice, MembershipChange{Kind: KindSetRole, Subjects: []string{carol}, Role: RoleAdmin})
			return c.sign(bob, one(KindRemove, carol))
		}, ErrNotAuthorized},
		{"an admin removes the owner", func(c *chain, _ *MembershipStatement) *SignedMembershipStatement {
			return c.sign(bob, one(KindRemove, alice))
		}, ErrNotAuthorized},
		{"an admin bans the owner", func(c *chain, _ *MembershipStatement) *SignedMembershipStatement {
			return c.sign(bob, one(KindBan, alice))
		}, ErrNotAuthorized},
		{"an admin sets a role", func(c *chain, _ *MembershipStatement) *SignedMembershipStatement {
			return c.sign(bob, MembershipChange{Kind: KindSetRole, Subjects: []string{carol}, Role: RoleAdmin})
		}, ErrNotAuthorized},
		{"an admin transfers ownership", func(c *chain, _ *MembershipStatement) *SignedMembershipStatement {
			return c.sign(bob, one(KindTransferOwnership, carol))
		}, ErrNotAuthorized},
		{"a member invites", func(c *chain, _ *MembershipStatement) *SignedMembershipStatement {
			return c.sign(carol, MembershipChange{Kind: KindInvite, Subjects: []string{frank}, ExpiresAt: c.at.Add(2 * time.Hour)})
		}, ErrNotAuthorized},
		{"an outsider accepts another's invitation", func(c *chain, inv *MembershipStatement) *SignedMembershipStatement {
			c.members[frank] = newMember(c.t, SuiteX25519, frank, 10)
			return c.sign(frank, MembershipChange{Kind: KindAcceptInvitation, InvitationHash: inv.Hash})
		}, ErrNotAuthorized},
		{"an invitee accepts an invitation that was replaced", func(c *chain, inv *MembershipStatement) *SignedMembershipStatement {
			c.step(bob, MembershipChange{Kind: KindInvite, Subjects: []string{eve}, ExpiresAt: c.at.Add(time.Hour)})
			return c.sign(eve, MembershipChange{Kind: KindAcceptInvitation, InvitationHash: inv.Hash})
		}, ErrNotAuthorized},
		{"an invitee accepts too late", func(c *chain, inv *MembershipStatement) *SignedMembershipStatement {
			c.at = inv.ExpiresAt
			return c.sign(eve, MembershipChange{Kind: KindAcceptInvitation, InvitationHash: inv.Hash})
		}, ErrInvalidChange},
		{"adding a member", func(c *chain, _ *MembershipStatement) *SignedMembershipStatement {
			return c.sign(bob, add(carol, frank))
		}, ErrInvalidChange},
		{"adding a banned identity", func(c *chain, _ *MembershipStatement) *SignedMembershipStatement { return c.sign(bob, add(dave)) }, ErrInvalidChange},
		{"removing a non-member", func(c *chain, _ *MembershipStatement) *SignedMembershipStatement {
			return c.sign(bob, one(KindRemove, frank))
		}, ErrInvalidChange},
		{"lifting a ban that is not there", func(c *chain, _ *MembershipStatement) *SignedMembershipStatement {
			return c.sign(bob, one(KindUnban, carol))
		}, ErrInvalidChange},
		{"banning twice", func(c *chain, _ *MembershipStatement) *SignedMembershipStatement {
			return c.sign(bob, one(KindBan, dave))
		}, ErrInvalidChange},
		{"giving a role a member has", func(c *chain, _ *MembershipStatement) *SignedMembershipStatement {
			return c.sign(alice, MembershipChange{Kind: KindSetRole, Subjects: []string{bob}, Role: RoleAdmin})
		}, ErrInvalidChange},
		{"the owner leaves without a successor", func(c *chain, _ *MembershipStatement) *SignedMembershipStatement {
			return c.sign(alice, MembershipChange{Kind: KindLeave})
		}, ErrInvalidChange},
		{"a member leaves naming an owner", func(c *chain, _ *MembershipStatement) *SignedMembershipStatement {
			return c.sign(carol, one(KindLeave, bob))
		}, ErrInvalidChange},
		{"a second CREATE", func(c *chain, _ *MembershipStatement) *SignedMembershipStatement {
			s := c.sign(alice, add(frank))
			s.Content = recode(c.t, s.GetContent(), func(m *envelopev1.MembershipStatementContent) { m.Kind = KindCreate })
			s.Signature = signWith(c.members[alice].kp, LabelMembershipStatementSignature, s.GetContent())
			return s
		}, ErrMalformed},
		{"the service adds a member", func(c *chain, _ *MembershipStatement) *SignedMembershipStatement {
			st, err := ServiceRemoveStatement(testGroup, c.m.Sequence()+1, c.m.Head(), frank, c.at)
			if err != nil {
				c.t.Fatal(err)
			}
			// Turn the removal into an addition: the content parses, the signer is the
			// service, and a service may only remove.
			st.Content = recode(c.t, st.GetContent(), func(m *envelopev1.MembershipStatementContent) { m.Kind = KindAdd })
			return st
		}, ErrNotAuthorized},
		{"the service removes the owner", func(c *chain, _ *MembershipStatement) *SignedMembershipStatement {
			st, err := ServiceRemoveStatement(testGroup, c.m.Sequence()+1, c.m.Head(), alice, c.at)
			if err != nil {
				c.t.Fatal(err)
			}
			return st
		}, ErrNotAuthorized},
		{"a statement signed by another key", func(c *chain, _ *MembershipStatement) *SignedMembershipStatement {
			s := c.sign(bob, add(frank))
			s.Signature = signWith(c.members[carol].kp, LabelMembershipStatementSignature, s.GetContent())
			return s
		}, ErrBadSignature},
		{"a statement whose content was changed after signing", func(c *chain, _ *MembershipStatement) *SignedMembershipStatement {
			s := c.sign(bob, add(frank))
			s.Content = recode(c.t, s.GetContent(), func(m *envelopev1.MembershipStatementContent) { m.Subjects = []string{dave} })
			return s
		}, ErrBadSignature},
		{"a statement naming a card of another identity", func(c *chain, _ *MembershipStatement) *SignedMembershipStatement {
			s := c.sign(bob, add(frank))
			s.Content = recode(c.t, s.GetContent(), func(m *envelopev1.MembershipStatementContent) { m.Signer = alice })
			s.Signature = signWith(c.members[bob].kp, LabelMembershipStatementSignature, s.GetContent())
			return s
		}, ErrWrongSender},
		{"a statement missing before it", func(c *chain, _ *MembershipStatement) *SignedMembershipStatement {
			c.sign(bob, add(frank)) // signed, never applied
			return signAt(c.t, c, bob, c.m.Sequence()+2, c.m.Head(), add(frank))
		}, ErrBrokenChain},
		{"a repeated statement", func(c *chain, _ *MembershipStatement) *SignedMembershipStatement { return c.signed[len(c.signed)-1] }, ErrBrokenChain},
		{"a statement naming another previous hash", func(c *chain, _ *MembershipStatement) *SignedMembershipStatement {
			return signAt(c.t, c, bob, c.m.Sequence()+1, c.m.HashAt(1), add(frank))
		}, ErrBrokenChain},
		{"an unknown kind", func(c *chain, _ *MembershipStatement) *SignedMembershipStatement {
			s := c.sign(bob, add(frank))
			s.Content = recode(c.t, s.GetContent(), func(m *envelopev1.MembershipStatementContent) { m.Kind = 99 })
			s.Signature = signWith(c.members[bob].kp, LabelMembershipStatementSignature, s.GetContent())
			return s
		}, ErrUnknownKind},
		{"subjects out of order", func(c *chain, _ *MembershipStatement) *SignedMembershipStatement {
			s := c.sign(bob, add(frank, "u_"+strings.Repeat("g", 32)))
			s.Content = recode(c.t, s.GetContent(), func(m *envelopev1.MembershipStatementContent) { slices.Reverse(m.Subjects) })
			s.Signature = signWith(c.members[bob].kp, LabelMembershipStatementSignature, s.GetContent())
			return s
		}, ErrMalformed},
		{"a signer among the subjects", func(c *chain, _ *MembershipStatement) *SignedMembershipStatement {
			s := c.sign(bob, one(KindRemove, carol))
			s.Content = recode(c.t, s.GetContent(), func(m *envelopev1.MembershipStatementContent) { m.Subjects = []string{bob} })
			s.Signature = signWith(c.members[bob].kp, LabelMembershipStatementSignature, s.GetContent())
			return s
		}, ErrMalformed},
		{"a statement of another group", func(c *chain, _ *MembershipStatement) *SignedMembershipStatement {
			s, err := SignMembershipStatement(c.members[bob].kp, c.members[bob].card.ID, bob, otherGroup, c.m.Sequence()+1, c.m.Head(), add(frank), c.at)
			if err != nil {
				c.t.Fatal(err)
			}
			return s
		}, ErrWrongGroup},
		{"truncated", func(c *chain, _ *MembershipStatement) *SignedMembershipStatement {
			s := c.sign(bob, add(frank))
			s.Content = s.Content[:len(s.Content)-3]
			return s
		}, ErrMalformed},
		{"too large", func(c *chain, _ *MembershipStatement) *SignedMembershipStatement {
			s := c.sign(bob, add(frank))
			s.Content = make([]byte, MaxMembershipStatementSize+1)
			return s
		}, ErrTooLarge},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, inv := base(t)
			s := tc.build(c, inv)
			seq, head, members := c.m.Sequence(), c.m.Head(), c.m.Members()
			err := c.apply(s)
			wantKind(t, err, tc.want)
			if c.m.Sequence() != seq || !bytes.Equal(c.m.Head(), head) || !slices.Equal(c.m.Members(), members) {
				t.Errorf("the refused statement changed the membership")
			}
		})
	}
}

// signAt signs a statement at an arbitrary position of c's chain.
func signAt(t testing.TB, c *chain, signer string, seq uint64, prev []byte, ch MembershipChange) *SignedMembershipStatement {
	t.Helper()
	s, err := SignMembershipStatement(c.members[signer].kp, c.members[signer].card.ID, signer, testGroup, seq, prev, ch, c.at)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// recode returns content with change applied, canonically encoded.
func recode(t testing.TB, content []byte, change func(*envelopev1.MembershipStatementContent)) []byte {
	t.Helper()
	var m envelopev1.MembershipStatementContent
	if err := UnmarshalStrict("statement", content, &m); err != nil {
		t.Fatal(err)
	}
	change(&m)
	b, err := Marshal(&m)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestSignMembershipStatementRefusesWhatNoClientAccepts(t *testing.T) {
	t.Parallel()
	c := newChain(t)
	a := c.members[alice]
	for _, tc := range []struct {
		name string
		ch   MembershipChange
		seq  uint64
		prev []byte
	}{
		{"no kind", MembershipChange{Subjects: []string{bob}}, 2, make([]byte, 32)},
		{"CREATE after the first", MembershipChange{Kind: KindCreate}, 2, make([]byte, 32)},
		{"ADD first", MembershipChange{Kind: KindAdd, Subjects: []string{bob}}, 1, nil},
		{"no previous hash", MembershipChange{Kind: KindAdd, Subjects: []string{bob}}, 2, nil},
		{"REMOVE of two", MembershipChange{Kind: KindRemove, Subjects: []string{bob, carol}}, 2, make([]byte, 32)},
		{"SET_ROLE to owner", MembershipChange{Kind: KindSetRole, Subjects: []string{bob}, Role: RoleOwner}, 2, make([]byte, 32)},
		{"INVITE without expiry", MembershipChange{Kind: KindInvite, Subjects: []string{bob}}, 2, make([]byte, 32)},
		{"ACCEPT without invitation", MembershipChange{Kind: KindAcceptInvitation}, 2, make([]byte, 32)},
		{"a subject that is no identity", MembershipChange{Kind: KindAdd, Subjects: []string{"bob"}}, 2, make([]byte, 32)},
		{"a SERVICE_REMOVE signed", MembershipChange{Kind: KindServiceRemove, Subjects: []string{bob}}, 2, make([]byte, 32)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := SignMembershipStatement(a.kp, a.card.ID, alice, testGroup, tc.seq, tc.prev, tc.ch, when)
			want := ErrMalformed
			if tc.ch.Kind == 0 {
				want = ErrUnknownKind
			}
			wantKind(t, err, want)
		})
	}
}
