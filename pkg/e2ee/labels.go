package e2ee

import (
	"crypto/sha256"
	"encoding/binary"
)

// The domain-separation labels. Each is used for exactly one purpose, always as
// label || 0x00 at the start of what is signed, hashed or used as HPKE/HKDF info.
const (
	LabelCardSelfSignature       = "umbra/v1/card-self-signature"
	LabelCardRotationEndorsement = "umbra/v1/card-rotation-endorsement"
	LabelCardServiceSignature    = "umbra/v1/card-service-signature"
	LabelCardServiceKeyRotation  = "umbra/v1/card-service-key-rotation"
	LabelSafetyNumber            = "umbra/v1/safety-number"
	LabelEnvelopeKeyWrap         = "umbra/v1/envelope-key-wrap"
	LabelEnvelopeSignature       = "umbra/v1/envelope-signature"
	LabelGroupMessageKey         = "umbra/v1/group-message-key"
	LabelGroupMessageSignature   = "umbra/v1/group-message-signature"
	LabelEpochKeyWrap            = "umbra/v1/epoch-key-wrap"
	LabelEpochKeyCommitment      = "umbra/v1/epoch-key-commitment"
	LabelEpochRecipients         = "umbra/v1/epoch-recipients"
	LabelEpochCommitSignature    = "umbra/v1/epoch-commit-signature"
	// LabelMembershipStatementSignature is the label of a membership statement's
	// signature.
	LabelMembershipStatementSignature = "umbra/v1/membership-statement-signature"
)

// Labelled returns LABEL(label) || parts...: the label's bytes, a zero byte, then the
// parts as they are.
func Labelled(label string, parts ...[]byte) []byte {
	n := len(label) + 1
	for _, p := range parts {
		n += len(p)
	}
	out := make([]byte, 0, n)
	out = append(append(out, label...), 0)
	for _, p := range parts {
		out = append(out, p...)
	}
	return out
}

// str encodes s as u16(len(s)) || s.
func str(s string) []byte {
	return append(binary.BigEndian.AppendUint16(nil, uint16(len(s))), s...)
}

func u16(n uint16) []byte { return binary.BigEndian.AppendUint16(nil, n) }
func u32(n uint32) []byte { return binary.BigEndian.AppendUint32(nil, n) }
func u64(n uint64) []byte { return binary.BigEndian.AppendUint64(nil, n) }

func sha(parts ...[]byte) []byte {
	h := sha256.New()
	for _, p := range parts {
		h.Write(p)
	}
	return h.Sum(nil)
}
