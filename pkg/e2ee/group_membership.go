package e2ee

import (
	"bytes"
	"crypto/ed25519"
	"slices"
	"time"

	"github.com/umbra-e2ee/umbra/pkg/ident"
	envelopev1 "github.com/umbra-e2ee/umbra/proto/umbra/envelope/v1"
)

// Sizes and limits of membership statements.
const (
	// MaxMembershipStatementSize bounds a MembershipStatementContent: 1,000 subjects of
	// 34 bytes and their tags are about 36 KiB.
	MaxMembershipStatementSize = 48 << 10
	// MaxMembershipSubjects bounds the subjects of one statement.
	MaxMembershipSubjects = 1000

	membershipVersion = 1
)

// The names of the wire format's membership types.
type (
	// MembershipKind says what change a statement makes.
	MembershipKind = envelopev1.MembershipKind
	// MembershipRole is a role in a group.
	MembershipRole = envelopev1.MembershipRole
	// SignedMembershipStatement is the exact content bytes of a statement and their
	// signature.
	SignedMembershipStatement = envelopev1.SignedMembershipStatement
)

// The kinds and roles, by their short names.
const (
	KindCreate            = envelopev1.MembershipKind_MEMBERSHIP_KIND_CREATE
	KindAdd               = envelopev1.MembershipKind_MEMBERSHIP_KIND_ADD
	KindRemove            = envelopev1.MembershipKind_MEMBERSHIP_KIND_REMOVE
	KindBan               = envelopev1.MembershipKind_MEMBERSHIP_KIND_BAN
	KindUnban             = envelopev1.MembershipKind_MEMBERSHIP_KIND_UNBAN
	KindLeave             = envelopev1.MembershipKind_MEMBERSHIP_KIND_LEAVE
	KindSetRole           = envelopev1.MembershipKind_MEMBERSHIP_KIND_SET_ROLE
	KindTransferOwnership = envelopev1.MembershipKind_MEMBERSHIP_KIND_TRANSFER_OWNERSHIP
	KindInvite            = envelopev1.MembershipKind_MEMBERSHIP_KIND_INVITE
	KindAcceptInvitation  = envelopev1.MembershipKind_MEMBERSHIP_KIND_ACCEPT_INVITATION
	KindApproveJoin       = envelopev1.MembershipKind_MEMBERSHIP_KIND_APPROVE_JOIN
	KindServiceRemove     = envelopev1.MembershipKind_MEMBERSHIP_KIND_SERVICE_REMOVE

	RoleNone   = envelopev1.MembershipRole_MEMBERSHIP_ROLE_UNSPECIFIED
	RoleOwner  = envelopev1.MembershipRole_MEMBERSHIP_ROLE_OWNER
	RoleAdmin  = envelopev1.MembershipRole_MEMBERSHIP_ROLE_ADMIN
	RoleMember = envelopev1.MembershipRole_MEMBERSHIP_ROLE_MEMBER
)

// MembershipChange is the change a signer states: what SignMembershipStatement puts in
// a statement besides the chain position, the signer and the time.
type MembershipChange struct {
	Kind MembershipKind
	// Subjects in any order; the statement lists them sorted, each once.
	Subjects []string
	// Role for KindSetRole.
	Role MembershipRole
	// InvitationHash for KindAcceptInvitation: the hash of the INVITE statement.
	InvitationHash []byte
	// ExpiresAt for KindInvite.
	ExpiresAt time.Time
}

// MembershipStatement is a membership statement whose content parsed.
type MembershipStatement struct {
	// Content is the exact MembershipStatementContent bytes; Signature signs them
	// (empty for KindServiceRemove).
	Content   []byte
	Signature []byte
	// Hash is SHA-256(Content): what the next statement names.
	Hash []byte

	GroupID        string
	Sequence       uint64
	PreviousHash   []byte
	Kind           MembershipKind
	Signer         string
	SignerCardID   []byte
	Subjects       []string
	Role           MembershipRole
	InvitationHash []byte
	ExpiresAt      time.Time
	CreatedAt      time.Time
}

// Subject is the statement's one subject, or "" when it has none.
func (s *MembershipStatement) Subject() string {
	if len(s.Subjects) == 0 {
		return ""
	}
	return s.Subjects[0]
}

// StatementHash is the hash of a statement with these content bytes.
func StatementHash(content []byte) []byte { return sha(content) }

