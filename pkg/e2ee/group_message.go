package e2ee

import (
	"crypto/ed25519"
	"crypto/hkdf"
	"crypto/rand"
	"crypto/sha256"
	"fmt"
	"io"
	"time"

	"github.com/umbra-e2ee/umbra/pkg/ident"
	envelopev1 "github.com/umbra-e2ee/umbra/proto/umbra/envelope/v1"
)

// Sizes and limits of a GroupMessage.
const (
	MaxGroupMessageHeaderSize = 1024
	MaxGroupMessageSize       = MaxGroupMessageHeaderSize + MaxPlaintextSize + envelopeOverhead

	groupMessageVersion = 1
	groupSaltSize       = 32
	// groupMessageKeyLen is what HKDF derives per message: an AEAD key and a nonce.
	groupMessageKeyLen = contentKeySize + bodyNonceSize
)

// GroupMessageInfo is what a GroupMessage's header says, read without any key.
type GroupMessageInfo struct {
	GroupID string
	// Epoch whose key encrypted the message.
	Epoch uint64
	// SenderCardID is the card whose key signed the message.
	SenderCardID []byte
	AEAD         AEAD
	// CreatedAt is when the sender says it wrote the message.
	CreatedAt time.Time
	// HeaderHash is SHA-256 of the exact header bytes.
	HeaderHash []byte
}

// SealGroupMessage encrypts plaintext for a group under epochKey, the key of epoch of
// groupID, signed by sender, whose card id is senderCardID, with the default AEAD. It
// returns the encoded GroupMessage. now dates the message.
func SealGroupMessage(sender *KeyPair, senderCardID []byte, groupID string, epoch uint64, epochKey, plaintext []byte, now time.Time) ([]byte, error) {
	return sealGroupMessage(rand.Reader, DefaultAEAD, sender, senderCardID, groupID, epoch, epochKey, plaintext, now)
}

// SealGroupMessageWithAEAD is SealGroupMessage with the body AEAD aead.
func SealGroupMessageWithAEAD(aead AEAD, sender *KeyPair, senderCardID []byte, groupID string, epoch uint64, epochKey, plaintext []byte, now time.Time) ([]byte, error) {
	return sealGroupMessage(rand.Reader, aead, sender, senderCardID, groupID, epoch, epochKey, plaintext, now)
}

// sealGroupMessage is SealGroupMessage with the salt read from rnd.
func sealGroupMessage(rnd io.Reader, aead AEAD, sender *KeyPair, senderCardID []byte, groupID string, epoch uint64, epochKey, plaintext []byte, now time.Time) ([]byte, error) {
	switch {
	case sender == nil || len(sender.Signing) != ed25519.PrivateKeySize:
		return nil, errorf(ErrMalformed, "no sender signing key")
	case len(senderCardID) != CardIDSize:
		return nil, errorf(ErrMalformed, "sender card id is %d bytes; want %d", len(senderCardID), CardIDSize)
	case len(plaintext) > MaxPlaintextSize:
		return nil, errorf(ErrTooLarge, "plaintext is %d bytes; at most %d", len(plaintext), MaxPlaintextSize)
	case now.Unix() <= 0:
		return nil, errorf(ErrMalformed, "creation time %v is not after the Unix epoch", now)
	}
	if len(epochKey) != EpochKeySize {
		return nil, errorf(ErrWrongEpoch, "epoch key is %d bytes; want %d", len(epochKey), EpochKeySize)
	}
	if err := checkEpochArgs(groupID, epoch, nil); err != nil {
		return nil, err
	}
	if _, err := bodyAEAD(aead, make([]byte, contentKeySize)); err != nil {
		return nil, err
	}
	salt := make([]byte, groupSaltSize)
	if _, err := io.ReadFull(rnd, salt); err != nil {
		return nil, fmt.Errorf("e2ee: read randomness: %w", err)
	}
	header, err := Marshal(&envelopev1.GroupMessageHeader{
		Version:              groupMessageVersion,
		GroupId:              groupID,
		Epoch:                epoch,
		SenderCardId:         senderCardID,
		Salt:                 salt,
		Aead:                 aead,
		CreatedAtUnixSeconds: now.Unix(),
	})
	if err != nil {
		return nil, err
	}
	headerHash := sha(header)
	key, nonce, err := groupMessageKey(epochKey, salt, headerHash)
	if err != nil {
		return nil, err
	}
	signature := ed25519.Sign(sender.Signing, Labelled(LabelGroupMessageSignature, headerHash, plaintext))
	return sealSigned(aead, key, nonce, header, plaintext, signature)
}

