package e2ee

import (
	"bytes"
	"crypto/ed25519"
	"crypto/hpke"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"runtime"
	"slices"
	"sync"
	"time"

	"github.com/umbra-e2ee/umbra/pkg/ident"
	envelopev1 "github.com/umbra-e2ee/umbra/proto/umbra/envelope/v1"
)

// Sizes and limits of epochs.
const (
	// EpochKeySize is the size of a group's epoch key.
	EpochKeySize = 32
	// MaxEpochCommitContentSize bounds an EpochCommitContent.
	MaxEpochCommitContentSize = 1024
	// MaxEpochRecipients bounds the wrapped keys of one commit: the group service's
	// largest member limit.
	MaxEpochRecipients = 10000

	epochCommitVersion  = 1
	wrappedEpochKeySize = EpochKeySize + aeadTagSize
)

// WrappedEpochKey is an epoch key wrapped to one card.
type WrappedEpochKey = envelopev1.WrappedEpochKey

// SignedEpochCommit is the exact content bytes of an epoch commit and their signature.
type SignedEpochCommit = envelopev1.SignedEpochCommit

// NewEpochKey returns a fresh random epoch key.
func NewEpochKey() []byte {
	key := make([]byte, EpochKeySize)
	rand.Read(key) // never fails (crypto/rand)
	return key
}

// EpochKeyCommitment is the hash that a commit signs to bind the epoch key of epoch
// of groupID:
//
//	SHA-256(LABEL("umbra/v1/epoch-key-commitment") || str(groupID) || u64(epoch) || key)
func EpochKeyCommitment(groupID string, epoch uint64, key []byte) []byte {
	return sha(Labelled(LabelEpochKeyCommitment, str(groupID), u64(epoch), key))
}

// epochKeyWrapInfo is the HPKE info of a WrappedEpochKey.
func epochKeyWrapInfo(groupID string, epoch uint64, recipientCardID []byte) []byte {
	return Labelled(LabelEpochKeyWrap, str(groupID), u64(epoch), recipientCardID)
}

// checkEpochArgs refuses a group id, epoch or key that no commit may carry.
func checkEpochArgs(groupID string, epoch uint64, key []byte) error {
	if err := ident.ValidGroup("group id", groupID); err != nil {
		return errorf(ErrMalformed, "%v", err)
	}
	if epoch == 0 {
		return errorf(ErrMalformed, "epoch 0 has no key; the first epoch is 1")
	}
	if key != nil && len(key) != EpochKeySize {
		return errorf(ErrMalformed, "epoch key is %d bytes; want %d", len(key), EpochKeySize)
	}
	return nil
}

// WrapEpochKey wraps key, the key of epoch of groupID, to recipient's card with HPKE
// in the card's suite.
func WrapEpochKey(groupID string, epoch uint64, key []byte, recipient *Card) (*WrappedEpochKey, error) {
	if err := checkEpochArgs(groupID, epoch, key); err != nil {
		return nil, err
	}
	if err := checkRecipient(recipient); err != nil {
		return nil, err
	}
	return wrapEpochKey(groupID, epoch, key, recipient)
}

func wrapEpochKey(groupID string, epoch uint64, key []byte, r *Card) (*WrappedEpochKey, error) {
	enc, ct, err := wrapKey("epoch key", key, r, epochKeyWrapInfo(groupID, epoch, r.ID))
	if err != nil {
		return nil, err
	}
	return &WrappedEpochKey{RecipientCardId: r.ID, Enc: enc, Ciphertext: ct}, nil
}

// WrapEpochKeys wraps key to every card of recipients, on as many goroutines as
// GOMAXPROCS, and returns the wraps in the order of recipients. The cards must be
// distinct.
func WrapEpochKeys(groupID string, epoch uint64, key []byte, recipients []*Card) ([]*WrappedEpochKey, error) {
	return wrapEpochKeys(runtime.GOMAXPROCS(0), groupID, epoch, key, recipients)
}

