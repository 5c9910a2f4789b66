package e2ee

import (
	"bytes"
	"crypto/ed25519"
	"crypto/sha512"
	"encoding/binary"
	"fmt"
	"strings"
	"time"

	envelopev1 "github.com/umbra-e2ee/umbra/proto/umbra/envelope/v1"
)

// What a client needs to decide trust in cards itself (docs/wire-format.md, 5.4–5.6):
// safety numbers, and the card service's signed key rotations.

const (
	// SafetyNumberVersion is the version of the safety-number derivation.
	SafetyNumberVersion = 1
	// SafetyNumberIterations is how many times each side's hash is iterated.
	SafetyNumberIterations = 5200
	// MaxServiceKeyRotationSize bounds a ServiceKeyRotationContent.
	MaxServiceKeyRotationSize = 256
	serviceKeyRotationVersion = 1
	safetyHalfDigits          = 30
)

// SafetyNumber returns the safety number of two identities, each with the signing key
// of its current card: 60 decimal digits in 12 groups of 5, separated by spaces. It is
// the same whichever side computes it (the two halves are in ascending order), so two
// people who read the same number to each other hold each other's real keys.
func SafetyNumber(identityA string, keyA ed25519.PublicKey, identityB string, keyB ed25519.PublicKey) (string, error) {
	a, err := SafetyNumberHalf(identityA, keyA)
	if err != nil {
		return "", err
	}
	b, err := SafetyNumberHalf(identityB, keyB)
	if err != nil {
		return "", err
	}
	if identityA == identityB {
		return "", errorf(ErrMalformed, "a safety number is between two identities; both are %s", identityA)
	}
	if b < a {
		a, b = b, a
	}
	digits := a + b
	groups := make([]string, 0, len(digits)/5)
	for i := 0; i < len(digits); i += 5 {
		groups = append(groups, digits[i:i+5])
	}
	return strings.Join(groups, " "), nil
}

// SafetyNumberHalf returns one side's 30 digits: h = SHA-512(LABEL("umbra/v1/safety-number")
// || u16(version) || str(identity) || key), then SafetyNumberIterations times
// h = SHA-512(h || key); the first 30 bytes of h, as six big-endian 40-bit numbers,
// each mod 100000 written as 5 digits.
func SafetyNumberHalf(identity string, key ed25519.PublicKey) (string, error) {
	if identity == "" || len(identity) > 0xffff {
		return "", errorf(ErrMalformed, "safety number: identity of %d bytes", len(identity))
	}
	if err := checkSigningKey("safety number signing key", key); err != nil {
		return "", err
	}
	h := sha512.Sum512(Labelled(LabelSafetyNumber, u16(SafetyNumberVersion), str(identity), key))
	buf := make([]byte, 0, sha512.Size+ed25519.PublicKeySize)
	for range SafetyNumberIterations {
		buf = append(append(buf[:0], h[:]...), key...)
		h = sha512.Sum512(buf)
	}
	var out strings.Builder
	for i := 0; i < safetyHalfDigits/5; i++ {
		var chunk [8]byte
		copy(chunk[3:], h[i*5:i*5+5])
		fmt.Fprintf(&out, "%05d", binary.BigEndian.Uint64(chunk[:])%100000)
	}
	return out.String(), nil
}

// ServiceKeyRotation is a verified statement of the card service that NewKeyID
// replaced PreviousKeyID at CreatedAt.
type ServiceKeyRotation struct {
	// Content is the exact ServiceKeyRotationContent bytes; Signature signs them.
	Content       []byte
	Signature     []byte
	PreviousKeyID string
	NewKeyID      string
	NewPublicKey  ed25519.PublicKey
	CreatedAt     time.Time
}

// SignServiceKeyRotation is the card service's statement, signed with previous (the key
// being replaced, whose id is previousKeyID), that newKey (id newKeyID) replaces it
// from createdAt.
func SignServiceKeyRotation(previous ed25519.PrivateKey, previousKeyID, newKeyID string, newKey ed25519.PublicKey, createdAt time.Time) (content, signature []byte, err error) {
	content, err = Marshal(&envelopev1.ServiceKeyRotationContent{
		Version:              serviceKeyRotationVersion,
		PreviousKeyId:        previousKeyID,
		NewKeyId:             newKeyID,
		NewPublicKey:         newKey,
		CreatedAtUnixSeconds: createdAt.Unix(),
	})
	if err != nil {
		return nil, nil, err
	}
	if _, err := parseServiceKeyRotation(content); err != nil {
		return nil, nil, err
	}
	return content, ed25519.Sign(previous, Labelled(LabelCardServiceKeyRotation, content)), nil
}

// VerifyServiceKeyRotation checks a rotation statement against the key it says it
// replaces: previous, with id previousKeyID.
func VerifyServiceKeyRotation(previousKeyID string, previous ed25519.PublicKey, content, signature []byte) (*ServiceKeyRotation, error) {
	r, err := parseServiceKeyRotation(content)
	if err != nil {
		return nil, err
	}
	switch {
	case r.PreviousKeyID != previousKeyID:
		return nil, errorf(ErrMalformed, "service key rotation replaces key %q, not %q", r.PreviousKeyID, previousKeyID)
	case len(signature) != ed25519.SignatureSize:
		return nil, errorf(ErrMalformed, "service key rotation signature is %d bytes; want %d", len(signature), ed25519.SignatureSize)
	case len(previous) != ed25519.PublicKeySize || !verify(previous, Labelled(LabelCardServiceKeyRotation, content), signature):
		return nil, errorf(ErrBadSignature, "service key rotation to %q does not verify with the previous key %q", r.NewKeyID, previousKeyID)
	}
	r.Signature = bytes.Clone(signature)
	return r, nil
}

// ParseServiceKeyRotation reads a rotation statement without verifying its signature:
// what a client needs to know which key should have signed it. Verify it with
// VerifyServiceKeyRotation before trusting anything it says.
func ParseServiceKeyRotation(content []byte) (*ServiceKeyRotation, error) {
	return parseServiceKeyRotation(content)
}

func parseServiceKeyRotation(content []byte) (*ServiceKeyRotation, error) {
	m, err := parseContent[envelopev1.ServiceKeyRotationContent]("service key rotation", content, MaxServiceKeyRotationSize, serviceKeyRotationVersion)
	if err != nil {
		return nil, err
	}
	switch {
	case m.GetPreviousKeyId() == "" || m.GetNewKeyId() == "" || len(m.GetPreviousKeyId()) > 64 || len(m.GetNewKeyId()) > 64:
		return nil, errorf(ErrMalformed, "service key rotation key ids must be 1 to 64 bytes")
	case m.GetPreviousKeyId() == m.GetNewKeyId():
		return nil, errorf(ErrMalformed, "service key rotation replaces key %q by itself", m.GetNewKeyId())
	case m.GetCreatedAtUnixSeconds() <= 0:
		return nil, errorf(ErrMalformed, "service key rotation has no creation time")
	}
	if err := checkSigningKey("service key rotation's new key", m.GetNewPublicKey()); err != nil {
		return nil, err
	}
	return &ServiceKeyRotation{
		Content:       bytes.Clone(content),
		PreviousKeyID: m.GetPreviousKeyId(),
		NewKeyID:      m.GetNewKeyId(),
		NewPublicKey:  ed25519.PublicKey(bytes.Clone(m.GetNewPublicKey())),
		CreatedAt:     time.Unix(m.GetCreatedAtUnixSeconds(), 0).UTC(),
	}, nil
}
