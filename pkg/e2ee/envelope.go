package e2ee

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/ed25519"
	"crypto/hpke"
	"crypto/rand"
	"fmt"
	"io"
	"time"

	"golang.org/x/crypto/chacha20poly1305"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	envelopev1 "github.com/umbra-e2ee/umbra/proto/umbra/envelope/v1"
)

// AEAD is the AEAD of a message body.
type AEAD = envelopev1.Aead

// The body AEADs.
const (
	// AEADChaCha20Poly1305 is ChaCha20-Poly1305 (RFC 8439), the default.
	AEADChaCha20Poly1305 = envelopev1.Aead_AEAD_CHACHA20_POLY1305
	// AEADAES256GCM is AES-256-GCM.
	AEADAES256GCM = envelopev1.Aead_AEAD_AES_256_GCM
)

// DefaultAEAD is the body AEAD of Encrypt.
const DefaultAEAD = AEADChaCha20Poly1305

// Sizes and limits of an Envelope. A header of MaxRecipients hybrid stanzas is about
// 1.21 MB, so MaxEnvelopeHeaderSize admits every header with at most MaxRecipients
// stanzas; MaxEnvelopeSize is the largest envelope of a MaxPlaintextSize plaintext.
const (
	MaxRecipients         = 1000
	MaxEnvelopeHeaderSize = 2 << 20  // 2 MiB
	MaxPlaintextSize      = 64 << 20 // 64 MiB
	MaxEnvelopeSize       = MaxEnvelopeHeaderSize + MaxPlaintextSize + envelopeOverhead

	envelopeVersion = 1
	contentKeySize  = 32
	bodyNonceSize   = 12
	aeadTagSize     = 16
	wrappedKeySize  = contentKeySize + aeadTagSize
	// envelopeOverhead bounds the framing around the header and plaintext: the
	// Envelope's and SignedPayload's tags and lengths, the signature and the AEAD tag.
	envelopeOverhead = 1024
)

// EnvelopeInfo is what an Envelope's header says, read without any key.
type EnvelopeInfo struct {
	// SenderCardID is the id of the card whose key signed the message (32 bytes).
	SenderCardID []byte
	// RecipientCardIDs are the recipient cards, in header order; RecipientSuites[i] is
	// the suite of RecipientCardIDs[i].
	RecipientCardIDs [][]byte
	RecipientSuites  []Suite
	// AEAD of the body.
	AEAD AEAD
	// CreatedAt is when the sender says it wrote the message, in whole seconds (UTC).
	CreatedAt time.Time
	// HeaderHash is SHA-256 of the exact header bytes, which the signature covers.
	HeaderHash []byte
}

// Encrypt encrypts plaintext for recipients, signed by sender, whose card id is
// senderCardID, with the default body AEAD. It returns the encoded Envelope. Recipients
// are 1 to MaxRecipients distinct cards, of any suites; to let the sender's other
// devices read the message, include the sender's own card. now dates the message.
func Encrypt(sender *KeyPair, senderCardID []byte, recipients []*Card, plaintext []byte, now time.Time) ([]byte, error) {
	return encrypt(rand.Reader, DefaultAEAD, sender, senderCardID, recipients, plaintext, now)
}

// EncryptWithAEAD is Encrypt with the body AEAD aead.
func EncryptWithAEAD(aead AEAD, sender *KeyPair, senderCardID []byte, recipients []*Card, plaintext []byte, now time.Time) ([]byte, error) {
	return encrypt(rand.Reader, aead, sender, senderCardID, recipients, plaintext, now)
}

