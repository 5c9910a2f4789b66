package e2ee

import (
	"bytes"
	"crypto/ed25519"
	"errors"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	envelopev1 "github.com/umbra-e2ee/umbra/proto/umbra/envelope/v1"
)

var (
	testGroup  = "g_" + strings.Repeat("g", 32)
	otherGroup = "g_" + strings.Repeat("h", 32)
)

// groupKinds are every kind the group functions may fail with.
var groupKinds = append([]error{ErrNotMember, ErrWrongEpoch, ErrWrongGroup}, envelopeKinds...)

// wantKind fails t unless err is a typed e2ee error of kind want.
func wantKind(t testing.TB, err, want error) {
	t.Helper()
	var e *Error
	if !errors.As(err, &e) || !errors.Is(err, want) {
		t.Fatalf("error %v; want a typed %q error", err, want)
	}
}

// testEpoch commits epoch 1 of testGroup by signer to every member of ms, signer
// included.
func testEpoch(t testing.TB, signer member, ms ...member) *Epoch {
	t.Helper()
	e, err := NewEpoch(signer.kp, signer.card.ID, testGroup, 1, nil, testHead, cardsOf(append([]member{signer}, ms...)), when)
	if err != nil {
		t.Fatal(err)
	}
	return e
}

// onlyEpoch returns the epoch keys of a client that holds key, of epoch number, alone.
func onlyEpoch(number uint64, key []byte) func(epoch uint64) []byte {
	return func(epoch uint64) []byte {
		if epoch == number {
			return key
		}
		return nil
	}
}

func TestEpochRoundTrip(t *testing.T) {
	t.Parallel()
	for _, suite := range []Suite{SuiteX25519, SuiteHybrid} {
		t.Run(suite.String(), func(t *testing.T) {
			t.Parallel()
			owner := newMember(t, suite, alice, 1)
			ms := newMembers(t, 20, SuiteX25519, SuiteHybrid)
			e := testEpoch(t, owner, ms...)
			if len(e.WrappedKeys) != 21 || len(e.Key) != EpochKeySize || !bytes.Equal(e.CommitHash, sha(e.Commit.GetContent())) {
				t.Fatalf("epoch = %+v", e)
			}
			c, err := VerifyEpochCommit(e.Commit, testGroup, 1, owner.card)
			if err != nil {
				t.Fatal(err)
			}
			if c.WrappedKeyCount != 21 || !bytes.Equal(c.SignerCardID, owner.card.ID) || !c.CreatedAt.Equal(when) || len(c.PreviousCommitHash) != 0 || !bytes.Equal(c.Hash, e.CommitHash) {
				t.Errorf("commit = %+v", c)
			}
			if err := c.CheckWrappedKeys(e.WrappedKeys); err != nil {
				t.Error(err)
			}
			for i, m := range append([]member{owner}, ms...) {
				w := e.WrappedKeys[i]
				if !bytes.Equal(w.GetRecipientCardId(), m.card.ID) {
					t.Fatalf("wrap %d is to card %x; want %x (the order of recipients)", i, w.GetRecipientCardId(), m.card.ID)
				}
				key, err := c.OpenEpochKey(w, keysOf(m))
				if err != nil || !bytes.Equal(key, e.Key) {
					t.Errorf("member %d opens %x, %v", i, key, err)
				}
			}

			// The next epoch chains to this one.
			next, err := NewEpoch(ms[0].kp, ms[0].card.ID, testGroup, 2, e.CommitHash, testHead, cardsOf(ms), when.Add(time.Hour))
			if err != nil {
				t.Fatal(err)
			}
			c2, err := VerifyEpochCommit(next.Commit, testGroup, 2, ms[0].card)
			if err != nil || !bytes.Equal(c2.PreviousCommitHash, e.CommitHash) {
				t.Fatalf("epoch 2 = %+v, %v", c2, err)
			}
			if bytes.Equal(next.Key, e.Key) {
				t.Error("epoch 2 has epoch 1's key")
			}
			// The owner got no key of epoch 2.
			for _, w := range next.WrappedKeys {
				if _, err := c2.OpenEpochKey(w, keysOf(owner)); !errors.Is(err, ErrNotMember) {
					t.Fatalf("a non-recipient opens a wrap: %v", err)
				}
			}
		})
	}
}