// wrapEpochKeys is WrapEpochKeys on workers goroutines; one makes the HPKE randomness
// consumption, and so the test vectors, deterministic.
func wrapEpochKeys(workers int, groupID string, epoch uint64, key []byte, recipients []*Card) ([]*WrappedEpochKey, error) {
	if err := checkEpochArgs(groupID, epoch, key); err != nil {
		return nil, err
	}
	switch {
	case len(recipients) == 0:
		return nil, errorf(ErrMalformed, "no recipients for the epoch key")
	case len(recipients) > MaxEpochRecipients:
		return nil, errorf(ErrTooLarge, "%d recipients for the epoch key; at most %d", len(recipients), MaxEpochRecipients)
	}
	if err := checkRecipients(recipients, nil, nil); err != nil {
		return nil, err
	}
	out := make([]*WrappedEpochKey, len(recipients))
	workers = max(1, min(workers, len(recipients)))
	if workers == 1 {
		for i, r := range recipients {
			w, err := wrapEpochKey(groupID, epoch, key, r)
			if err != nil {
				return nil, err
			}
			out[i] = w
		}
		return out, nil
	}
	errs := make([]error, len(recipients))
	var wg sync.WaitGroup
	next := make(chan int)
	for range workers {
		wg.Go(func() {
			for i := range next {
				out[i], errs[i] = wrapEpochKey(groupID, epoch, key, recipients[i])
			}
		})
	}
	for i := range recipients {
		next <- i
	}
	close(next)
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return out, nil
}

// checkWrappedEpochKey checks the shape of a wrap: a card id, an encapsulated key of
// either suite's size, and a ciphertext of one key.
func checkWrappedEpochKey(w *WrappedEpochKey) error {
	if w == nil {
		return errorf(ErrMalformed, "no wrapped key")
	}
	switch {
	case len(w.GetRecipientCardId()) != CardIDSize:
		return errorf(ErrMalformed, "wrapped key's card id is %d bytes; want %d", len(w.GetRecipientCardId()), CardIDSize)
	case len(w.GetEnc()) != suites[SuiteHybrid].encLen && len(w.GetEnc()) != suites[SuiteX25519].encLen:
		return errorf(ErrMalformed, "wrapped key's encapsulated key is %d bytes; no suite has that size", len(w.GetEnc()))
	case len(w.GetCiphertext()) != wrappedEpochKeySize:
		return errorf(ErrMalformed, "wrapped key's ciphertext is %d bytes; want %d", len(w.GetCiphertext()), wrappedEpochKeySize)
	}
	return nil
}

// WrappedKeysDigest is the digest of a commit's wrapped keys that its content signs:
//
//	SHA-256(LABEL("umbra/v1/epoch-recipients") || u32(n) || entry_1 || ... || entry_n)
//
// over the keys in ascending order of recipient card id, where entry_i =
// recipient_card_id || SHA-256(u16(len(enc)) || enc || ciphertext). The order of keys
// does not matter; two keys for one card are refused.
func WrappedKeysDigest(keys []*WrappedEpochKey) ([]byte, error) {
	if len(keys) > MaxEpochRecipients {
		return nil, errorf(ErrTooLarge, "%d wrapped keys; at most %d", len(keys), MaxEpochRecipients)
	}
	for i, w := range keys {
		if err := checkWrappedEpochKey(w); err != nil {
			return nil, fmt.Errorf("wrapped key %d: %w", i, err)
		}
	}
	sorted := slices.Clone(keys)
	slices.SortFunc(sorted, func(a, b *WrappedEpochKey) int {
		return bytes.Compare(a.GetRecipientCardId(), b.GetRecipientCardId())
	})
	buf := Labelled(LabelEpochRecipients, u32(uint32(len(sorted))))
	buf = slices.Grow(buf, len(sorted)*2*CardIDSize)
	for i, w := range sorted {
		if i > 0 && bytes.Equal(w.GetRecipientCardId(), sorted[i-1].GetRecipientCardId()) {
			return nil, errorf(ErrMalformed, "two wrapped keys for card %x", w.GetRecipientCardId())
		}
		buf = append(buf, w.GetRecipientCardId()...)
		buf = append(buf, sha(u16(uint16(len(w.GetEnc()))), w.GetEnc(), w.GetCiphertext())...)
	}
	return sha(buf), nil
}

// MembershipHead names a statement of a group's membership chain: the head an epoch
// commit was made for.
type MembershipHead struct {
	Sequence uint64
	Hash     []byte
}

// Epoch is a new epoch as its committer creates it: the key, its wraps and the signed
// commit, ready for the group service's CommitEpoch.
type Epoch struct {
	GroupID string
	Number  uint64
	// Key is the epoch key. It never leaves the client but wrapped.
	Key []byte
	// WrappedKeys are the wraps of Key, in the order of the recipients given.
	WrappedKeys []*WrappedEpochKey
	// Commit is the signed EpochCommitContent.
	Commit *SignedEpochCommit
	// CommitHash is SHA-256 of the commit's content: the next epoch's
	// previous_commit_hash.
	CommitHash []byte
}