// encrypt is Encrypt with the content key and nonce read from rnd (the HPKE
// encapsulations always use crypto/rand), so that test vectors can state them.
func encrypt(rnd io.Reader, aead AEAD, sender *KeyPair, senderCardID []byte, recipients []*Card, plaintext []byte, now time.Time) ([]byte, error) {
	switch {
	case sender == nil || len(sender.Signing) != ed25519.PrivateKeySize:
		return nil, errorf(ErrMalformed, "no sender signing key")
	case len(senderCardID) != CardIDSize:
		return nil, errorf(ErrMalformed, "sender card id is %d bytes; want %d", len(senderCardID), CardIDSize)
	case len(recipients) == 0:
		return nil, errorf(ErrMalformed, "no recipients")
	case len(recipients) > MaxRecipients:
		return nil, errorf(ErrTooLarge, "%d recipients; at most %d", len(recipients), MaxRecipients)
	case len(plaintext) > MaxPlaintextSize:
		return nil, errorf(ErrTooLarge, "plaintext is %d bytes; at most %d", len(plaintext), MaxPlaintextSize)
	case now.Unix() <= 0:
		return nil, errorf(ErrMalformed, "creation time %v is not after the Unix epoch", now)
	}
	if _, err := bodyAEAD(aead, make([]byte, contentKeySize)); err != nil {
		return nil, err
	}
	if err := checkRecipients(recipients, sender, senderCardID); err != nil {
		return nil, err
	}

	secrets := make([]byte, contentKeySize+bodyNonceSize)
	if _, err := io.ReadFull(rnd, secrets); err != nil {
		return nil, fmt.Errorf("e2ee: read randomness: %w", err)
	}
	contentKey, nonce := secrets[:contentKeySize], secrets[contentKeySize:]

	h := &envelopev1.EnvelopeHeader{
		Version:              envelopeVersion,
		SenderCardId:         senderCardID,
		Recipients:           make([]*envelopev1.RecipientStanza, len(recipients)),
		Aead:                 aead,
		Nonce:                nonce,
		CreatedAtUnixSeconds: now.Unix(),
	}
	for i, r := range recipients {
		enc, wrapped, err := wrapKey("content key", contentKey, r, keyWrapInfo(senderCardID, r.ID))
		if err != nil {
			return nil, err
		}
		h.Recipients[i] = &envelopev1.RecipientStanza{RecipientCardId: r.ID, Suite: r.Suite, Enc: enc, WrappedKey: wrapped}
	}
	header, err := Marshal(h)
	if err != nil {
		return nil, err
	}
	signature := ed25519.Sign(sender.Signing, Labelled(LabelEnvelopeSignature, sha(header), plaintext))
	return sealSigned(aead, contentKey, nonce, header, plaintext, signature)
}

// sealSigned encodes a message of header and body (an Envelope or a GroupMessage) whose
// body is SignedPayload{plaintext, signature} sealed with aead under key and nonce, with
// the header as associated data.
func sealSigned(aead AEAD, key, nonce, header, plaintext, signature []byte) ([]byte, error) {
	// SignedPayload{plaintext, signature}, encoded by hand so the plaintext is copied
	// once; fields in order, an empty plaintext omitted, as deterministic encoding does.
	payload := make([]byte, 0, protowire.SizeBytes(len(plaintext))+protowire.SizeBytes(len(signature))+2)
	payload = appendBytesField(payload, 1, plaintext)
	payload = appendBytesField(payload, 2, signature)

	// {header, body}, with the body sealed straight into the output.
	c, err := bodyAEAD(aead, key)
	if err != nil {
		return nil, err
	}
	bodyLen := len(payload) + c.Overhead()
	out := make([]byte, 0, 2+protowire.SizeBytes(len(header))+protowire.SizeBytes(bodyLen))
	out = appendBytesField(out, 1, header)
	out = protowire.AppendTag(out, 2, protowire.BytesType)
	out = protowire.AppendVarint(out, uint64(bodyLen))
	return c.Seal(out, nonce, payload, header), nil
}

// checkRecipients refuses recipients that are not distinct cards one can encrypt to
// (checkRecipient), and, if sender is not nil, a card with the sender's card id
// senderCardID but another signing key than sender's.
func checkRecipients(recipients []*Card, sender *KeyPair, senderCardID []byte) error {
	seen := make(map[string]bool, len(recipients))
	for i, r := range recipients {
		if err := checkRecipient(r); err != nil {
			return fmt.Errorf("recipient %d: %w", i, err)
		}
		if seen[string(r.ID)] {
			return errorf(ErrMalformed, "recipient card %x appears twice", r.ID)
		}
		seen[string(r.ID)] = true
		if sender != nil && bytes.Equal(r.ID, senderCardID) && !r.SigningKey.Equal(sender.SigningPublicKey()) {
			return errorf(ErrWrongSender, "the sender card id names a recipient card with another signing key than the sender's")
		}
	}
	return nil
}

// checkRecipient refuses a card that cannot be encrypted to: the Card type is built
// by ParseCard, but a caller may assemble one by hand.
func checkRecipient(r *Card) error {
	if r == nil {
		return errorf(ErrMalformed, "nil card")
	}
	if len(r.ID) != CardIDSize {
		return errorf(ErrMalformed, "card id is %d bytes; want %d", len(r.ID), CardIDSize)
	}
	p, err := params(r.Suite)
	if err != nil {
		return err
	}
	if r.KEMPublicKey == nil || r.KEMPublicKey.KEM().ID() != p.kem.ID() {
		return errorf(ErrMalformed, "card %x has no KEM key of its suite %s", r.ID, r.Suite)
	}
	return nil
}