func TestEpochCommitRefusals(t *testing.T) {
	t.Parallel()
	owner, bobM, mallory := newMember(t, SuiteX25519, alice, 1), newMember(t, SuiteHybrid, bob, 2), newMember(t, SuiteX25519, bob, 3)
	e := testEpoch(t, owner, bobM)
	commit, err := ParseEpochCommit(e.Commit)
	if err != nil {
		t.Fatal(err)
	}
	resign := func(edit func(*envelopev1.EpochCommitContent)) *SignedEpochCommit {
		var m envelopev1.EpochCommitContent
		if err := proto.Unmarshal(e.Commit.GetContent(), &m); err != nil {
			t.Fatal(err)
		}
		edit(&m)
		content, err := Marshal(&m)
		if err != nil {
			t.Fatal(err)
		}
		return &SignedEpochCommit{Content: content, Signature: signWith(owner.kp, LabelEpochCommitSignature, content)}
	}
	flipped := proto.Clone(e.Commit).(*SignedEpochCommit)
	flipped.Signature[3] ^= 1
	cases := []struct {
		name   string
		commit *SignedEpochCommit
		group  string
		epoch  uint64
		signer *Card
		want   error
	}{
		{"another group", e.Commit, otherGroup, 1, owner.card, ErrWrongGroup},
		{"another epoch", e.Commit, testGroup, 2, owner.card, ErrWrongEpoch},
		{"another signer card", e.Commit, testGroup, 1, bobM.card, ErrWrongSender},
		{"no signer card", e.Commit, testGroup, 1, nil, ErrWrongSender},
		{"a flipped signature bit", flipped, testGroup, 1, owner.card, ErrBadSignature},
		{"signed by another key under the signer's card id", &SignedEpochCommit{Content: e.Commit.GetContent(), Signature: signWith(mallory.kp, LabelEpochCommitSignature, e.Commit.GetContent())}, testGroup, 1, owner.card, ErrBadSignature},
		{"signed under the envelope label", &SignedEpochCommit{Content: e.Commit.GetContent(), Signature: signWith(owner.kp, LabelEnvelopeSignature, e.Commit.GetContent())}, testGroup, 1, owner.card, ErrBadSignature},
		{"truncated content", &SignedEpochCommit{Content: e.Commit.GetContent()[:40], Signature: e.Commit.GetSignature()}, testGroup, 1, owner.card, ErrMalformed},
		{"truncated signature", &SignedEpochCommit{Content: e.Commit.GetContent(), Signature: e.Commit.GetSignature()[:63]}, testGroup, 1, owner.card, ErrMalformed},
		{"no commit", nil, testGroup, 1, owner.card, ErrMalformed},
		{"unknown field", &SignedEpochCommit{Content: append(bytes.Clone(e.Commit.GetContent()), 0x50, 0x01), Signature: e.Commit.GetSignature()}, testGroup, 1, owner.card, ErrMalformed},
		{"too large", &SignedEpochCommit{Content: make([]byte, MaxEpochCommitContentSize+1), Signature: e.Commit.GetSignature()}, testGroup, 1, owner.card, ErrTooLarge},
		{"version 2", resign(func(m *envelopev1.EpochCommitContent) { m.Version = 2 }), testGroup, 1, owner.card, ErrMalformed},
		{"epoch 0", resign(func(m *envelopev1.EpochCommitContent) { m.Epoch = 0 }), testGroup, 0, owner.card, ErrMalformed},
		{"epoch 1 with a previous commit", resign(func(m *envelopev1.EpochCommitContent) { m.PreviousCommitHash = make([]byte, 32) }), testGroup, 1, owner.card, ErrMalformed},
		{"epoch 2 without a previous commit", resign(func(m *envelopev1.EpochCommitContent) { m.Epoch = 2 }), testGroup, 2, owner.card, ErrMalformed},
		{"a user identity as group", resign(func(m *envelopev1.EpochCommitContent) { m.GroupId = alice }), alice, 1, owner.card, ErrMalformed},
		{"short key commitment", resign(func(m *envelopev1.EpochCommitContent) { m.KeyCommitment = m.KeyCommitment[:31] }), testGroup, 1, owner.card, ErrMalformed},
		{"no wrapped keys", resign(func(m *envelopev1.EpochCommitContent) { m.WrappedKeyCount = 0 }), testGroup, 1, owner.card, ErrMalformed},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := VerifyEpochCommit(tc.commit, tc.group, tc.epoch, tc.signer)
			wantKind(t, err, tc.want)
		})
	}

	t.Run("wrapped keys that the commit does not sign", func(t *testing.T) {
		wantKind(t, commit.CheckWrappedKeys(e.WrappedKeys[:1]), ErrBadSignature)
		other := testEpoch(t, owner, bobM)
		wantKind(t, commit.CheckWrappedKeys([]*WrappedEpochKey{e.WrappedKeys[0], other.WrappedKeys[1]}), ErrBadSignature)
		// The order of the wraps does not matter.
		if err := commit.CheckWrappedKeys([]*WrappedEpochKey{e.WrappedKeys[1], e.WrappedKeys[0]}); err != nil {
			t.Error(err)
		}
		wantKind(t, commit.CheckWrappedKeys([]*WrappedEpochKey{e.WrappedKeys[0], e.WrappedKeys[0]}), ErrMalformed)
	})
	t.Run("a key that is not the committed one", func(t *testing.T) {
		// A malicious committer wraps another key to bob than the one it committed to.
		forged, err := WrapEpochKey(testGroup, 1, NewEpochKey(), bobM.card)
		if err != nil {
			t.Fatal(err)
		}
		_, err = commit.OpenEpochKey(forged, keysOf(bobM))
		wantKind(t, err, ErrBadSignature)
	})
	t.Run("a wrap for another epoch", func(t *testing.T) {
		w, err := WrapEpochKey(testGroup, 2, e.Key, bobM.card)
		if err != nil {
			t.Fatal(err)
		}
		_, err = commit.OpenEpochKey(w, keysOf(bobM))
		wantKind(t, err, ErrDecrypt)
	})
	t.Run("damaged wraps", func(t *testing.T) {
		w := proto.Clone(e.WrappedKeys[1]).(*WrappedEpochKey)
		w.Ciphertext[0] ^= 1
		_, err := commit.OpenEpochKey(w, keysOf(bobM))
		wantKind(t, err, ErrDecrypt)
		w = proto.Clone(e.WrappedKeys[1]).(*WrappedEpochKey)
		w.Ciphertext = w.Ciphertext[:47]
		_, err = commit.OpenEpochKey(w, keysOf(bobM))
		wantKind(t, err, ErrMalformed)
		// An X25519-sized enc for bob's hybrid card.
		_, err = commit.OpenEpochKey(&WrappedEpochKey{RecipientCardId: bobM.card.ID, Enc: e.WrappedKeys[0].GetEnc(), Ciphertext: e.WrappedKeys[0].GetCiphertext()}, keysOf(bobM))
		wantKind(t, err, ErrMalformed)
	})
	t.Run("bad arguments", func(t *testing.T) {
		_, err := NewEpoch(owner.kp, owner.card.ID, testGroup, 1, nil, testHead, []*Card{owner.card, owner.card}, when)
		wantKind(t, err, ErrMalformed)
		_, err = NewEpoch(owner.kp, owner.card.ID, testGroup, 1, nil, testHead, nil, when)
		wantKind(t, err, ErrMalformed)
		_, err = NewEpoch(owner.kp, owner.card.ID, testGroup, 0, nil, testHead, []*Card{owner.card}, when)
		wantKind(t, err, ErrMalformed)
		_, err = NewEpoch(owner.kp, owner.card.ID, alice, 1, nil, testHead, []*Card{owner.card}, when)
		wantKind(t, err, ErrMalformed)
		_, err = NewEpoch(owner.kp, owner.card.ID, testGroup, 1, nil, MembershipHead{}, []*Card{owner.card}, when)
		wantKind(t, err, ErrMalformed)
		_, err = NewEpoch(owner.kp, owner.card.ID, testGroup, 1, nil, MembershipHead{Sequence: 1, Hash: []byte("short")}, []*Card{owner.card}, when)
		wantKind(t, err, ErrMalformed)
		_, err = NewEpoch(owner.kp, owner.card.ID, testGroup, 2, nil, testHead, []*Card{owner.card}, when)
		wantKind(t, err, ErrMalformed)
		_, err = WrapEpochKey(testGroup, 1, make([]byte, 16), owner.card)
		wantKind(t, err, ErrMalformed)
	})
}