// SignMembershipStatement encodes and signs the statement of change to groupID's
// membership by signerIdentity, whose card signerCardID holds signer's key: statement
// number sequence, after the statement whose hash is previousHash (none when sequence
// is 1). The content is checked as ParseMembershipStatement checks it, so a statement
// this returns parses.
func SignMembershipStatement(signer *KeyPair, signerCardID []byte, signerIdentity, groupID string, sequence uint64, previousHash []byte, change MembershipChange, now time.Time) (*SignedMembershipStatement, error) {
	if signer == nil || len(signer.Signing) != ed25519.PrivateKeySize {
		return nil, errorf(ErrMalformed, "no signing key for the membership statement")
	}
	if change.Kind == KindServiceRemove {
		return nil, errorf(ErrMalformed, "a SERVICE_REMOVE statement has no signer: use ServiceRemoveStatement")
	}
	content, err := encodeStatement(groupID, sequence, previousHash, change, signerIdentity, signerCardID, now)
	if err != nil {
		return nil, err
	}
	signed := &SignedMembershipStatement{Content: content, Signature: ed25519.Sign(signer.Signing, Labelled(LabelMembershipStatementSignature, content))}
	if _, err := ParseMembershipStatement(signed); err != nil {
		return nil, err
	}
	return signed, nil
}

// ServiceRemoveStatement is the statement by which the group service removes subject
// from groupID on its own authority: unsigned, and the only kind a client accepts
// without a member's signature.
func ServiceRemoveStatement(groupID string, sequence uint64, previousHash []byte, subject string, now time.Time) (*SignedMembershipStatement, error) {
	content, err := encodeStatement(groupID, sequence, previousHash, MembershipChange{Kind: KindServiceRemove, Subjects: []string{subject}}, "", nil, now)
	if err != nil {
		return nil, err
	}
	signed := &SignedMembershipStatement{Content: content}
	if _, err := ParseMembershipStatement(signed); err != nil {
		return nil, err
	}
	return signed, nil
}

func encodeStatement(groupID string, sequence uint64, previousHash []byte, change MembershipChange, signer string, signerCardID []byte, now time.Time) ([]byte, error) {
	subjects := slices.Clone(change.Subjects)
	slices.Sort(subjects)
	subjects = slices.Compact(subjects)
	var expires int64
	if !change.ExpiresAt.IsZero() {
		expires = change.ExpiresAt.Unix()
	}
	return Marshal(&envelopev1.MembershipStatementContent{
		Version:              membershipVersion,
		GroupId:              groupID,
		Sequence:             sequence,
		PreviousHash:         previousHash,
		Kind:                 change.Kind,
		Signer:               signer,
		SignerCardId:         signerCardID,
		Subjects:             subjects,
		Role:                 change.Role,
		InvitationHash:       change.InvitationHash,
		ExpiresAtUnixSeconds: expires,
		CreatedAtUnixSeconds: now.Unix(),
	})
}

// subjectCounts is how many subjects each kind takes, at least and at most.
var subjectCounts = map[MembershipKind][2]int{
	KindCreate:            {0, MaxMembershipSubjects},
	KindAdd:               {1, MaxMembershipSubjects},
	KindRemove:            {1, 1},
	KindBan:               {1, 1},
	KindUnban:             {1, 1},
	KindLeave:             {0, 1},
	KindSetRole:           {1, 1},
	KindTransferOwnership: {1, 1},
	KindInvite:            {1, 1},
	KindAcceptInvitation:  {0, 0},
	KindApproveJoin:       {1, 1},
	KindServiceRemove:     {1, 1},
}