// wrapKey encrypts key, a what, to card r with HPKE in r's suite and info.
func wrapKey(what string, key []byte, r *Card, info []byte) (enc, wrapped []byte, err error) {
	enc, s, err := hpke.NewSender(r.KEMPublicKey, hpkeKDF(), hpkeAEAD(), info)
	if err != nil {
		return nil, nil, fmt.Errorf("e2ee: wrap the %s to card %x: %w", what, r.ID, err)
	}
	wrapped, err = s.Seal(nil, key)
	if err != nil {
		return nil, nil, fmt.Errorf("e2ee: wrap the %s to card %x: %w", what, r.ID, err)
	}
	return enc, wrapped, nil
}

// keyWrapInfo is the HPKE info of an envelope's recipient stanza.
func keyWrapInfo(senderCardID, recipientCardID []byte) []byte {
	return Labelled(LabelEnvelopeKeyWrap, senderCardID, recipientCardID)
}

// bodyAEAD returns the body AEAD aead keyed with key, or ErrUnknownSuite.
func bodyAEAD(aead AEAD, key []byte) (cipher.AEAD, error) {
	switch aead {
	case AEADChaCha20Poly1305:
		return chacha20poly1305.New(key)
	case AEADAES256GCM:
		b, err := aes.NewCipher(key)
		if err != nil {
			return nil, err
		}
		return cipher.NewGCM(b)
	}
	return nil, errorf(ErrUnknownSuite, "body AEAD %d", int32(aead))
}

// InspectEnvelope parses data and checks its header, with no key: what a client reads
// to find the sender's card before it decrypts. It does not authenticate anything; only
// Decrypt does.
func InspectEnvelope(data []byte) (*EnvelopeInfo, error) {
	e, err := parseEnvelope(data)
	if err != nil {
		return nil, err
	}
	info := &EnvelopeInfo{
		SenderCardID:     e.h.GetSenderCardId(),
		RecipientCardIDs: make([][]byte, len(e.h.GetRecipients())),
		RecipientSuites:  make([]Suite, len(e.h.GetRecipients())),
		AEAD:             e.h.GetAead(),
		CreatedAt:        time.Unix(e.h.GetCreatedAtUnixSeconds(), 0).UTC(),
		HeaderHash:       e.headerHash,
	}
	for i, s := range e.h.GetRecipients() {
		info.RecipientCardIDs[i] = s.GetRecipientCardId()
		info.RecipientSuites[i] = s.GetSuite()
	}
	return info, nil
}

// Decrypt opens an Envelope sent by the card sender. keyFor returns the key pair of
// one of our cards by card id, or nil if the card is not ours (a Keystore's KeyFor).
// Decrypt checks, in order: the encoding and limits (ErrTooLarge, ErrMalformed,
// ErrUnknownSuite), that the header names sender's card (ErrWrongSender), that a
// stanza is for one of our cards (ErrNotRecipient), that the content key and body
// authenticate (ErrDecrypt), and the signature by sender's key over the header hash
// and plaintext (ErrBadSignature). Whether sender's card belongs to the expected
// identity and was valid when the message was written is the caller's to check.
func Decrypt(data []byte, keyFor func(cardID []byte) *KeyPair, sender *Card) ([]byte, error) {
	e, err := parseEnvelope(data)
	if err != nil {
		return nil, err
	}
	if err := checkSender(e.h.GetSenderCardId(), sender); err != nil {
		return nil, err
	}
	contentKey, err := e.unwrap(keyFor)
	if err != nil {
		return nil, err
	}
	return e.open(contentKey, sender)
}

// envelope is a parsed Envelope whose header passed every check that needs no key.
type envelope struct {
	header     []byte // the exact header bytes
	headerHash []byte
	body       []byte
	h          *envelopev1.EnvelopeHeader
}

