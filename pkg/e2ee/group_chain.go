package e2ee

import (
	"bytes"
	"maps"
	"slices"
	"time"
)

// Membership is a group's membership as a verified chain of statements yields it: who
// is a member with which role, who is banned, who has a pending invitation, and who was
// a member at each statement of the chain. Its zero value is not usable: start with
// NewMembership and Apply every statement from the group's creation, in order.
type Membership struct {
	groupID string
	// hashes[i] is the hash of statement i+1.
	hashes  [][]byte
	roles   map[string]MembershipRole
	banned  map[string]bool
	invites map[string]pendingInvitation
	// spans holds, per identity that was ever a member, the statements its membership
	// began and ended at: pairs (from, to), member at statement s when from <= s < to,
	// the last pair open-ended (to = 0) while it is a member.
	spans map[string][]uint64
}

type pendingInvitation struct {
	hash    []byte
	expires time.Time
}

// NewMembership returns the empty membership of groupID, before its CREATE statement.
func NewMembership(groupID string) *Membership {
	return &Membership{
		groupID: groupID,
		roles:   map[string]MembershipRole{},
		banned:  map[string]bool{},
		invites: map[string]pendingInvitation{},
		spans:   map[string][]uint64{},
	}
}

// GroupID is the group the membership is of.
func (m *Membership) GroupID() string { return m.groupID }

// Sequence is the sequence number of the last statement applied: the head; 0 before
// the first.
func (m *Membership) Sequence() uint64 { return uint64(len(m.hashes)) }

// Head is the hash of the last statement applied, nil before the first.
func (m *Membership) Head() []byte {
	if len(m.hashes) == 0 {
		return nil
	}
	return m.hashes[len(m.hashes)-1]
}

// HashAt is the hash of statement sequence, nil if the chain has no such statement.
func (m *Membership) HashAt(sequence uint64) []byte {
	if sequence == 0 || sequence > uint64(len(m.hashes)) {
		return nil
	}
	return m.hashes[sequence-1]
}

// Role implements MembershipState.
func (m *Membership) Role(identity string) MembershipRole { return m.roles[identity] }

// Banned implements MembershipState.
func (m *Membership) Banned(identity string) bool { return m.banned[identity] }

// Invitation implements MembershipState.
func (m *Membership) Invitation(identity string) ([]byte, time.Time, bool) {
	inv, ok := m.invites[identity]
	return inv.hash, inv.expires, ok
}

// MemberCount implements MembershipState.
func (m *Membership) MemberCount() int { return len(m.roles) }

// Members returns the current members, sorted.
func (m *Membership) Members() []string {
	return slices.Sorted(maps.Keys(m.roles))
}

// Owner is the current owner ("" before the CREATE statement).
func (m *Membership) Owner() string {
	for id, r := range m.roles {
		if r == RoleOwner {
			return id
		}
	}
	return ""
}

// MemberAt reports whether identity was a member once statement sequence was applied
// (and before the next one).
func (m *Membership) MemberAt(identity string, sequence uint64) bool {
	s := m.spans[identity]
	for i := 0; i+1 < len(s); i += 2 {
		if s[i] <= sequence && (s[i+1] == 0 || sequence < s[i+1]) {
			return true
		}
	}
	return false
}

// WasMember reports whether identity was a member at any point of the chain.
func (m *Membership) WasMember(identity string) bool { return len(m.spans[identity]) > 0 }

// Apply checks st, a statement whose signature the caller verified
// (VerifyMembershipStatement, with the signer's card as it was when st was made), and
// applies it: st must be of this group (ErrWrongGroup), follow the head (sequence one
// more, previous hash the head's; ErrBrokenChain for a statement missing, repeated or
// out of order), and be a change its signer may make in the current state
// (CheckMembershipChange). Nothing changes when it fails.
func (m *Membership) Apply(st *MembershipStatement) error {
	switch {
	case st.GroupID != m.groupID:
		return errorf(ErrWrongGroup, "membership statement %d is of group %s, not %s", st.Sequence, st.GroupID, m.groupID)
	case st.Sequence != m.Sequence()+1:
		return errorf(ErrBrokenChain, "membership statement %d follows statement %d: a statement is missing, repeated or out of order", st.Sequence, m.Sequence())
	case !bytes.Equal(st.PreviousHash, m.Head()):
		return errorf(ErrBrokenChain, "membership statement %d does not name statement %d's hash", st.Sequence, m.Sequence())
	}
	if err := CheckMembershipChange(m, st); err != nil {
		return err
	}
	seq := st.Sequence
	join := func(id string, r MembershipRole) {
		m.roles[id] = r
		delete(m.invites, id)
		m.spans[id] = append(m.spans[id], seq, 0)
	}
	leave := func(id string) {
		delete(m.roles, id)
		s := m.spans[id]
		s[len(s)-1] = seq
	}
	subject := st.Subject()
	switch st.Kind {
	case KindCreate:
		join(st.Signer, RoleOwner)
		for _, id := range st.Subjects {
			join(id, RoleMember)
		}
	case KindAdd, KindApproveJoin:
		for _, id := range st.Subjects {
			join(id, RoleMember)
		}
	case KindAcceptInvitation:
		join(st.Signer, RoleMember)
	case KindRemove, KindServiceRemove:
		leave(subject)
	case KindBan:
		if m.roles[subject] != RoleNone {
			leave(subject)
		}
		m.banned[subject] = true
		delete(m.invites, subject)
	case KindUnban:
		delete(m.banned, subject)
	case KindLeave:
		leave(st.Signer)
		if subject != "" {
			m.roles[subject] = RoleOwner
		}
	case KindSetRole:
		m.roles[subject] = st.Role
	case KindTransferOwnership:
		m.roles[subject] = RoleOwner
		m.roles[st.Signer] = RoleAdmin
	case KindInvite:
		m.invites[subject] = pendingInvitation{hash: st.Hash, expires: st.ExpiresAt}
	}
	m.hashes = append(m.hashes, st.Hash)
	return nil
}

// Clone returns a copy of m that later statements applied to m do not change.
func (m *Membership) Clone() *Membership {
	c := &Membership{
		groupID: m.groupID,
		hashes:  slices.Clone(m.hashes),
		roles:   maps.Clone(m.roles),
		banned:  maps.Clone(m.banned),
		invites: maps.Clone(m.invites),
		spans:   make(map[string][]uint64, len(m.spans)),
	}
	for id, s := range m.spans {
		c.spans[id] = slices.Clone(s)
	}
	return c
}