// ParseMembershipStatement checks the shape of a statement: the content's canonical
// encoding within its size limit, version 1, a group identity, the chain position (a
// sequence of at least 1, a 32-byte previous hash exactly when the sequence is above
// 1), a kind this version knows (ErrUnknownKind otherwise), a signer identity, a card
// id and a 64-byte signature (none of the three for KindServiceRemove), the subjects in
// strictly ascending order, as many as the kind takes and never the signer, and the
// fields only some kinds carry. It does not verify the signature;
// VerifyMembershipStatement does.
func ParseMembershipStatement(signed *SignedMembershipStatement) (*MembershipStatement, error) {
	content, sig := signed.GetContent(), signed.GetSignature()
	m, err := parseContent[envelopev1.MembershipStatementContent]("membership statement", content, MaxMembershipStatementSize, membershipVersion)
	if err != nil {
		return nil, err
	}
	kind := m.GetKind()
	counts, known := subjectCounts[kind]
	switch {
	case !known:
		return nil, errorf(ErrUnknownKind, "membership statement kind %d is not one this version knows", int32(kind))
	case m.GetSequence() == 0:
		return nil, errorf(ErrMalformed, "membership statement sequence 0; the first is 1")
	case m.GetSequence() == 1 && len(m.GetPreviousHash()) != 0:
		return nil, errorf(ErrMalformed, "membership statement 1 names a previous statement")
	case m.GetSequence() > 1 && len(m.GetPreviousHash()) != CardIDSize:
		return nil, errorf(ErrMalformed, "previous hash of membership statement %d is %d bytes; want 32", m.GetSequence(), len(m.GetPreviousHash()))
	case (kind == KindCreate) != (m.GetSequence() == 1):
		return nil, errorf(ErrMalformed, "membership statement %d is of kind %s: a group's chain starts with CREATE, and only there", m.GetSequence(), kindName(kind))
	case m.GetCreatedAtUnixSeconds() <= 0:
		return nil, errorf(ErrMalformed, "membership statement has no creation time")
	case len(m.GetSubjects()) < counts[0] || len(m.GetSubjects()) > counts[1]:
		return nil, errorf(ErrMalformed, "a %s statement names %d subjects; it takes %d to %d", kindName(kind), len(m.GetSubjects()), counts[0], counts[1])
	case (kind == KindSetRole) != (m.GetRole() != RoleNone):
		return nil, errorf(ErrMalformed, "a %s statement has role %s: only SET_ROLE names a role", kindName(kind), m.GetRole())
	case kind == KindSetRole && m.GetRole() != RoleAdmin && m.GetRole() != RoleMember:
		return nil, errorf(ErrMalformed, "SET_ROLE gives role %s; it gives ADMIN or MEMBER (ownership moves with TRANSFER_OWNERSHIP)", m.GetRole())
	case (kind == KindAcceptInvitation) != (len(m.GetInvitationHash()) != 0):
		return nil, errorf(ErrMalformed, "a %s statement has a %d-byte invitation hash: only ACCEPT_INVITATION names one", kindName(kind), len(m.GetInvitationHash()))
	case kind == KindAcceptInvitation && len(m.GetInvitationHash()) != CardIDSize:
		return nil, errorf(ErrMalformed, "invitation hash is %d bytes; want 32", len(m.GetInvitationHash()))
	case (kind == KindInvite) != (m.GetExpiresAtUnixSeconds() != 0):
		return nil, errorf(ErrMalformed, "a %s statement has expiry %d: only INVITE has one", kindName(kind), m.GetExpiresAtUnixSeconds())
	case kind == KindInvite && m.GetExpiresAtUnixSeconds() <= m.GetCreatedAtUnixSeconds():
		return nil, errorf(ErrMalformed, "the invitation expires at %d, not after the statement's creation at %d", m.GetExpiresAtUnixSeconds(), m.GetCreatedAtUnixSeconds())
	}
	if err := ident.ValidGroup("membership statement group id", m.GetGroupId()); err != nil {
		return nil, errorf(ErrMalformed, "%v", err)
	}
	if kind != KindServiceRemove && m.GetSigner() == "" && len(m.GetSignerCardId()) == 0 && len(sig) == 0 {
		return nil, errorf(ErrNotAuthorized, "a %s statement without a signer: the service states only SERVICE_REMOVE, never an addition or any other change", kindName(kind))
	}
	if kind == KindServiceRemove {
		if m.GetSigner() != "" || len(m.GetSignerCardId()) != 0 || len(sig) != 0 {
			return nil, errorf(ErrMalformed, "a SERVICE_REMOVE statement has a signer, card or signature: the service signs nothing")
		}
	} else {
		if err := ident.ValidUser("membership statement signer", m.GetSigner()); err != nil {
			return nil, errorf(ErrMalformed, "%v", err)
		}
		switch {
		case len(m.GetSignerCardId()) != CardIDSize:
			return nil, errorf(ErrMalformed, "membership statement signer card id is %d bytes; want %d", len(m.GetSignerCardId()), CardIDSize)
		case len(sig) != ed25519.SignatureSize:
			return nil, errorf(ErrMalformed, "membership statement signature is %d bytes; want %d", len(sig), ed25519.SignatureSize)
		}
	}
	for i, s := range m.GetSubjects() {
		if err := ident.ValidUser("membership statement subject", s); err != nil {
			return nil, errorf(ErrMalformed, "%v", err)
		}
		if i > 0 && s <= m.GetSubjects()[i-1] {
			return nil, errorf(ErrMalformed, "membership statement subjects are not in strictly ascending order at %d", i)
		}
		if s == m.GetSigner() {
			return nil, errorf(ErrMalformed, "a %s statement names its signer %s as a subject", kindName(kind), s)
		}
	}
	st := &MembershipStatement{
		Content:        bytes.Clone(content),
		Signature:      bytes.Clone(sig),
		Hash:           sha(content),
		GroupID:        m.GetGroupId(),
		Sequence:       m.GetSequence(),
		PreviousHash:   m.GetPreviousHash(),
		Kind:           kind,
		Signer:         m.GetSigner(),
		SignerCardID:   m.GetSignerCardId(),
		Subjects:       m.GetSubjects(),
		Role:           m.GetRole(),
		InvitationHash: m.GetInvitationHash(),
		CreatedAt:      time.Unix(m.GetCreatedAtUnixSeconds(), 0).UTC(),
	}
	if m.GetExpiresAtUnixSeconds() != 0 {
		st.ExpiresAt = time.Unix(m.GetExpiresAtUnixSeconds(), 0).UTC()
	}
	return st, nil
}

