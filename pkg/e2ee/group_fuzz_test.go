package e2ee

import (
	"bytes"
	"crypto/ed25519"
	"testing"

	"github.com/umbra-e2ee/umbra/pkg/internal/vectortest"
)

// FuzzOpenGroupMessage feeds group message bytes to InspectGroupMessage and
// OpenGroupMessage with a fixed epoch key and sender. They must never panic, fail only
// with a typed error, and agree with each other.
func FuzzOpenGroupMessage(f *testing.F) {
	sender := newMember(f, SuiteX25519, alice, 1)
	// A fixed epoch key, so that every fuzzing process opens the seeds.
	epochKey := vectortest.Counting(0x20, EpochKeySize)
	for _, seed := range []struct {
		aead      AEAD
		plaintext []byte
	}{
		{AEADChaCha20Poly1305, []byte("hello group")},
		{AEADAES256GCM, []byte("hello group, in AES")},
		{AEADChaCha20Poly1305, nil},
	} {
		data, err := SealGroupMessageWithAEAD(seed.aead, sender.kp, sender.card.ID, testGroup, 1, epochKey, seed.plaintext, when)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
		f.Add(data[:len(data)-1])
	}
	f.Add([]byte{})
	keys := onlyEpoch(1, epochKey)
	f.Fuzz(func(t *testing.T, data []byte) {
		info, inspectErr := InspectGroupMessage(data)
		plaintext, err := OpenGroupMessage(data, testGroup, keys, sender.card)
		if !openAgrees(t, fuzzedOpen{"OpenGroupMessage", "InspectGroupMessage", "a message", groupKinds}, plaintext, err, inspectErr) {
			return
		}
		if info.GroupID != testGroup || info.Epoch != 1 || !bytes.Equal(info.SenderCardID, sender.card.ID) {
			t.Fatalf("OpenGroupMessage accepted a message of %s epoch %d by %x", info.GroupID, info.Epoch, info.SenderCardID)
		}
	})
}

// FuzzParseEpochCommit feeds commit content bytes to ParseEpochCommit and
// VerifyEpochCommit: never a panic, only typed errors, and an accepted commit is
// exactly the bytes that were signed.
func FuzzParseEpochCommit(f *testing.F) {
	signer, other := newMember(f, SuiteX25519, alice, 1), newMember(f, SuiteX25519, bob, 2)
	e, err := NewEpoch(signer.kp, signer.card.ID, testGroup, 1, nil, testHead, cardsOf([]member{signer, other}), when)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(e.Commit.GetContent(), e.Commit.GetSignature())
	f.Add(e.Commit.GetContent()[:20], e.Commit.GetSignature())
	f.Add([]byte{}, []byte{})
	f.Fuzz(func(t *testing.T, content, signature []byte) {
		signed := &SignedEpochCommit{Content: content, Signature: signature}
		parsed, parseErr := ParseEpochCommit(signed)
		c, err := VerifyEpochCommit(signed, testGroup, 1, signer.card)
		if parseErr != nil {
			checkKind(t, parseErr, groupKinds)
			if err == nil {
				t.Fatal("VerifyEpochCommit accepts a commit ParseEpochCommit refuses")
			}
		} else if !bytes.Equal(parsed.Content, content) {
			t.Fatal("a parsed commit is not its bytes")
		}
		if err != nil {
			checkKind(t, err, groupKinds)
			return
		}
		// (The seed commit differs between fuzzing processes: its key and wraps are
		// random. So the check is on the property, not on the seed's bytes.)
		if !bytes.Equal(c.Content, content) || c.GroupID != testGroup || c.Epoch != 1 ||
			!ed25519.Verify(signer.card.SigningKey, Labelled(LabelEpochCommitSignature, content), signature) {
			t.Fatal("VerifyEpochCommit accepted a commit that the signer did not sign for this group and epoch")
		}
	})
}

// FuzzParseMembershipStatement feeds statement content and signature bytes to
// ParseMembershipStatement, VerifyMembershipStatement and Membership.Apply: never a
// panic, only typed errors, and an accepted statement is exactly the bytes the signer
// signed.
func FuzzParseMembershipStatement(f *testing.F) {
	c := newChain(f)
	c.step(alice, MembershipChange{Kind: KindCreate, Subjects: []string{bob}})
	next := c.sign(alice, MembershipChange{Kind: KindAdd, Subjects: []string{carol, dave}})
	f.Add(next.GetContent(), next.GetSignature())
	f.Add(c.signed[0].GetContent(), c.signed[0].GetSignature())
	f.Add(next.GetContent()[:30], next.GetSignature())
	f.Add([]byte{}, []byte{})
	signer := c.members[alice].card
	f.Fuzz(func(t *testing.T, content, signature []byte) {
		signed := &SignedMembershipStatement{Content: content, Signature: signature}
		_, parseErr := ParseMembershipStatement(signed)
		st, err := VerifyMembershipStatement(signed, testGroup, signer)
		if parseErr != nil {
			checkKind(t, parseErr, membershipKinds)
			if err == nil {
				t.Fatal("VerifyMembershipStatement accepts a statement ParseMembershipStatement refuses")
			}
		}
		if err != nil {
			checkKind(t, err, membershipKinds)
			return
		}
		m := NewMembership(testGroup)
		if err := m.Apply(st); err != nil {
			checkKind(t, err, membershipKinds)
			return
		}
		if st.Kind != KindServiceRemove && !ed25519.Verify(signer.SigningKey, Labelled(LabelMembershipStatementSignature, content), signature) {
			t.Fatal("a statement the signer did not sign was applied")
		}
	})
}

// membershipKinds are every kind the membership functions may fail with.
var membershipKinds = append([]error{ErrBrokenChain, ErrNotAuthorized, ErrInvalidChange, ErrUnknownKind}, groupKinds...)