// NewEpoch creates epoch number of groupID: a fresh key, wrapped to every card of
// recipients (the current cards of all members that the membership chain yields at
// head, the committer's included), and the commit signed by signer, whose card is
// signerCardID. previousCommitHash is the current epoch's CommitHash, empty when number
// is 1. now dates the commit.
func NewEpoch(signer *KeyPair, signerCardID []byte, groupID string, number uint64, previousCommitHash []byte, head MembershipHead, recipients []*Card, now time.Time) (*Epoch, error) {
	return newEpoch(rand.Reader, runtime.GOMAXPROCS(0), signer, signerCardID, groupID, number, previousCommitHash, head, recipients, now)
}

// newEpoch is NewEpoch with the epoch key read from rnd.
func newEpoch(rnd io.Reader, workers int, signer *KeyPair, signerCardID []byte, groupID string, number uint64, previousCommitHash []byte, head MembershipHead, recipients []*Card, now time.Time) (*Epoch, error) {
	if err := checkEpochArgs(groupID, number, nil); err != nil {
		return nil, err
	}
	key := make([]byte, EpochKeySize)
	if _, err := io.ReadFull(rnd, key); err != nil {
		return nil, fmt.Errorf("e2ee: read randomness: %w", err)
	}
	wrapped, err := wrapEpochKeys(workers, groupID, number, key, recipients)
	if err != nil {
		return nil, err
	}
	commit, err := SignEpochCommit(signer, signerCardID, groupID, number, key, wrapped, previousCommitHash, head, now)
	if err != nil {
		return nil, err
	}
	return &Epoch{GroupID: groupID, Number: number, Key: key, WrappedKeys: wrapped, Commit: commit, CommitHash: sha(commit.GetContent())}, nil
}

// SignEpochCommit encodes and signs the EpochCommitContent of epoch of groupID whose
// key is key and whose wraps are wrapped, made for the membership chain's head.
func SignEpochCommit(signer *KeyPair, signerCardID []byte, groupID string, epoch uint64, key []byte, wrapped []*WrappedEpochKey, previousCommitHash []byte, head MembershipHead, now time.Time) (*SignedEpochCommit, error) {
	switch {
	case signer == nil || len(signer.Signing) != ed25519.PrivateKeySize:
		return nil, errorf(ErrMalformed, "no signing key for the commit")
	case len(signerCardID) != CardIDSize:
		return nil, errorf(ErrMalformed, "signer card id is %d bytes; want %d", len(signerCardID), CardIDSize)
	case now.Unix() <= 0:
		return nil, errorf(ErrMalformed, "commit time %v is not after the Unix epoch", now)
	case len(wrapped) == 0:
		return nil, errorf(ErrMalformed, "a commit without wrapped keys")
	}
	if err := checkMembershipHead(head.Sequence, head.Hash); err != nil {
		return nil, err
	}
	if err := checkEpochArgs(groupID, epoch, key); err != nil {
		return nil, err
	}
	if err := checkPreviousCommitHash(epoch, previousCommitHash); err != nil {
		return nil, err
	}
	digest, err := WrappedKeysDigest(wrapped)
	if err != nil {
		return nil, err
	}
	content, err := Marshal(&envelopev1.EpochCommitContent{
		Version:              epochCommitVersion,
		GroupId:              groupID,
		Epoch:                epoch,
		SignerCardId:         signerCardID,
		KeyCommitment:        EpochKeyCommitment(groupID, epoch, key),
		WrappedKeysDigest:    digest,
		WrappedKeyCount:      uint32(len(wrapped)),
		PreviousCommitHash:   previousCommitHash,
		CreatedAtUnixSeconds: now.Unix(),
		MembershipSequence:   head.Sequence,
		MembershipHash:       head.Hash,
	})
	if err != nil {
		return nil, err
	}
	return &SignedEpochCommit{Content: content, Signature: ed25519.Sign(signer.Signing, Labelled(LabelEpochCommitSignature, content))}, nil
}

// checkMembershipHead refuses a commit that names no membership head.
func checkMembershipHead(sequence uint64, hash []byte) error {
	switch {
	case sequence == 0:
		return errorf(ErrMalformed, "epoch commit names no membership head (sequence 0)")
	case len(hash) != CardIDSize:
		return errorf(ErrMalformed, "epoch commit's membership head hash is %d bytes; want 32", len(hash))
	}
	return nil
}