func parseEnvelope(data []byte) (*envelope, error) {
	var h envelopev1.EnvelopeHeader
	header, body, err := parseSealed("envelope", data, MaxEnvelopeSize, MaxEnvelopeHeaderSize, &h)
	if err != nil {
		return nil, err
	}
	switch n := len(h.GetRecipients()); {
	case h.GetVersion() != envelopeVersion:
		return nil, errorf(ErrMalformed, "envelope version %d; this client reads version %d", h.GetVersion(), envelopeVersion)
	case len(h.GetSenderCardId()) != CardIDSize:
		return nil, errorf(ErrMalformed, "envelope sender card id is %d bytes; want %d", len(h.GetSenderCardId()), CardIDSize)
	case n == 0:
		return nil, errorf(ErrMalformed, "envelope has no recipients")
	case n > MaxRecipients:
		return nil, errorf(ErrTooLarge, "envelope has %d recipients; at most %d", n, MaxRecipients)
	case len(h.GetNonce()) != bodyNonceSize:
		return nil, errorf(ErrMalformed, "envelope nonce is %d bytes; want %d", len(h.GetNonce()), bodyNonceSize)
	case h.GetCreatedAtUnixSeconds() <= 0:
		return nil, errorf(ErrMalformed, "envelope has no creation time")
	}
	if _, err := bodyAEAD(h.GetAead(), make([]byte, contentKeySize)); err != nil {
		return nil, err
	}
	seen := make(map[string]bool, len(h.GetRecipients()))
	for i, s := range h.GetRecipients() {
		id := s.GetRecipientCardId()
		if len(id) != CardIDSize {
			return nil, errorf(ErrMalformed, "stanza %d: card id is %d bytes; want %d", i, len(id), CardIDSize)
		}
		if seen[string(id)] {
			return nil, errorf(ErrMalformed, "stanza %d: card %x has two stanzas", i, id)
		}
		seen[string(id)] = true
		p, err := params(s.GetSuite())
		if err != nil {
			return nil, fmt.Errorf("stanza %d: %w", i, err)
		}
		if len(s.GetEnc()) != p.encLen {
			return nil, errorf(ErrMalformed, "stanza %d: encapsulated key is %d bytes; suite %s wants %d", i, len(s.GetEnc()), s.GetSuite(), p.encLen)
		}
		if len(s.GetWrappedKey()) != wrappedKeySize {
			return nil, errorf(ErrMalformed, "stanza %d: wrapped key is %d bytes; want %d", i, len(s.GetWrappedKey()), wrappedKeySize)
		}
	}
	return &envelope{header: header, headerHash: sha(header), body: body, h: &h}, nil
}

// parseSealed splits data, a message of header and body of at most maxSize bytes (an
// Envelope or a GroupMessage), checks the header's size (at most maxHeaderSize) and
// the body's (at least an AEAD tag), and parses the header into h.
func parseSealed(what string, data []byte, maxSize, maxHeaderSize int, h proto.Message) (header, body []byte, err error) {
	if len(data) > maxSize {
		return nil, nil, errorf(ErrTooLarge, "%s is %d bytes; at most %d", what, len(data), maxSize)
	}
	header, body, err = ParseBytesPair(what, data)
	if err != nil {
		return nil, nil, err
	}
	if len(header) > maxHeaderSize {
		return nil, nil, errorf(ErrTooLarge, "%s header is %d bytes; at most %d", what, len(header), maxHeaderSize)
	}
	if len(body) < aeadTagSize {
		return nil, nil, errorf(ErrMalformed, "%s body is %d bytes; shorter than an AEAD tag", what, len(body))
	}
	if err := UnmarshalStrict(what+" header", header, h); err != nil {
		return nil, nil, err
	}
	return header, body, nil
}

// checkSender refuses a sender card to verify with that is missing or is not named,
// the card the message names as its sender.
func checkSender(named []byte, sender *Card) error {
	if sender == nil || len(sender.SigningKey) != ed25519.PublicKeySize {
		return errorf(ErrWrongSender, "no sender card to verify the message with")
	}
	if !bytes.Equal(named, sender.ID) {
		return errorf(ErrWrongSender, "the message names sender card %x, not %x", named, sender.ID)
	}
	return nil
}

