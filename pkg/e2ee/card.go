package e2ee

import (
	"bytes"
	"crypto/ed25519"
	"crypto/hpke"
	"crypto/sha256"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/umbra-e2ee/umbra/pkg/ident"
	envelopev1 "github.com/umbra-e2ee/umbra/proto/umbra/envelope/v1"
)

// Size limits of the signed card structures.
const (
	MaxCardContentSize = 4096
	MaxEndorsementSize = 256
	// CardIDSize is the size of a card id: a SHA-256.
	CardIDSize         = sha256.Size
	cardVersion        = 1
	endorsementVersion = 1
)

// Card is a card whose content parsed and whose self-signature verified.
type Card struct {
	// ID is SHA-256 of Content.
	ID []byte
	// Content is the exact CardContent bytes; SelfSignature signs them.
	Content       []byte
	SelfSignature []byte

	Identity       string
	SigningKey     ed25519.PublicKey
	Suite          Suite
	KEMPublicKey   hpke.PublicKey
	CreatedAt      time.Time
	PreviousCardID []byte
}

// CardID returns the id of a card with these content bytes.
func CardID(content []byte) []byte { return sha(content) }

// NewCard encodes the content of a card of identity for kp and signs it. previous is the
// id of the card it replaces, or nil for a first card.
func NewCard(kp *KeyPair, identity string, createdAt time.Time, previous []byte) (content, selfSignature []byte, err error) {
	c := &envelopev1.CardContent{
		Version:              cardVersion,
		Identity:             identity,
		SigningPublicKey:     kp.SigningPublicKey(),
		Suite:                kp.Suite,
		KemPublicKey:         kp.KEMPublicKey(),
		CreatedAtUnixSeconds: createdAt.Unix(),
		PreviousCardId:       previous,
	}
	content, err = Marshal(c)
	if err != nil {
		return nil, nil, err
	}
	if _, err := parseCardContent(content); err != nil {
		return nil, nil, err // the caller gave a bad identity or previous id
	}
	return content, ed25519.Sign(kp.Signing, Labelled(LabelCardSelfSignature, content)), nil
}

// ParseCard checks everything a card says about itself: canonical encoding within the
// size limit, version, identity shape, key sizes, a known suite and a KEM key that
// parses in it, and the self-signature over the exact content bytes. What it cannot
// know (whose card this should be, whether it is active, the clock) is the caller's to
// check.
func ParseCard(content, selfSignature []byte) (*Card, error) {
	c, err := parseCardContent(content)
	if err != nil {
		return nil, err
	}
	if len(selfSignature) != ed25519.SignatureSize {
		return nil, errorf(ErrMalformed, "card self-signature is %d bytes; want %d", len(selfSignature), ed25519.SignatureSize)
	}
	if !verify(c.SigningKey, Labelled(LabelCardSelfSignature, content), selfSignature) {
		return nil, errorf(ErrBadSignature, "card self-signature does not verify")
	}
	c.SelfSignature = bytes.Clone(selfSignature)
	return c, nil
}

func parseCardContent(content []byte) (*Card, error) {
	m, err := parseContent[envelopev1.CardContent]("card content", content, MaxCardContentSize, cardVersion)
	if err != nil {
		return nil, err
	}
	switch {
	case len(m.GetSigningPublicKey()) != ed25519.PublicKeySize:
		return nil, errorf(ErrMalformed, "card signing key is %d bytes; want %d", len(m.GetSigningPublicKey()), ed25519.PublicKeySize)
	case m.GetCreatedAtUnixSeconds() <= 0:
		return nil, errorf(ErrMalformed, "card has no creation time")
	case len(m.GetPreviousCardId()) != 0 && len(m.GetPreviousCardId()) != CardIDSize:
		return nil, errorf(ErrMalformed, "card previous_card_id is %d bytes; want %d or none", len(m.GetPreviousCardId()), CardIDSize)
	}
	if err := ident.ValidUser("card identity", m.GetIdentity()); err != nil {
		return nil, errorf(ErrMalformed, "%v", err)
	}
	if err := checkSigningKey("card signing key", m.GetSigningPublicKey()); err != nil {
		return nil, err
	}
	p, err := params(m.GetSuite())
	if err != nil {
		return nil, err
	}
	if len(m.GetKemPublicKey()) != p.publicLen {
		return nil, errorf(ErrMalformed, "card KEM key is %d bytes; suite %s wants %d", len(m.GetKemPublicKey()), m.GetSuite(), p.publicLen)
	}
	kem, err := p.kem.NewPublicKey(m.GetKemPublicKey())
	if err != nil {
		return nil, errorf(ErrMalformed, "card KEM key does not parse: %v", err)
	}
	if err := checkKEMPublicKey(m.GetSuite(), m.GetKemPublicKey()); err != nil {
		return nil, err
	}
	return &Card{
		ID:             CardID(content),
		Content:        bytes.Clone(content),
		Identity:       m.GetIdentity(),
		SigningKey:     ed25519.PublicKey(m.GetSigningPublicKey()),
		Suite:          m.GetSuite(),
		KEMPublicKey:   kem,
		CreatedAt:      time.Unix(m.GetCreatedAtUnixSeconds(), 0).UTC(),
		PreviousCardID: m.GetPreviousCardId(),
	}, nil
}