func TestGroupMessageRoundTrip(t *testing.T) {
	t.Parallel()
	sender, other := newMember(t, SuiteHybrid, alice, 1), newMember(t, SuiteX25519, bob, 2)
	e := testEpoch(t, sender, other)
	keys := onlyEpoch(1, e.Key)
	for _, aead := range []AEAD{AEADChaCha20Poly1305, AEADAES256GCM} {
		for _, plaintext := range [][]byte{nil, []byte("hello group"), bytes.Repeat([]byte("x"), 100000)} {
			data, err := SealGroupMessageWithAEAD(aead, sender.kp, sender.card.ID, testGroup, 1, e.Key, plaintext, when)
			if err != nil {
				t.Fatal(err)
			}
			info, err := InspectGroupMessage(data)
			if err != nil {
				t.Fatal(err)
			}
			if info.GroupID != testGroup || info.Epoch != 1 || !bytes.Equal(info.SenderCardID, sender.card.ID) || info.AEAD != aead || !info.CreatedAt.Equal(when) {
				t.Errorf("info = %+v", info)
			}
			got, err := OpenGroupMessage(data, testGroup, keys, sender.card)
			if err != nil || !bytes.Equal(got, plaintext) || got == nil {
				t.Errorf("%s, %d bytes: opened %d bytes, %v", aead, len(plaintext), len(got), err)
			}
		}
	}
	// Two messages of one epoch use different salts, so different keys.
	a, _ := SealGroupMessage(sender.kp, sender.card.ID, testGroup, 1, e.Key, []byte("same"), when)
	b, _ := SealGroupMessage(sender.kp, sender.card.ID, testGroup, 1, e.Key, []byte("same"), when)
	if bytes.Equal(a, b) {
		t.Error("two messages with the same plaintext are equal")
	}
}