// VerifyMembershipStatement parses signed (ParseMembershipStatement) and checks that it
// is a statement of groupID (ErrWrongGroup), that signer is the card it names and a card
// of its signer (ErrWrongSender), and that the card's key signed it (ErrBadSignature).
// signer is nil for a KindServiceRemove statement, which has no signature; any other
// statement needs it. Whether the card was the signer's when the statement was made is
// the caller's to check (its lifetime), and whether the signer may make the change is
// CheckMembershipChange's.
func VerifyMembershipStatement(signed *SignedMembershipStatement, groupID string, signer *Card) (*MembershipStatement, error) {
	st, err := ParseMembershipStatement(signed)
	if err != nil {
		return nil, err
	}
	switch {
	case st.GroupID != groupID:
		return nil, errorf(ErrWrongGroup, "membership statement %d is of group %s, not %s", st.Sequence, st.GroupID, groupID)
	case st.Kind == KindServiceRemove:
		return st, nil
	case signer == nil || len(signer.SigningKey) != ed25519.PublicKeySize:
		return nil, errorf(ErrWrongSender, "no signer card to verify membership statement %d with", st.Sequence)
	case !bytes.Equal(st.SignerCardID, signer.ID):
		return nil, errorf(ErrWrongSender, "membership statement %d names signer card %x, not %x", st.Sequence, st.SignerCardID, signer.ID)
	case signer.Identity != st.Signer:
		return nil, errorf(ErrWrongSender, "membership statement %d is signed by %s with a card of %s", st.Sequence, st.Signer, signer.Identity)
	case !verify(signer.SigningKey, Labelled(LabelMembershipStatementSignature, st.Content), st.Signature):
		return nil, errorf(ErrBadSignature, "membership statement %d signature does not verify with card %x", st.Sequence, signer.ID)
	}
	return st, nil
}

// MembershipState is the membership a statement is checked against: the state its
// chain yields up to the statement before it.
type MembershipState interface {
	// Role is identity's role, RoleNone if it is not a member.
	Role(identity string) MembershipRole
	// Banned reports whether identity is banned.
	Banned(identity string) bool
	// Invitation returns the hash and expiry of identity's pending invitation; ok is
	// false when it has none.
	Invitation(identity string) (hash []byte, expires time.Time, ok bool)
	// MemberCount is the number of members.
	MemberCount() int
}