// Endorse signs, with the key of the card being replaced, that next replaces it.
func Endorse(previous *KeyPair, next *Card) (content, signature []byte, err error) {
	if len(next.PreviousCardID) != CardIDSize {
		return nil, nil, errorf(ErrMalformed, "the new card names no previous card to endorse it")
	}
	content, err = Marshal(&envelopev1.RotationEndorsementContent{
		Version:        endorsementVersion,
		Identity:       next.Identity,
		PreviousCardId: next.PreviousCardID,
		NewCardId:      next.ID,
	})
	if err != nil {
		return nil, nil, err
	}
	return content, ed25519.Sign(previous.Signing, Labelled(LabelCardRotationEndorsement, content)), nil
}

// VerifyEndorsement checks that previous's key endorsed next as its successor.
func VerifyEndorsement(previous, next *Card, content, signature []byte) error {
	m, err := parseContent[envelopev1.RotationEndorsementContent]("endorsement", content, MaxEndorsementSize, endorsementVersion)
	if err != nil {
		return err
	}
	switch {
	case m.GetIdentity() != next.Identity || previous.Identity != next.Identity:
		return errorf(ErrMalformed, "endorsement names identity %q for cards of %q and %q", m.GetIdentity(), previous.Identity, next.Identity)
	case !bytes.Equal(m.GetPreviousCardId(), previous.ID) || !bytes.Equal(next.PreviousCardID, previous.ID):
		return errorf(ErrMalformed, "endorsement does not name the previous card")
	case !bytes.Equal(m.GetNewCardId(), next.ID):
		return errorf(ErrMalformed, "endorsement does not name the new card")
	case len(signature) != ed25519.SignatureSize:
		return errorf(ErrMalformed, "endorsement signature is %d bytes; want %d", len(signature), ed25519.SignatureSize)
	case !verify(previous.SigningKey, Labelled(LabelCardRotationEndorsement, content), signature):
		return errorf(ErrBadSignature, "endorsement signature does not verify with the previous card's key")
	}
	return nil
}

// ServiceSign is the card service's counter-signature over a card id.
func ServiceSign(key ed25519.PrivateKey, cardID []byte) []byte {
	return ed25519.Sign(key, Labelled(LabelCardServiceSignature, cardID))
}

// VerifyServiceSignature checks the card service's counter-signature over a card id.
func VerifyServiceSignature(key ed25519.PublicKey, cardID, signature []byte) error {
	if len(key) != ed25519.PublicKeySize || len(signature) != ed25519.SignatureSize ||
		!verify(key, Labelled(LabelCardServiceSignature, cardID), signature) {
		return errorf(ErrBadSignature, "card service signature does not verify")
	}
	return nil
}

// Marshal encodes m deterministically: the one encoding every signed structure uses
// (docs/wire-format.md, section 2), and that UnmarshalStrict accepts.
func Marshal(m proto.Message) ([]byte, error) {
	b, err := proto.MarshalOptions{Deterministic: true}.Marshal(m)
	if err != nil {
		return nil, errorf(ErrMalformed, "encode: %v", err)
	}
	return b, nil
}

// versionedContent is the message of a signed structure's content, with its format
// version.
type versionedContent[T any] interface {
	*T
	proto.Message
	GetVersion() uint32
}

// parseContent reads b, the content of what (a card, an epoch commit...): at most max
// bytes, as UnmarshalStrict parses it, of format version version.
func parseContent[T any, P versionedContent[T]](what string, b []byte, max int, version uint32) (P, error) {
	if len(b) > max {
		return nil, errorf(ErrTooLarge, "%s is %d bytes; at most %d", what, len(b), max)
	}
	m := P(new(T))
	if err := UnmarshalStrict(what, b, m); err != nil {
		return nil, err
	}
	if m.GetVersion() != version {
		return nil, errorf(ErrMalformed, "%s version %d; this client reads version %d", what, m.GetVersion(), version)
	}
	return m, nil
}

// UnmarshalStrict parses b into m and refuses what a careful parser must: truncated or
// invalid protobuf, unknown fields, and any encoding other than the canonical one (so
// one structure has exactly one byte string, and so one id and one signature).
func UnmarshalStrict(what string, b []byte, m proto.Message) error {
	if err := (proto.UnmarshalOptions{}).Unmarshal(b, m); err != nil {
		return errorf(ErrMalformed, "%s does not parse (truncated or corrupt): %v", what, err)
	}
	if hasUnknown(m.ProtoReflect()) {
		return errorf(ErrMalformed, "%s has fields this version does not know", what)
	}
	canon, err := Marshal(m)
	if err != nil {
		return err
	}
	if !bytes.Equal(canon, b) {
		return errorf(ErrMalformed, "%s is not in canonical encoding", what)
	}
	return nil
}

// hasUnknown reports whether m or any message inside it holds unknown fields.
func hasUnknown(m protoreflect.Message) bool {
	if len(m.GetUnknown()) > 0 {
		return true
	}
	found := false
	m.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		if fd.Message() == nil || fd.IsMap() {
			return true
		}
		if fd.IsList() {
			for i := 0; i < v.List().Len() && !found; i++ {
				found = hasUnknown(v.List().Get(i).Message())
			}
		} else {
			found = hasUnknown(v.Message())
		}
		return !found
	})
	return found
}