// unwrap returns the content key from the first stanza for a card keyFor holds a key
// for whose wrap opens.
func (e *envelope) unwrap(keyFor func(cardID []byte) *KeyPair) ([]byte, error) {
	if keyFor == nil {
		return nil, errorf(ErrNotRecipient, "no keys to decrypt with")
	}
	var lastErr error
	for _, s := range e.h.GetRecipients() {
		kp := keyFor(s.GetRecipientCardId())
		if kp == nil {
			continue
		}
		if kp.KEM == nil || kp.Suite != s.GetSuite() {
			lastErr = errorf(ErrMalformed, "the stanza for our card %x is of suite %s; our key is of suite %s", s.GetRecipientCardId(), s.GetSuite(), kp.Suite)
			continue
		}
		r, err := hpke.NewRecipient(s.GetEnc(), kp.KEM, hpkeKDF(), hpkeAEAD(), keyWrapInfo(e.h.GetSenderCardId(), s.GetRecipientCardId()))
		if err != nil {
			lastErr = errorf(ErrDecrypt, "the content key wrapped to card %x does not open: %v", s.GetRecipientCardId(), err)
			continue
		}
		key, err := r.Open(nil, s.GetWrappedKey())
		if err != nil {
			lastErr = errorf(ErrDecrypt, "the content key wrapped to card %x does not open", s.GetRecipientCardId())
			continue
		}
		return key, nil
	}
	if lastErr != nil {
		return nil, lastErr
	}
	return nil, errorf(ErrNotRecipient, "none of the envelope's %d recipient cards is ours", len(e.h.GetRecipients()))
}

// open decrypts the body with contentKey and verifies sender's signature.
func (e *envelope) open(contentKey []byte, sender *Card) ([]byte, error) {
	c, err := bodyAEAD(e.h.GetAead(), contentKey)
	if err != nil {
		return nil, err
	}
	payload, err := c.Open(nil, e.h.GetNonce(), e.body, e.header)
	if err != nil {
		return nil, errorf(ErrDecrypt, "envelope body does not authenticate")
	}
	return verifySigned("envelope", LabelEnvelopeSignature, payload, e.headerHash, sender)
}

// verifySigned parses payload, an opened SignedPayload, and verifies its signature by
// sender under label over headerHash and the plaintext, which it returns (empty, not
// nil, if there is none).
func verifySigned(what, label string, payload, headerHash []byte, sender *Card) ([]byte, error) {
	plaintext, signature, err := ParseBytesPair("signed payload", payload)
	if err != nil {
		return nil, err
	}
	if len(signature) != ed25519.SignatureSize {
		return nil, errorf(ErrMalformed, "%s signature is %d bytes; want %d", what, len(signature), ed25519.SignatureSize)
	}
	if !verify(sender.SigningKey, Labelled(label, headerHash, plaintext), signature) {
		return nil, errorf(ErrBadSignature, "%s signature does not verify with sender card %x", what, sender.ID)
	}
	if plaintext == nil {
		plaintext = []byte{}
	}
	return plaintext, nil
}

// appendBytesField appends field num of wire type bytes holding v, or nothing if v is
// empty (proto3's deterministic encoding omits default values).
func appendBytesField(b []byte, num protowire.Number, v []byte) []byte {
	if len(v) == 0 {
		return b
	}
	return protowire.AppendBytes(protowire.AppendTag(b, num, protowire.BytesType), v)
}

// ParseBytesPair parses b as a message of two bytes fields numbered 1 and 2 (Envelope,
// SignedPayload, GroupMessage, KeystoreFile) with the rules of UnmarshalStrict:
// canonical encoding only, no unknown fields. It returns the fields as sub-slices of b,
// so a large body is not copied; a missing field is nil.
func ParseBytesPair(what string, b []byte) (first, second []byte, err error) {
	var fields [2][]byte
	next := protowire.Number(1)
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return nil, nil, errorf(ErrMalformed, "%s does not parse (truncated or corrupt): %v", what, protowire.ParseError(n))
		}
		if num < next || num > 2 || typ != protowire.BytesType {
			return nil, nil, errorf(ErrMalformed, "%s has an unknown, repeated or misplaced field %d (wire type %d)", what, num, typ)
		}
		if n != protowire.SizeTag(num) {
			return nil, nil, errorf(ErrMalformed, "%s is not in canonical encoding", what)
		}
		b = b[n:]
		v, m := protowire.ConsumeBytes(b)
		if m < 0 {
			return nil, nil, errorf(ErrMalformed, "%s does not parse (truncated or corrupt): %v", what, protowire.ParseError(m))
		}
		if len(v) == 0 || m != protowire.SizeBytes(len(v)) {
			return nil, nil, errorf(ErrMalformed, "%s is not in canonical encoding", what)
		}
		fields[num-1] = v
		next = num + 1
		b = b[m:]
	}
	return fields[0], fields[1], nil
}
