package e2ee

import (
	"bytes"
	"crypto/ed25519"
	"fmt"
	"testing"
	"time"

	"github.com/umbra-e2ee/umbra/pkg/internal/vectortest"
)

// The membership test vectors of docs/wire-format.md ("Membership statements"): one
// group's chain, signed with the key pairs and cards of testdata/vectors.json. Ed25519
// is deterministic, so the vectors need no randomness. TestMembershipVectors checks
// them as TestVectors checks the others: every statement verifies and the chain applies
// with nothing but the values stated, generating them again gives the same bytes, and
// the document shows exactly these bytes. Regenerate after an intended change with
//
//	go test ./pkg/e2ee -run '^TestMembershipVectors$' -update-vectors

const membershipVectorsFile = "testdata/membership_vectors.json"

type membershipVectorFile struct {
	Comment    []string          `json:"comment"`
	GroupID    string            `json:"group_id"`
	Statements []statementVector `json:"statements"`
	// Members are the identities and roles the whole chain yields, sorted.
	Members []memberVector `json:"members"`
}

type statementVector struct {
	Sequence uint64 `json:"sequence"`
	Kind     string `json:"kind"`
	// SignerCard names the card of vectors.json that signed; empty for SERVICE_REMOVE.
	SignerCard     string         `json:"signer_card"`
	Content        vectortest.Hex `json:"content"`
	SignatureInput vectortest.Hex `json:"signature_input"`
	Signature      vectortest.Hex `json:"signature"`
	Hash           vectortest.Hex `json:"hash"`
}

type memberVector struct {
	Identity string `json:"identity"`
	Role     string `json:"role"`
}

func generateMembershipVectors(t *testing.T) *membershipVectorFile {
	keys, cards := loadVectorKeys(t)
	v := &membershipVectorFile{
		Comment: []string{
			"Membership test vectors of docs/wire-format.md: all byte strings are hex.",
			"Key pairs and cards are those of vectors.json; every statement's previous_hash is the hash of the one before it.",
		},
		GroupID: groupVectorsGroup,
	}
	bob, carol := cards["bob"].Identity, cards["carol"].Identity
	created := time.Date(2026, 11, 3, 12, 0, 0, 0, time.UTC)
	m := NewMembership(groupVectorsGroup)
	var invite []byte
	for i, s := range []struct {
		signer string
		change func() MembershipChange
	}{
		{"alice-1", func() MembershipChange { return MembershipChange{Kind: KindCreate, Subjects: []string{bob}} }},
		{"alice-1", func() MembershipChange {
			return MembershipChange{Kind: KindInvite, Subjects: []string{carol}, ExpiresAt: created.Add(7 * 24 * time.Hour)}
		}},
		{"carol", func() MembershipChange { return MembershipChange{Kind: KindAcceptInvitation, InvitationHash: invite} }},
		{"alice-1", func() MembershipChange {
			return MembershipChange{Kind: KindSetRole, Subjects: []string{bob}, Role: RoleAdmin}
		}},
		{"bob", func() MembershipChange { return MembershipChange{Kind: KindRemove, Subjects: []string{carol}} }},
		{"bob", func() MembershipChange { return MembershipChange{Kind: KindAdd, Subjects: []string{carol}} }},
		{"", func() MembershipChange { return MembershipChange{Kind: KindServiceRemove, Subjects: []string{carol}} }},
		{"alice-2", func() MembershipChange { return MembershipChange{Kind: KindLeave, Subjects: []string{bob}} }},
	} {
		at := created.Add(time.Duration(i+1) * time.Hour)
		change := s.change()
		var signed *SignedMembershipStatement
		var err error
		if s.signer == "" {
			signed, err = ServiceRemoveStatement(groupVectorsGroup, m.Sequence()+1, m.Head(), change.Subjects[0], at)
		} else {
			card := cards[s.signer]
			signed, err = SignMembershipStatement(keys["card:"+s.signer], card.ID, card.Identity, groupVectorsGroup, m.Sequence()+1, m.Head(), change, at)
		}
		if err != nil {
			t.Fatal(err)
		}
		st, err := VerifyMembershipStatement(signed, groupVectorsGroup, cards[s.signer])
		if err != nil {
			t.Fatal(err)
		}
		if err := m.Apply(st); err != nil {
			t.Fatal(err)
		}
		if st.Kind == KindInvite {
			invite = st.Hash
		}
		sv := statementVector{Sequence: st.Sequence, Kind: kindName(st.Kind), SignerCard: s.signer, Content: signed.GetContent(), Signature: signed.GetSignature(), Hash: st.Hash}
		if s.signer != "" {
			sv.SignatureInput = Labelled(LabelMembershipStatementSignature, signed.GetContent())
		}
		v.Statements = append(v.Statements, sv)
	}
	for _, id := range m.Members() {
		v.Members = append(v.Members, memberVector{Identity: id, Role: m.Role(id).String()})
	}
	return v
}