func TestGroupMessageRefusals(t *testing.T) {
	t.Parallel()
	sender, other := newMember(t, SuiteX25519, alice, 1), newMember(t, SuiteX25519, bob, 2)
	e := testEpoch(t, sender, other)
	keys := onlyEpoch(1, e.Key)
	seal := func(m member, group string, epoch uint64, key []byte) []byte {
		data, err := SealGroupMessage(m.kp, m.card.ID, group, epoch, key, []byte("hello"), when)
		if err != nil {
			t.Fatal(err)
		}
		return data
	}
	good := seal(sender, testGroup, 1, e.Key)
	flipped := func(i int) []byte {
		d := bytes.Clone(good)
		d[i] ^= 1
		return d
	}
	// other signs a message but names sender's card.
	forged, err := sealGroupMessage(bytes.NewReader(make([]byte, 32)), DefaultAEAD, other.kp, sender.card.ID, testGroup, 1, e.Key, []byte("hello"), when)
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name   string
		data   []byte
		group  string
		keys   func(uint64) []byte
		sender *Card
		want   error
	}{
		{"another group's message", seal(sender, otherGroup, 1, e.Key), testGroup, keys, sender.card, ErrWrongGroup},
		{"another sender", good, testGroup, keys, other.card, ErrWrongSender},
		{"no sender card", good, testGroup, keys, nil, ErrWrongSender},
		{"an epoch we have no key of", seal(sender, testGroup, 2, NewEpochKey()), testGroup, keys, sender.card, ErrWrongEpoch},
		{"no keys at all", good, testGroup, nil, sender.card, ErrWrongEpoch},
		{"a key that is not the epoch's", seal(sender, testGroup, 1, NewEpochKey()), testGroup, keys, sender.card, ErrDecrypt},
		{"a flipped body bit", flipped(len(good) - 5), testGroup, keys, sender.card, ErrDecrypt},
		{"a forged signature", forged, testGroup, keys, sender.card, ErrBadSignature},
		{"truncated", good[:len(good)-1], testGroup, keys, sender.card, ErrMalformed},
		{"truncated to its header", good[:10], testGroup, keys, sender.card, ErrMalformed},
		{"empty", nil, testGroup, keys, sender.card, ErrMalformed},
		{"trailing garbage", append(bytes.Clone(good), 0x1a, 0x00), testGroup, keys, sender.card, ErrMalformed},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			pt, err := OpenGroupMessage(tc.data, tc.group, tc.keys, tc.sender)
			if pt != nil {
				t.Errorf("opened %q", pt)
			}
			wantKind(t, err, tc.want)
		})
	}

	t.Run("header rules", func(t *testing.T) {
		m, err := parseGroupMessage(good)
		if err != nil {
			t.Fatal(err)
		}
		for name, tc := range map[string]struct {
			edit func(*envelopev1.GroupMessageHeader)
			want error
		}{
			"version 2":        {func(h *envelopev1.GroupMessageHeader) { h.Version = 2 }, ErrMalformed},
			"epoch 0":          {func(h *envelopev1.GroupMessageHeader) { h.Epoch = 0 }, ErrMalformed},
			"short salt":       {func(h *envelopev1.GroupMessageHeader) { h.Salt = h.Salt[:31] }, ErrMalformed},
			"short card id":    {func(h *envelopev1.GroupMessageHeader) { h.SenderCardId = h.SenderCardId[:31] }, ErrMalformed},
			"no time":          {func(h *envelopev1.GroupMessageHeader) { h.CreatedAtUnixSeconds = 0 }, ErrMalformed},
			"a user as group":  {func(h *envelopev1.GroupMessageHeader) { h.GroupId = alice }, ErrMalformed},
			"unknown AEAD":     {func(h *envelopev1.GroupMessageHeader) { h.Aead = 9 }, ErrUnknownSuite},
			"unspecified AEAD": {func(h *envelopev1.GroupMessageHeader) { h.Aead = 0 }, ErrUnknownSuite},
		} {
			h := proto.Clone(m.h).(*envelopev1.GroupMessageHeader)
			tc.edit(h)
			header, err := Marshal(h)
			if err != nil {
				t.Fatal(err)
			}
			data := appendBytesField(appendBytesField(nil, 1, header), 2, m.body)
			_, err = InspectGroupMessage(data)
			if !errors.Is(err, tc.want) {
				t.Errorf("%s: %v; want %v", name, err, tc.want)
			}
		}
	})
	t.Run("bad arguments", func(t *testing.T) {
		_, err := SealGroupMessage(sender.kp, sender.card.ID, testGroup, 1, e.Key[:16], nil, when)
		wantKind(t, err, ErrWrongEpoch)
		_, err = SealGroupMessage(sender.kp, sender.card.ID[:5], testGroup, 1, e.Key, nil, when)
		wantKind(t, err, ErrMalformed)
		_, err = SealGroupMessage(sender.kp, sender.card.ID, testGroup, 0, e.Key, nil, when)
		wantKind(t, err, ErrMalformed)
		_, err = SealGroupMessageWithAEAD(0, sender.kp, sender.card.ID, testGroup, 1, e.Key, nil, when)
		wantKind(t, err, ErrUnknownSuite)
	})
}

func signWith(kp *KeyPair, label string, content []byte) []byte {
	return ed25519.Sign(kp.Signing, Labelled(label, content))
}

// testHead is the membership head the test commits name.
var testHead = MembershipHead{Sequence: 1, Hash: sha([]byte("membership head"))}