// groupMessageKey derives a message's AEAD key and nonce:
//
//	HKDF-SHA256(ikm = epoch key, salt, info = LABEL("umbra/v1/group-message-key") || SHA-256(header), 44)
func groupMessageKey(epochKey, salt, headerHash []byte) (key, nonce []byte, err error) {
	okm, err := hkdf.Key(sha256.New, epochKey, salt, string(Labelled(LabelGroupMessageKey, headerHash)), groupMessageKeyLen)
	if err != nil {
		return nil, nil, fmt.Errorf("e2ee: derive the message key: %w", err)
	}
	return okm[:contentKeySize], okm[contentKeySize:], nil
}

// groupMessage is a parsed GroupMessage whose header passed every check that needs no
// key.
type groupMessage struct {
	header     []byte
	headerHash []byte
	body       []byte
	h          *envelopev1.GroupMessageHeader
}

func parseGroupMessage(data []byte) (*groupMessage, error) {
	var h envelopev1.GroupMessageHeader
	header, body, err := parseSealed("group message", data, MaxGroupMessageSize, MaxGroupMessageHeaderSize, &h)
	if err != nil {
		return nil, err
	}
	switch {
	case h.GetVersion() != groupMessageVersion:
		return nil, errorf(ErrMalformed, "group message version %d; this client reads version %d", h.GetVersion(), groupMessageVersion)
	case h.GetEpoch() == 0:
		return nil, errorf(ErrMalformed, "group message has no epoch")
	case len(h.GetSenderCardId()) != CardIDSize:
		return nil, errorf(ErrMalformed, "group message sender card id is %d bytes; want %d", len(h.GetSenderCardId()), CardIDSize)
	case len(h.GetSalt()) != groupSaltSize:
		return nil, errorf(ErrMalformed, "group message salt is %d bytes; want %d", len(h.GetSalt()), groupSaltSize)
	case h.GetCreatedAtUnixSeconds() <= 0:
		return nil, errorf(ErrMalformed, "group message has no creation time")
	}
	if err := ident.ValidGroup("group message group id", h.GetGroupId()); err != nil {
		return nil, errorf(ErrMalformed, "%v", err)
	}
	if _, err := bodyAEAD(h.GetAead(), make([]byte, contentKeySize)); err != nil {
		return nil, err
	}
	return &groupMessage{header: header, headerHash: sha(header), body: body, h: &h}, nil
}

// InspectGroupMessage parses data and checks its header, with no key: what a client
// reads to find the epoch key and the sender's card. It authenticates nothing; only
// OpenGroupMessage does.
func InspectGroupMessage(data []byte) (*GroupMessageInfo, error) {
	m, err := parseGroupMessage(data)
	if err != nil {
		return nil, err
	}
	return &GroupMessageInfo{
		GroupID:      m.h.GetGroupId(),
		Epoch:        m.h.GetEpoch(),
		SenderCardID: m.h.GetSenderCardId(),
		AEAD:         m.h.GetAead(),
		CreatedAt:    time.Unix(m.h.GetCreatedAtUnixSeconds(), 0).UTC(),
		HeaderHash:   m.headerHash,
	}, nil
}

// OpenGroupMessage opens a GroupMessage of groupID sent by the card sender. epochKey
// returns our key of an epoch, or nil if we have none. It checks, in order: the
// encoding and limits (ErrTooLarge, ErrMalformed, ErrUnknownSuite), that the message
// is of groupID (ErrWrongGroup), that it names sender's card (ErrWrongSender), that we
// hold the key of its epoch (ErrWrongEpoch), that the body authenticates under the
// derived key (ErrDecrypt), and sender's signature (ErrBadSignature). Whether sender's
// card belongs to a member and was valid when the message was written is the
// caller's to check.
func OpenGroupMessage(data []byte, groupID string, epochKey func(epoch uint64) []byte, sender *Card) ([]byte, error) {
	m, err := parseGroupMessage(data)
	if err != nil {
		return nil, err
	}
	if m.h.GetGroupId() != groupID {
		return nil, errorf(ErrWrongGroup, "the message is of group %s, not %s", m.h.GetGroupId(), groupID)
	}
	if err := checkSender(m.h.GetSenderCardId(), sender); err != nil {
		return nil, err
	}
	var ek []byte
	if epochKey != nil {
		ek = epochKey(m.h.GetEpoch())
	}
	if len(ek) != EpochKeySize {
		return nil, errorf(ErrWrongEpoch, "no key of epoch %d of group %s", m.h.GetEpoch(), groupID)
	}
	key, nonce, err := groupMessageKey(ek, m.h.GetSalt(), m.headerHash)
	if err != nil {
		return nil, err
	}
	c, err := bodyAEAD(m.h.GetAead(), key)
	if err != nil {
		return nil, err
	}
	payload, err := c.Open(nil, nonce, m.body, m.header)
	if err != nil {
		return nil, errorf(ErrDecrypt, "group message body does not authenticate under the key of epoch %d", m.h.GetEpoch())
	}
	return verifySigned("group message", LabelGroupMessageSignature, payload, m.headerHash, sender)
}