// CheckMembershipChange checks that st's signer may make st's change in state, and that
// the change applies to it: ErrNotAuthorized for a signer without the role the change
// needs (anyone but an admin or the owner adding or removing, anyone but the owner
// setting roles, an admin removing an admin, an invitee accepting another's
// invitation...), ErrInvalidChange for a change that does not fit the state (adding a
// member or a banned identity, removing a non-member or the owner, lifting a ban that
// is not there...). It does not check the chain position.
func CheckMembershipChange(state MembershipState, st *MembershipStatement) error {
	signer := state.Role(st.Signer)
	manager := signer == RoleOwner || signer == RoleAdmin
	subject := st.Subject()
	role := state.Role(subject)
	needs := func(ok bool, who string) error {
		if ok {
			return nil
		}
		return errorf(ErrNotAuthorized, "statement %d (%s): %s is %s in the group; %s", st.Sequence, kindName(st.Kind), st.Signer, roleName(signer), who)
	}
	invalid := func(format string, args ...any) error {
		return errorf(ErrInvalidChange, "statement %d (%s): "+format, append([]any{st.Sequence, kindName(st.Kind)}, args...)...)
	}
	// checkTarget is the rule of REMOVE and BAN: nobody touches the owner, only the
	// owner an admin.
	checkTarget := func() error {
		switch {
		case role == RoleOwner:
			return errorf(ErrNotAuthorized, "statement %d (%s): %s is the owner, whom nobody removes or bans", st.Sequence, kindName(st.Kind), subject)
		case role == RoleAdmin && signer != RoleOwner:
			return needs(false, "only the owner removes or bans an admin")
		}
		return nil
	}
	joinable := func(id string) error {
		switch {
		case state.Role(id) != RoleNone:
			return invalid("%s is a member already", id)
		case state.Banned(id):
			return invalid("%s is banned", id)
		}
		return nil
	}
	switch st.Kind {
	case KindCreate:
		if state.MemberCount() != 0 {
			return invalid("the group exists already")
		}
	case KindAdd, KindApproveJoin, KindInvite:
		if err := needs(manager, "only an admin or the owner adds, approves or invites"); err != nil {
			return err
		}
		for _, id := range st.Subjects {
			if err := joinable(id); err != nil {
				return err
			}
		}
	case KindRemove:
		if err := needs(manager, "only an admin or the owner removes members"); err != nil {
			return err
		}
		if role == RoleNone {
			return invalid("%s is not a member", subject)
		}
		return checkTarget()
	case KindBan:
		if err := needs(manager, "only an admin or the owner bans"); err != nil {
			return err
		}
		if state.Banned(subject) {
			return invalid("%s is banned already", subject)
		}
		return checkTarget()
	case KindUnban:
		if err := needs(manager, "only an admin or the owner lifts bans"); err != nil {
			return err
		}
		if !state.Banned(subject) {
			return invalid("%s is not banned", subject)
		}
	case KindLeave:
		if err := needs(signer != RoleNone, "only a member leaves"); err != nil {
			return err
		}
		successor := signer == RoleOwner && state.MemberCount() > 1
		switch {
		case successor && (subject == "" || role == RoleNone):
			return invalid("the owner leaves without naming a member as the new owner")
		case !successor && subject != "":
			return invalid("names a new owner, but only an owner who leaves others behind does")
		}
	case KindSetRole:
		if err := needs(signer == RoleOwner, "only the owner sets roles"); err != nil {
			return err
		}
		switch role {
		case RoleNone:
			return invalid("%s is not a member", subject)
		case st.Role:
			return invalid("%s is %s already", subject, roleName(role))
		}
	case KindTransferOwnership:
		if err := needs(signer == RoleOwner, "only the owner transfers ownership"); err != nil {
			return err
		}
		if role == RoleNone {
			return invalid("%s is not a member", subject)
		}
	case KindAcceptInvitation:
		hash, expires, ok := state.Invitation(st.Signer)
		switch {
		case !ok || !bytes.Equal(hash, st.InvitationHash):
			return errorf(ErrNotAuthorized, "statement %d (%s): %s has no pending invitation %x", st.Sequence, kindName(st.Kind), st.Signer, st.InvitationHash)
		case !st.CreatedAt.Before(expires):
			return invalid("the invitation expired at %s", expires.Format(time.RFC3339))
		}
		return joinable(st.Signer)
	case KindServiceRemove:
		switch role {
		case RoleNone:
			return invalid("%s is not a member", subject)
		case RoleOwner:
			return errorf(ErrNotAuthorized, "statement %d (%s): the service may not remove the owner %s", st.Sequence, kindName(st.Kind), subject)
		}
	default:
		return errorf(ErrUnknownKind, "statement %d: kind %d", st.Sequence, int32(st.Kind))
	}
	return nil
}

func kindName(k MembershipKind) string {
	if name, ok := envelopev1.MembershipKind_name[int32(k)]; ok {
		return name[len("MEMBERSHIP_KIND_"):]
	}
	return "kind " + envelopev1.MembershipKind(k).String()
}

func roleName(r MembershipRole) string {
	switch r {
	case RoleOwner:
		return "the owner"
	case RoleAdmin:
		return "an admin"
	case RoleMember:
		return "a member"
	}
	return "not a member"
}