func TestMembershipVectors(t *testing.T) {
	vectortest.Check(t, vectortest.Set[membershipVectorFile]{
		File:     membershipVectorsFile,
		Section:  "MEMBERSHIP TEST VECTORS",
		Generate: generateMembershipVectors,
		Verify:   verifyMembershipVectors,
		Render:   renderMembershipVectors,
		Changed:  "the membership statement format changed",
	})
}

// verifyMembershipVectors checks every statement with only the values it states and the
// cards of vectors.json, as an implementation in another language would.
func verifyMembershipVectors(t *testing.T, v *membershipVectorFile) {
	_, cards := loadVectorKeys(t)
	m := NewMembership(v.GroupID)
	var previous []byte
	for _, s := range v.Statements {
		signed := &SignedMembershipStatement{Content: s.Content, Signature: s.Signature}
		st, err := VerifyMembershipStatement(signed, v.GroupID, cards[s.SignerCard])
		if err != nil {
			t.Fatalf("statement %d: %v", s.Sequence, err)
		}
		switch {
		case !bytes.Equal(sha(s.Content), s.Hash):
			t.Errorf("statement %d: hash is not SHA-256 of the content", s.Sequence)
		case st.Sequence != s.Sequence || kindName(st.Kind) != s.Kind || !bytes.Equal(st.PreviousHash, previous):
			t.Errorf("statement %d: sequence, kind or previous hash differ from the vector", s.Sequence)
		case s.SignerCard == "" && (len(s.Signature) != 0 || st.Signer != ""):
			t.Errorf("statement %d: the service's statement has a signer or signature", s.Sequence)
		case s.SignerCard != "" && (!bytes.Equal(s.SignatureInput, append([]byte(LabelMembershipStatementSignature+"\x00"), s.Content...)) ||
			!ed25519.Verify(cards[s.SignerCard].SigningKey, s.SignatureInput, s.Signature)):
			t.Errorf("statement %d: the signature is not Ed25519 over LABEL || content", s.Sequence)
		}
		if err := m.Apply(st); err != nil {
			t.Fatalf("statement %d: %v", s.Sequence, err)
		}
		previous = s.Hash
	}
	var got []memberVector
	for _, id := range m.Members() {
		got = append(got, memberVector{Identity: id, Role: m.Role(id).String()})
	}
	if fmt.Sprint(got) != fmt.Sprint(v.Members) {
		t.Errorf("the chain yields members %v; the vectors say %v", got, v.Members)
	}
}

func renderMembershipVectors(v *membershipVectorFile) string {
	var b vectortest.Doc
	fmt.Fprintf(&b, "\nThe same values are in `pkg/e2ee/testdata/membership_vectors.json`. Group: `%s`.\n", v.GroupID)
	for _, s := range v.Statements {
		signer := "card " + s.SignerCard
		if s.SignerCard == "" {
			signer = "the group service (unsigned)"
		}
		b.Block(fmt.Sprintf("Statement %d: %s, by %s", s.Sequence, s.Kind, signer), func() {
			b.Field("content (MembershipStatementContent)", s.Content)
			b.Field("signature", s.Signature)
			b.Field("hash = SHA-256(content)", s.Hash)
		})
	}
	b.WriteString("\nThe members the chain yields:\n\n")
	for _, m := range v.Members {
		fmt.Fprintf(&b, "- `%s`: %s\n", m.Identity, m.Role)
	}
	b.WriteString("\n")
	return b.String()
}