func checkPreviousCommitHash(epoch uint64, h []byte) error {
	switch {
	case epoch == 1 && len(h) != 0:
		return errorf(ErrMalformed, "epoch 1 has a previous commit hash")
	case epoch > 1 && len(h) != CardIDSize:
		return errorf(ErrMalformed, "previous commit hash of epoch %d is %d bytes; want 32", epoch, len(h))
	}
	return nil
}

// EpochCommit is an epoch commit whose content parsed.
type EpochCommit struct {
	// Content is the exact EpochCommitContent bytes; Signature signs them.
	Content   []byte
	Signature []byte
	// Hash is SHA-256(Content).
	Hash []byte

	GroupID            string
	Epoch              uint64
	SignerCardID       []byte
	KeyCommitment      []byte
	WrappedKeysDigest  []byte
	WrappedKeyCount    uint32
	PreviousCommitHash []byte
	CreatedAt          time.Time
	// Membership is the head of the membership chain the commit was made for.
	Membership MembershipHead
}

// ParseEpochCommit checks the shape of a signed commit: the content's canonical
// encoding within its size limit, version 1, a group identity, an epoch of at least 1,
// the sizes of its ids and hashes, a membership head, and a 64-byte signature. It does not verify the
// signature; VerifyEpochCommit does.
func ParseEpochCommit(signed *SignedEpochCommit) (*EpochCommit, error) {
	content, sig := signed.GetContent(), signed.GetSignature()
	m, err := parseContent[envelopev1.EpochCommitContent]("epoch commit", content, MaxEpochCommitContentSize, epochCommitVersion)
	if err != nil {
		return nil, err
	}
	switch {
	case len(m.GetSignerCardId()) != CardIDSize:
		return nil, errorf(ErrMalformed, "epoch commit signer card id is %d bytes; want %d", len(m.GetSignerCardId()), CardIDSize)
	case len(m.GetKeyCommitment()) != CardIDSize:
		return nil, errorf(ErrMalformed, "epoch commit key commitment is %d bytes; want 32", len(m.GetKeyCommitment()))
	case len(m.GetWrappedKeysDigest()) != CardIDSize:
		return nil, errorf(ErrMalformed, "epoch commit wrapped keys digest is %d bytes; want 32", len(m.GetWrappedKeysDigest()))
	case m.GetWrappedKeyCount() == 0:
		return nil, errorf(ErrMalformed, "epoch commit wraps the key to nobody")
	case m.GetWrappedKeyCount() > MaxEpochRecipients:
		return nil, errorf(ErrTooLarge, "epoch commit has %d wrapped keys; at most %d", m.GetWrappedKeyCount(), MaxEpochRecipients)
	case m.GetCreatedAtUnixSeconds() <= 0:
		return nil, errorf(ErrMalformed, "epoch commit has no creation time")
	case len(sig) != ed25519.SignatureSize:
		return nil, errorf(ErrMalformed, "epoch commit signature is %d bytes; want %d", len(sig), ed25519.SignatureSize)
	}
	if err := checkEpochArgs(m.GetGroupId(), m.GetEpoch(), nil); err != nil {
		return nil, err
	}
	if err := checkPreviousCommitHash(m.GetEpoch(), m.GetPreviousCommitHash()); err != nil {
		return nil, err
	}
	if err := checkMembershipHead(m.GetMembershipSequence(), m.GetMembershipHash()); err != nil {
		return nil, err
	}
	return &EpochCommit{
		Content:            bytes.Clone(content),
		Signature:          bytes.Clone(sig),
		Hash:               sha(content),
		GroupID:            m.GetGroupId(),
		Epoch:              m.GetEpoch(),
		SignerCardID:       m.GetSignerCardId(),
		KeyCommitment:      m.GetKeyCommitment(),
		WrappedKeysDigest:  m.GetWrappedKeysDigest(),
		WrappedKeyCount:    m.GetWrappedKeyCount(),
		PreviousCommitHash: m.GetPreviousCommitHash(),
		CreatedAt:          time.Unix(m.GetCreatedAtUnixSeconds(), 0).UTC(),
		Membership:         MembershipHead{Sequence: m.GetMembershipSequence(), Hash: m.GetMembershipHash()},
	}, nil
}

