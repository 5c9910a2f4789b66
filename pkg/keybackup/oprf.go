package keybackup

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"unicode/utf8"

	"github.com/cloudflare/circl/group"
	"github.com/cloudflare/circl/oprf"
	"github.com/cloudflare/circl/zk/dleq"
)

// The domain-separation labels of a key backup. Each is used for exactly one purpose,
// as LABEL(label) = label || 0x00 at the start of what it separates (the convention of
// pkg/e2ee and docs/wire-format.md).
const (
	LabelOPRFInput      = "umbra/v1/backup-oprf-input"
	LabelEncryptionKey  = "umbra/v1/backup-encryption-key"
	LabelAuthKey        = "umbra/v1/backup-auth-key"
	LabelAssociatedData = "umbra/v1/backup-record"
	LabelRecoveryCheck  = "umbra/v1/recovery-key-check"
)

// Sizes of the OPRF's values (RFC 9497, ristretto255-SHA512).
const (
	ElementSize   = 32 // a serialised ristretto255 element: blinded, evaluated, public key
	ProofSize     = 64 // a DLEQ proof: the scalars c and s
	OutputSize    = 64 // the OPRF output, a SHA-512 digest
	MaxSecretSize = 1024
	maxFieldSize  = 255
)

// suite is the OPRF ciphersuite of every backup.
var suite = oprf.SuiteRistretto255

// generatorKey is a placeholder public key for blinding (see blind).
var generatorKey = func() *oprf.PublicKey {
	b, err := suite.Group().Generator().MarshalBinaryCompress()
	if err != nil {
		panic(err)
	}
	var pk oprf.PublicKey
	if err := pk.UnmarshalBinary(suite, b); err != nil {
		panic(err)
	}
	return &pk
}()

// Slot is a backup slot; the values are those of umbra.backup.v1.BackupSlot.
type Slot uint32

// The slots.
const (
	SlotPassword Slot = 1
	SlotRecovery Slot = 2
)

func (s Slot) String() string {
	switch s {
	case SlotPassword:
		return "password"
	case SlotRecovery:
		return "recovery"
	}
	return fmt.Sprintf("slot %d", uint32(s))
}

// Binding says whose secret is hardened and for which slot: the OPRF input, both
// derived keys and the associated data all include it, so a record can be used neither
// by another identity, nor in another app, nor in the other slot.
type Binding struct {
	// App is the app id the identity belongs to (WhoAmI's app_id).
	App string
	// Identity is the user identity.
	Identity string
	// Slot is the backup slot.
	Slot Slot
}

func (b Binding) check() error {
	switch {
	case b.App == "" || len(b.App) > maxFieldSize || !utf8.ValidString(b.App):
		return errorf(ErrInvalid, "app id must be 1 to %d bytes of UTF-8", maxFieldSize)
	case b.Identity == "" || len(b.Identity) > maxFieldSize || !utf8.ValidString(b.Identity):
		return errorf(ErrInvalid, "identity must be 1 to %d bytes of UTF-8", maxFieldSize)
	case b.Slot != SlotPassword && b.Slot != SlotRecovery:
		return errorf(ErrInvalid, "unknown backup slot %d", uint32(b.Slot))
	}
	return nil
}

// encode is str(app) || str(identity) || u32(slot): the binding as every label
// follows it.
func (b Binding) encode() []byte {
	out := str(nil, b.App)
	out = str(out, b.Identity)
	return binary.BigEndian.AppendUint32(out, uint32(b.Slot))
}

// OPRFInput returns the OPRF's private input for secret (a password, or a recovery
// key's 20 bytes) under b:
//
//	LABEL("umbra/v1/backup-oprf-input") || str(app) || str(identity) || u32(slot) || u32(len(secret)) || secret
//
// The bytes are as secret as the secret itself and never leave the client.
func OPRFInput(b Binding, secret []byte) ([]byte, error) {
	if err := b.check(); err != nil {
		return nil, err
	}
	if len(secret) == 0 || len(secret) > MaxSecretSize {
		return nil, errorf(ErrInvalid, "the secret is %d bytes; want 1 to %d", len(secret), MaxSecretSize)
	}
	out := labelled(LabelOPRFInput)
	out = append(out, b.encode()...)
	out = binary.BigEndian.AppendUint32(out, uint32(len(secret)))
	return append(out, secret...), nil
}

// Blinded is a blinded OPRF input waiting for the service's evaluation. It holds the
// blind and the input: keep it in memory only, and use it once.
type Blinded struct {
	binding Binding
	data    *oprf.FinalizeData
	element []byte
}

// Blind blinds secret under b (RFC 9497 Blind, verifiable mode, ristretto255-SHA512)
// with a fresh random blind. Send Element to the service.
func Blind(b Binding, secret []byte) (*Blinded, error) {
	return blind(b, secret, nil)
}

// blind blinds with the given scalar, or a random one if it is nil (test vectors).
func blind(b Binding, secret []byte, scalar group.Scalar) (*Blinded, error) {
	input, err := OPRFInput(b, secret)
	if err != nil {
		return nil, err
	}
	// Blinding hashes to the group with verifiable mode's DST; the client's public key
	// only matters to Finalize, which gets a client for the key the service names, so
	// the group's generator stands in for it here.
	c := oprf.NewVerifiableClient(suite, generatorKey)
	var (
		fd  *oprf.FinalizeData
		req *oprf.EvaluationRequest
	)
	if scalar == nil {
		fd, req, err = c.Blind([][]byte{input})
	} else {
		fd, req, err = c.DeterministicBlind([][]byte{input}, []oprf.Blind{scalar})
	}
	if err != nil {
		return nil, errorf(ErrInvalid, "blind: %v", err)
	}
	el, err := req.Elements[0].MarshalBinaryCompress()
	if err != nil {
		return nil, errorf(ErrInvalid, "blind: %v", err)
	}
	return &Blinded{binding: b, data: fd, element: el}, nil
}

// Element is the blinded element, 32 bytes: EvaluateRequest.blinded_element.
func (bl *Blinded) Element() []byte { return bytes.Clone(bl.element) }

// Output is a finalised OPRF output and what it is bound to.
type Output struct {
	// Binding is whose secret this is.
	Binding Binding
	// PublicKey is the service's OPRF public key the evaluation was proved for.
	PublicKey []byte
	// Value is the 64-byte OPRF output. Secret: it never leaves the client.
	Value []byte
}

// Finalize checks the service's evaluation (EvaluateResponse's evaluated_element,
// proof and public_key) and unblinds it to the OPRF output. An evaluation without a
// valid DLEQ proof for publicKey is ErrBadProof; malformed values are ErrInvalid.
func (bl *Blinded) Finalize(evaluated, proof, publicKey []byte) (*Output, error) {
	g := suite.Group()
	if len(publicKey) != ElementSize {
		return nil, errorf(ErrInvalid, "OPRF public key is %d bytes; want %d", len(publicKey), ElementSize)
	}
	var pk oprf.PublicKey
	if err := pk.UnmarshalBinary(suite, publicKey); err != nil {
		return nil, errorf(ErrInvalid, "OPRF public key: %v", err)
	}
	if len(evaluated) != ElementSize {
		return nil, errorf(ErrInvalid, "evaluated element is %d bytes; want %d", len(evaluated), ElementSize)
	}
	ev := g.NewElement()
	if err := ev.UnmarshalBinary(evaluated); err != nil || ev.IsIdentity() {
		return nil, errorf(ErrInvalid, "evaluated element is not a ristretto255 element other than the identity")
	}
	if len(proof) != ProofSize {
		return nil, errorf(ErrInvalid, "proof is %d bytes; want %d", len(proof), ProofSize)
	}
	pr := new(dleq.Proof)
	if err := pr.UnmarshalBinary(g, proof); err != nil {
		return nil, errorf(ErrInvalid, "proof: %v", err)
	}
	out, err := oprf.NewVerifiableClient(suite, &pk).Finalize(bl.data, &oprf.Evaluation{Elements: []oprf.Evaluated{ev}, Proof: pr})
	switch {
	case err == oprf.ErrInvalidProof:
		return nil, errorf(ErrBadProof, "the service's evaluation is not proved for public key %x", publicKey)
	case err != nil:
		return nil, errorf(ErrInvalid, "finalize: %v", err)
	}
	return &Output{Binding: bl.binding, PublicKey: bytes.Clone(publicKey), Value: out[0]}, nil
}

// labelled returns LABEL(label) = label || 0x00.
func labelled(label string) []byte {
	return append([]byte(label), 0)
}

// str appends str(s) = u16(len(s)) || s.
func str(out []byte, s string) []byte {
	return append(binary.BigEndian.AppendUint16(out, uint16(len(s))), s...)
}