// VerifyEpochCommit parses signed (ParseEpochCommit), checks that it is the commit of
// epoch of groupID (ErrWrongGroup, ErrWrongEpoch), that it names signer's card
// (ErrWrongSender) and that signer's key signed it (ErrBadSignature). Whether signer's
// card belongs to a member of the group is the caller's to check, with ErrNotMember.
func VerifyEpochCommit(signed *SignedEpochCommit, groupID string, epoch uint64, signer *Card) (*EpochCommit, error) {
	c, err := ParseEpochCommit(signed)
	if err != nil {
		return nil, err
	}
	switch {
	case c.GroupID != groupID:
		return nil, errorf(ErrWrongGroup, "the commit is of group %s, not %s", c.GroupID, groupID)
	case c.Epoch != epoch:
		return nil, errorf(ErrWrongEpoch, "the commit is of epoch %d, not %d", c.Epoch, epoch)
	case signer == nil || len(signer.SigningKey) != ed25519.PublicKeySize:
		return nil, errorf(ErrWrongSender, "no signer card to verify the commit with")
	case !bytes.Equal(c.SignerCardID, signer.ID):
		return nil, errorf(ErrWrongSender, "the commit names signer card %x, not %x", c.SignerCardID, signer.ID)
	case !verify(signer.SigningKey, Labelled(LabelEpochCommitSignature, c.Content), c.Signature):
		return nil, errorf(ErrBadSignature, "epoch commit signature does not verify with card %x", signer.ID)
	}
	return c, nil
}

// CheckWrappedKeys reports whether keys are exactly the wraps the commit signs: their
// number and digest (ErrBadSignature otherwise).
func (c *EpochCommit) CheckWrappedKeys(keys []*WrappedEpochKey) error {
	if uint32(len(keys)) != c.WrappedKeyCount {
		return errorf(ErrBadSignature, "%d wrapped keys; the commit signs %d", len(keys), c.WrappedKeyCount)
	}
	digest, err := WrappedKeysDigest(keys)
	if err != nil {
		return err
	}
	if !bytes.Equal(digest, c.WrappedKeysDigest) {
		return errorf(ErrBadSignature, "the wrapped keys are not those the commit signs")
	}
	return nil
}

// OpenEpochKey unwraps the epoch key of a verified commit from w, a wrap to one of our
// cards: keyFor returns the key pair of a card of ours by card id, current or
// superseded (a Keystore's KeyFor). It fails with ErrMalformed for a wrap of the wrong
// shape or suite, ErrNotMember if the wrap is to a card we hold no key for, ErrDecrypt
// if it does not open, and ErrBadSignature if the key is not the one the commit's
// key_commitment binds (a committer handing different keys to different members, or
// a re-share substituting a key).
func (c *EpochCommit) OpenEpochKey(w *WrappedEpochKey, keyFor func(cardID []byte) *KeyPair) ([]byte, error) {
	if err := checkWrappedEpochKey(w); err != nil {
		return nil, err
	}
	var kp *KeyPair
	if keyFor != nil {
		kp = keyFor(w.GetRecipientCardId())
	}
	if kp == nil {
		return nil, errorf(ErrNotMember, "the epoch %d key is wrapped to card %x, which is not ours", c.Epoch, w.GetRecipientCardId())
	}
	p, err := params(kp.Suite)
	if err != nil {
		return nil, err
	}
	if kp.KEM == nil || len(w.GetEnc()) != p.encLen {
		return nil, errorf(ErrMalformed, "the epoch key wrapped to our card %x is not of its suite %s", w.GetRecipientCardId(), kp.Suite)
	}
	r, err := hpke.NewRecipient(w.GetEnc(), kp.KEM, hpkeKDF(), hpkeAEAD(), epochKeyWrapInfo(c.GroupID, c.Epoch, w.GetRecipientCardId()))
	if err != nil {
		return nil, errorf(ErrDecrypt, "the epoch %d key wrapped to card %x does not open: %v", c.Epoch, w.GetRecipientCardId(), err)
	}
	key, err := r.Open(nil, w.GetCiphertext())
	if err != nil {
		return nil, errorf(ErrDecrypt, "the epoch %d key wrapped to card %x does not open", c.Epoch, w.GetRecipientCardId())
	}
	if !bytes.Equal(EpochKeyCommitment(c.GroupID, c.Epoch, key), c.KeyCommitment) {
		return nil, errorf(ErrBadSignature, "the epoch %d key does not match the signed commit's key commitment", c.Epoch)
	}
	return key, nil
}
