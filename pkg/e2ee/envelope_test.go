package e2ee

import (
	"bytes"
	"crypto/ed25519"
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"google.golang.org/protobuf/encoding/protowire"

	"github.com/umbra-e2ee/umbra/pkg/internal/vectortest"
	envelopev1 "github.com/umbra-e2ee/umbra/proto/umbra/envelope/v1"
)

// member is a key pair and its parsed card.
type member struct {
	kp   *KeyPair
	card *Card
}

// newMember derives the key pair number n of suite and makes its card, of identity.
func newMember(t testing.TB, suite Suite, identity string, n int) member {
	t.Helper()
	seed := append(sha([]byte("umbra test key"), u32(uint32(suite)), u32(uint32(n))), sha(u32(uint32(n)))...)
	kp, err := DeriveKeyPair(suite, seed)
	if err != nil {
		t.Fatal(err)
	}
	content, sig, err := NewCard(kp, identity, when, nil)
	if err != nil {
		t.Fatal(err)
	}
	card, err := ParseCard(content, sig)
	if err != nil {
		t.Fatal(err)
	}
	return member{kp, card}
}

// newMembers makes n members, cycling through suites.
func newMembers(t testing.TB, n int, suites ...Suite) []member {
	t.Helper()
	out := make([]member, n)
	for i := range out {
		out[i] = newMember(t, suites[i%len(suites)], bob, 1000+i)
	}
	return out
}

func cardsOf(ms []member) []*Card {
	out := make([]*Card, len(ms))
	for i, m := range ms {
		out[i] = m.card
	}
	return out
}

// keysOf is a keyFor that holds the keys of ms.
func keysOf(ms ...member) func([]byte) *KeyPair {
	return func(id []byte) *KeyPair {
		for _, m := range ms {
			if bytes.Equal(m.card.ID, id) {
				return m.kp
			}
		}
		return nil
	}
}

// openBody opens a message body sealed with aead under key, failing t on a key aead
// does not take.
func openBody(t *testing.T, aead AEAD, key, nonce, body, header []byte) ([]byte, error) {
	t.Helper()
	c, err := bodyAEAD(aead, key)
	if err != nil {
		t.Fatal(err)
	}
	return c.Open(nil, nonce, body, header)
}

// fixedSecrets is a content key and nonce for encrypt: 0x00, 0x01, ... 0x2b.
func fixedSecrets() *bytes.Buffer {
	return bytes.NewBuffer(vectortest.Counting(0, contentKeySize+bodyNonceSize))
}

func TestEnvelopeRoundTrip(t *testing.T) {
	t.Parallel()
	plaintext := bytes.Repeat([]byte("umbra "), 200)
	cases := []struct {
		name   string
		suites []Suite
		n      int
		aead   AEAD
	}{
		{"x25519/1", []Suite{SuiteX25519}, 1, AEADChaCha20Poly1305},
		{"x25519/10", []Suite{SuiteX25519}, 10, AEADChaCha20Poly1305},
		{"x25519/100", []Suite{SuiteX25519}, 100, AEADChaCha20Poly1305},
		{"hybrid/1", []Suite{SuiteHybrid}, 1, AEADChaCha20Poly1305},
		{"hybrid/10", []Suite{SuiteHybrid}, 10, AEADChaCha20Poly1305},
		{"hybrid/100", []Suite{SuiteHybrid}, 100, AEADChaCha20Poly1305},
		{"mixed/10/aes-gcm", []Suite{SuiteHybrid, SuiteX25519}, 10, AEADAES256GCM},
		{"x25519/1/aes-gcm", []Suite{SuiteX25519}, 1, AEADAES256GCM},
		{"hybrid/1/aes-gcm", []Suite{SuiteHybrid}, 1, AEADAES256GCM},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			sender := newMember(t, tc.suites[0], alice, 1)
			rcpts := newMembers(t, tc.n, tc.suites...)
			data, err := EncryptWithAEAD(tc.aead, sender.kp, sender.card.ID, cardsOf(rcpts), plaintext, when)
			if err != nil {
				t.Fatal(err)
			}
			info, err := InspectEnvelope(data)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(info.SenderCardID, sender.card.ID) || info.AEAD != tc.aead || !info.CreatedAt.Equal(when) || len(info.RecipientCardIDs) != tc.n {
				t.Errorf("InspectEnvelope = %+v", info)
			}
			for i, r := range rcpts {
				if !bytes.Equal(info.RecipientCardIDs[i], r.card.ID) || info.RecipientSuites[i] != r.card.Suite {
					t.Errorf("stanza %d names card %x of %s; want %x of %s", i, info.RecipientCardIDs[i], info.RecipientSuites[i], r.card.ID, r.card.Suite)
				}
				got, err := Decrypt(data, keysOf(r), sender.card)
				if err != nil {
					t.Fatalf("recipient %d: %v", i, err)
				}
				if !bytes.Equal(got, plaintext) {
					t.Fatalf("recipient %d decrypted %q", i, got)
				}
			}
		})
	}
}

func TestEnvelopeEdgeCases(t *testing.T) {
	t.Parallel()
	sender := newMember(t, SuiteX25519, alice, 1)
	rcpt := newMember(t, SuiteHybrid, bob, 2)

	t.Run("empty plaintext", func(t *testing.T) {
		data, err := Encrypt(sender.kp, sender.card.ID, []*Card{rcpt.card}, nil, when)
		if err != nil {
			t.Fatal(err)
		}
		got, err := Decrypt(data, keysOf(rcpt), sender.card)
		if err != nil || got == nil || len(got) != 0 {
			t.Fatalf("Decrypt = %q, %v; want an empty plaintext", got, err)
		}
	})
	t.Run("sender's own card is a recipient", func(t *testing.T) {
		data, err := Encrypt(sender.kp, sender.card.ID, []*Card{rcpt.card, sender.card}, []byte("note to self"), when)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range []member{sender, rcpt} {
			if got, err := Decrypt(data, keysOf(m), sender.card); err != nil || string(got) != "note to self" {
				t.Errorf("%s decrypts %q, %v", m.card.Identity, got, err)
			}
		}
	})
	t.Run("a keyFor holding several of the recipient cards", func(t *testing.T) {
		other := newMember(t, SuiteX25519, bob, 3)
		data, err := Encrypt(sender.kp, sender.card.ID, []*Card{other.card, rcpt.card}, []byte("hi"), when)
		if err != nil {
			t.Fatal(err)
		}
		if got, err := Decrypt(data, keysOf(rcpt, other), sender.card); err != nil || string(got) != "hi" {
			t.Errorf("Decrypt = %q, %v", got, err)
		}
	})
	t.Run("each encryption has its own content key and nonce", func(t *testing.T) {
		a, _ := Encrypt(sender.kp, sender.card.ID, []*Card{rcpt.card}, []byte("hi"), when)
		b, _ := Encrypt(sender.kp, sender.card.ID, []*Card{rcpt.card}, []byte("hi"), when)
		ia, _ := InspectEnvelope(a)
		ib, _ := InspectEnvelope(b)
		if ia == nil || ib == nil || bytes.Equal(ia.HeaderHash, ib.HeaderHash) || bytes.Equal(a, b) {
			t.Error("two encryptions of the same message are identical")
		}
	})
}

func TestEncryptRefusesBadInput(t *testing.T) {
	t.Parallel()
	sender := newMember(t, SuiteX25519, alice, 1)
	rcpt := newMember(t, SuiteX25519, bob, 2)
	one := []*Card{rcpt.card}
	tooMany := make([]*Card, MaxRecipients+1)
	for i := range tooMany {
		c := *rcpt.card
		c.ID = sha(u32(uint32(i)))
		tooMany[i] = &c
	}
	unknownSuite := *rcpt.card
	unknownSuite.Suite = 9
	wrongKEM := *rcpt.card
	wrongKEM.Suite = SuiteHybrid // the card's key is an X25519 one
	shortID := *rcpt.card
	shortID.ID = shortID.ID[:31]
	imposter := *rcpt.card
	imposter.ID = sender.card.ID // claims the sender's card id with another signing key
	cases := []struct {
		name       string
		aead       AEAD
		sender     *KeyPair
		senderID   []byte
		recipients []*Card
		plaintext  []byte
		now        time.Time
		kind       error
	}{
		{"no recipients", DefaultAEAD, sender.kp, sender.card.ID, nil, nil, when, ErrMalformed},
		{"too many recipients", DefaultAEAD, sender.kp, sender.card.ID, tooMany, nil, when, ErrTooLarge},
		{"a recipient twice", DefaultAEAD, sender.kp, sender.card.ID, []*Card{rcpt.card, sender.card, rcpt.card}, nil, when, ErrMalformed},
		{"nil recipient", DefaultAEAD, sender.kp, sender.card.ID, []*Card{nil}, nil, when, ErrMalformed},
		{"recipient of an unknown suite", DefaultAEAD, sender.kp, sender.card.ID, []*Card{&unknownSuite}, nil, when, ErrUnknownSuite},
		{"recipient key of another suite", DefaultAEAD, sender.kp, sender.card.ID, []*Card{&wrongKEM}, nil, when, ErrMalformed},
		{"recipient card id of 31 bytes", DefaultAEAD, sender.kp, sender.card.ID, []*Card{&shortID}, nil, when, ErrMalformed},
		{"sender card id of 31 bytes", DefaultAEAD, sender.kp, sender.card.ID[:31], one, nil, when, ErrMalformed},
		{"no sender key", DefaultAEAD, nil, sender.card.ID, one, nil, when, ErrMalformed},
		{"sender card id of a card with another key", DefaultAEAD, sender.kp, sender.card.ID, []*Card{&imposter}, nil, when, ErrWrongSender},
		{"unknown AEAD", 7, sender.kp, sender.card.ID, one, nil, when, ErrUnknownSuite},
		{"unspecified AEAD", 0, sender.kp, sender.card.ID, one, nil, when, ErrUnknownSuite},
		{"plaintext over the limit", DefaultAEAD, sender.kp, sender.card.ID, one, make([]byte, MaxPlaintextSize+1), when, ErrTooLarge},
		{"date before 1970", DefaultAEAD, sender.kp, sender.card.ID, one, nil, time.Unix(-5, 0), ErrMalformed},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			data, err := EncryptWithAEAD(tc.aead, tc.sender, tc.senderID, tc.recipients, tc.plaintext, tc.now)
			if !errors.Is(err, tc.kind) || data != nil {
				t.Fatalf("Encrypt = %d bytes, %v; want %v", len(data), err, tc.kind)
			}
		})
	}
}

// envelopeKinds are every kind Decrypt may fail with.
var envelopeKinds = []error{ErrMalformed, ErrUnknownSuite, ErrBadSignature, ErrNotRecipient, ErrWrongSender, ErrDecrypt, ErrTooLarge}

// checkKind fails t unless err is an *Error of one of kinds (envelopeKinds,
// groupKinds...).
func checkKind(t testing.TB, err error, kinds []error) {
	t.Helper()
	var e *Error
	if err == nil || !errors.As(err, &e) {
		t.Fatalf("error %v is not a typed e2ee error", err)
	}
	if !slices.ContainsFunc(kinds, func(k error) bool { return errors.Is(err, k) }) {
		t.Fatalf("error %v has no known kind", err)
	}
}

// rebuild re-encodes an envelope after edit changed its header, keeping its body.
func rebuild(t testing.TB, data []byte, edit func(h *envelopev1.EnvelopeHeader)) []byte {
	t.Helper()
	var env envelopev1.Envelope
	if err := UnmarshalStrict("envelope", data, &env); err != nil {
		t.Fatal(err)
	}
	var h envelopev1.EnvelopeHeader
	if err := UnmarshalStrict("header", env.GetHeader(), &h); err != nil {
		t.Fatal(err)
	}
	edit(&h)
	header, err := Marshal(&h)
	if err != nil {
		t.Fatal(err)
	}
	out, err := Marshal(&envelopev1.Envelope{Header: header, Body: env.GetBody()})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// sealed builds an envelope from sender's card to recipient whose body is a valid
// encryption of the SignedPayload bytes payload returns for the header's hash: for the
// cases where only what is inside the encryption is wrong.
func sealed(t testing.TB, sender *Card, recipient member, payload func(headerHash []byte) []byte) []byte {
	t.Helper()
	good, err := encrypt(fixedSecrets(), DefaultAEAD, recipient.kp, sender.ID, []*Card{recipient.card}, nil, when)
	if err != nil {
		t.Fatal(err)
	}
	e, err := parseEnvelope(good)
	if err != nil {
		t.Fatal(err)
	}
	c, err := bodyAEAD(DefaultAEAD, fixedSecrets().Bytes()[:contentKeySize])
	if err != nil {
		t.Fatal(err)
	}
	out, err := Marshal(&envelopev1.Envelope{Header: e.header, Body: c.Seal(nil, e.h.GetNonce(), payload(e.headerHash), e.header)})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func TestDecryptRefusesBadEnvelopes(t *testing.T) {
	t.Parallel()
	sender := newMember(t, SuiteX25519, alice, 1)
	other := newMember(t, SuiteX25519, alice, 9) // a card of the same identity with another key
	bobM := newMember(t, SuiteX25519, bob, 2)
	carol := newMember(t, SuiteHybrid, bob, 3)
	dave := newMember(t, SuiteX25519, bob, 4)
	plaintext := []byte("attack at dawn")
	good, err := Encrypt(sender.kp, sender.card.ID, []*Card{bobM.card, carol.card}, plaintext, when)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := Decrypt(good, keysOf(bobM), sender.card); err != nil || !bytes.Equal(got, plaintext) {
		t.Fatalf("the unaltered envelope: %q, %v", got, err)
	}
	var env envelopev1.Envelope
	if err := UnmarshalStrict("envelope", good, &env); err != nil {
		t.Fatal(err)
	}
	header, body := env.GetHeader(), env.GetBody()
	flip := func(b []byte, i int) []byte {
		b = bytes.Clone(b)
		b[i] ^= 0x01
		return b
	}
	envelopeOf := func(header, body []byte) []byte {
		b, err := Marshal(&envelopev1.Envelope{Header: header, Body: body})
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	payloadOf := func(plaintext, signature []byte) []byte {
		return appendBytesField(appendBytesField(nil, 1, plaintext), 2, signature)
	}
	// signedWith is a payload signed by sender over label || header hash || plaintext.
	signedWith := func(label string) func([]byte) []byte {
		return func(headerHash []byte) []byte {
			msg := append(bytes.Clone(headerHash), plaintext...)
			if label != "" {
				msg = Labelled(label, headerHash, plaintext)
			}
			return payloadOf(plaintext, ed25519.Sign(sender.kp.Signing, msg))
		}
	}
	fixedPayload := func(p []byte) func([]byte) []byte { return func([]byte) []byte { return p } }
	nonMinimal := append([]byte{0x0a, 0x80 | byte(len(header)&0x7f), 0x80 | byte(len(header)>>7), 0}, good[1+protowire.SizeVarint(uint64(len(header))):]...)
	bigHeader := func(h *envelopev1.EnvelopeHeader) {
		s := h.Recipients[0]
		h.Recipients = nil
		for i := range MaxRecipients + 1 {
			h.Recipients = append(h.Recipients, &envelopev1.RecipientStanza{RecipientCardId: sha(u32(uint32(i))), Suite: s.Suite, Enc: s.Enc, WrappedKey: s.WrappedKey})
		}
	}
	hugeHeader := func(h *envelopev1.EnvelopeHeader) {
		s := h.Recipients[0]
		h.Recipients = []*envelopev1.RecipientStanza{{RecipientCardId: s.RecipientCardId, Suite: s.Suite, Enc: make([]byte, MaxEnvelopeHeaderSize), WrappedKey: s.WrappedKey}}
	}
	// forwarded is what bob can do with what he decrypted: re-encrypt alice's signed
	// payload to dave, as if alice had sent it to dave.
	forwarded := func() []byte {
		e, _ := parseEnvelope(good)
		key, err := e.unwrap(keysOf(bobM))
		if err != nil {
			t.Fatal(err)
		}
		payload, err := openBody(t, DefaultAEAD, key, e.h.GetNonce(), e.body, e.header)
		if err != nil {
			t.Fatal(err)
		}
		return sealed(t, sender.card, dave, fixedPayload(payload))
	}
	signedByOther, err := Encrypt(other.kp, sender.card.ID, []*Card{bobM.card}, plaintext, when)
	if err != nil {
		t.Fatal(err)
	}
	wrongSuiteKey := func(id []byte) *KeyPair {
		if bytes.Equal(id, bobM.card.ID) {
			return carol.kp
		}
		return nil
	}
	swappedWraps := rebuild(t, good, func(h *envelopev1.EnvelopeHeader) {
		// bob's stanza gets a wrap made for dave's key (in a fresh envelope).
		forDave, _ := Encrypt(sender.kp, sender.card.ID, []*Card{dave.card}, plaintext, when)
		e, _ := parseEnvelope(forDave)
		h.Recipients[0].Enc, h.Recipients[0].WrappedKey = e.h.Recipients[0].Enc, e.h.Recipients[0].WrappedKey
	})

	// The hand-made envelopes below are valid but for what each case breaks.
	if got, err := Decrypt(sealed(t, sender.card, bobM, signedWith(LabelEnvelopeSignature)), keysOf(bobM), sender.card); err != nil || !bytes.Equal(got, plaintext) {
		t.Fatalf("a hand-sealed envelope with a good signature: %q, %v", got, err)
	}

	type input struct {
		data   []byte
		keyFor func([]byte) *KeyPair
		sender *Card
	}
	asBob := func(data []byte) input { return input{data, keysOf(bobM), sender.card} }
	cases := []struct {
		name string
		in   input
		kind error
	}{
		{"empty", asBob(nil), ErrMalformed},
		{"truncated by one byte", asBob(good[:len(good)-1]), ErrMalformed},
		{"truncated inside the header", asBob(good[:40]), ErrMalformed},
		{"header only", asBob(envelopeOf(header, nil)), ErrMalformed},
		{"body shorter than a tag", asBob(envelopeOf(header, body[:15])), ErrMalformed},
		{"unknown envelope field", asBob(protowire.AppendVarint(protowire.AppendTag(bytes.Clone(good), 3, protowire.VarintType), 1)), ErrMalformed},
		{"envelope fields out of order", asBob(append(appendBytesField(nil, 2, body), appendBytesField(nil, 1, header)...)), ErrMalformed},
		{"header field twice", asBob(append(appendBytesField(nil, 1, header), good...)), ErrMalformed},
		{"non-minimal length", asBob(nonMinimal), ErrMalformed},
		{"unknown header field", asBob(envelopeOf(protowire.AppendVarint(protowire.AppendTag(bytes.Clone(header), 9, protowire.VarintType), 1), body)), ErrMalformed},
		{"header version 2", asBob(rebuild(t, good, func(h *envelopev1.EnvelopeHeader) { h.Version = 2 })), ErrMalformed},
		{"unknown AEAD", asBob(rebuild(t, good, func(h *envelopev1.EnvelopeHeader) { h.Aead = 3 })), ErrUnknownSuite},
		{"unspecified AEAD", asBob(rebuild(t, good, func(h *envelopev1.EnvelopeHeader) { h.Aead = 0 })), ErrUnknownSuite},
		{"unknown suite in a stanza", asBob(rebuild(t, good, func(h *envelopev1.EnvelopeHeader) { h.Recipients[1].Suite = 3 })), ErrUnknownSuite},
		{"stanza suite differs from its enc", asBob(rebuild(t, good, func(h *envelopev1.EnvelopeHeader) { h.Recipients[0].Suite = SuiteHybrid })), ErrMalformed},
		{"stanza suite differs from our key's", input{good, wrongSuiteKey, sender.card}, ErrMalformed},
		{"duplicate stanza", asBob(rebuild(t, good, func(h *envelopev1.EnvelopeHeader) { h.Recipients[1] = h.Recipients[0] })), ErrMalformed},
		{"short stanza card id", asBob(rebuild(t, good, func(h *envelopev1.EnvelopeHeader) {
			h.Recipients[1].RecipientCardId = h.Recipients[1].RecipientCardId[:8]
		})), ErrMalformed},
		{"short wrapped key", asBob(rebuild(t, good, func(h *envelopev1.EnvelopeHeader) { h.Recipients[0].WrappedKey = h.Recipients[0].WrappedKey[:32] })), ErrMalformed},
		{"no recipients", asBob(rebuild(t, good, func(h *envelopev1.EnvelopeHeader) { h.Recipients = nil })), ErrMalformed},
		{"1,001 stanzas", asBob(rebuild(t, good, bigHeader)), ErrTooLarge},
		{"header over the limit", asBob(rebuild(t, good, hugeHeader)), ErrTooLarge},
		{"envelope over the limit", asBob(make([]byte, MaxEnvelopeSize+1)), ErrTooLarge},
		{"short nonce", asBob(rebuild(t, good, func(h *envelopev1.EnvelopeHeader) { h.Nonce = h.Nonce[:11] })), ErrMalformed},
		{"no creation time", asBob(rebuild(t, good, func(h *envelopev1.EnvelopeHeader) { h.CreatedAtUnixSeconds = 0 })), ErrMalformed},
		{"short sender card id", asBob(rebuild(t, good, func(h *envelopev1.EnvelopeHeader) { h.SenderCardId = h.SenderCardId[:31] })), ErrMalformed},
		{"another sender card than the given one", input{good, keysOf(bobM), other.card}, ErrWrongSender},
		{"no sender card", input{good, keysOf(bobM), nil}, ErrWrongSender},
		{"header names another sender", asBob(rebuild(t, good, func(h *envelopev1.EnvelopeHeader) { h.SenderCardId = other.card.ID })), ErrWrongSender},
		{"not a recipient", input{good, keysOf(dave), sender.card}, ErrNotRecipient},
		{"no keys at all", input{good, nil, sender.card}, ErrNotRecipient},
		{"body bit flipped", asBob(envelopeOf(header, flip(body, 5))), ErrDecrypt},
		{"tag bit flipped", asBob(envelopeOf(header, flip(body, len(body)-1))), ErrDecrypt},
		{"nonce changed", asBob(rebuild(t, good, func(h *envelopev1.EnvelopeHeader) { h.Nonce[0] ^= 1 })), ErrDecrypt},
		{"date changed", asBob(rebuild(t, good, func(h *envelopev1.EnvelopeHeader) { h.CreatedAtUnixSeconds++ })), ErrDecrypt},
		{"AEAD changed", asBob(rebuild(t, good, func(h *envelopev1.EnvelopeHeader) { h.Aead = AEADAES256GCM })), ErrDecrypt},
		{"a stanza removed", asBob(rebuild(t, good, func(h *envelopev1.EnvelopeHeader) { h.Recipients = h.Recipients[:1] })), ErrDecrypt},
		{"our stanza's enc changed", asBob(rebuild(t, good, func(h *envelopev1.EnvelopeHeader) { h.Recipients[0].Enc[3] ^= 1 })), ErrDecrypt},
		{"our stanza's enc a low-order point", asBob(rebuild(t, good, func(h *envelopev1.EnvelopeHeader) { h.Recipients[0].Enc = make([]byte, 32) })), ErrDecrypt},
		{"our stanza's wrapped key changed", asBob(rebuild(t, good, func(h *envelopev1.EnvelopeHeader) { h.Recipients[0].WrappedKey[0] ^= 1 })), ErrDecrypt},
		{"hybrid stanza's enc changed", input{rebuild(t, good, func(h *envelopev1.EnvelopeHeader) { h.Recipients[1].Enc[1000] ^= 1 }), keysOf(carol), sender.card}, ErrDecrypt},
		{"stanza wrapped to another card's key", asBob(swappedWraps), ErrDecrypt},
		{"signed by another key than the sender card's", asBob(signedByOther), ErrBadSignature},
		{"re-encrypted by a recipient to another card", input{forwarded(), keysOf(dave), sender.card}, ErrBadSignature},
		{"signature without its label", asBob(sealed(t, sender.card, bobM, signedWith(""))), ErrBadSignature},
		{"signature with the group message label", asBob(sealed(t, sender.card, bobM, signedWith(LabelGroupMessageSignature))), ErrBadSignature},
		{"payload without a signature", asBob(sealed(t, sender.card, bobM, fixedPayload(payloadOf(plaintext, nil)))), ErrMalformed},
		{"payload with a short signature", asBob(sealed(t, sender.card, bobM, fixedPayload(payloadOf(plaintext, make([]byte, 63))))), ErrMalformed},
		{"payload that does not parse", asBob(sealed(t, sender.card, bobM, fixedPayload([]byte{0x0a, 0x05, 1}))), ErrMalformed},
		{"payload with an unknown field", asBob(sealed(t, sender.card, bobM, fixedPayload(append(payloadOf(plaintext, make([]byte, 64)), 0x18, 1)))), ErrMalformed},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := Decrypt(tc.in.data, tc.in.keyFor, tc.in.sender)
			if !errors.Is(err, tc.kind) || got != nil {
				t.Fatalf("Decrypt = %q, %v; want %v", got, err, tc.kind)
			}
			checkKind(t, err, envelopeKinds)
		})
	}
}

// TestDecryptEveryTruncationAndBitFlip cuts an envelope at every length and flips one
// bit of every byte: each must fail with a typed error, and never panic.
func TestDecryptEveryTruncationAndBitFlip(t *testing.T) {
	t.Parallel()
	for _, suite := range []Suite{SuiteX25519, SuiteHybrid} {
		t.Run(suite.String(), func(t *testing.T) {
			t.Parallel()
			sender := newMember(t, SuiteX25519, alice, 1)
			rcpt := newMember(t, suite, bob, 2)
			good, err := Encrypt(sender.kp, sender.card.ID, []*Card{rcpt.card}, []byte("the plaintext"), when)
			if err != nil {
				t.Fatal(err)
			}
			e, err := parseEnvelope(good)
			if err != nil {
				t.Fatal(err)
			}
			bodyStart := len(good) - len(e.body)
			for n := range len(good) {
				_, err := Decrypt(good[:n], keysOf(rcpt), sender.card)
				if !errors.Is(err, ErrMalformed) {
					t.Fatalf("truncated to %d of %d bytes: %v; want %v", n, len(good), err, ErrMalformed)
				}
			}
			for i := range good {
				bad := bytes.Clone(good)
				bad[i] ^= 1 << (i % 8)
				got, err := Decrypt(bad, keysOf(rcpt), sender.card)
				if got != nil {
					t.Fatalf("byte %d flipped: decrypted %q", i, got)
				}
				checkKind(t, err, envelopeKinds)
				if i >= bodyStart && !errors.Is(err, ErrDecrypt) {
					t.Fatalf("body byte %d flipped: %v; want %v", i, err, ErrDecrypt)
				}
			}
		})
	}
}

// TestParseBytesPairMatchesStrictUnmarshal checks the hand-written parser of Envelope
// and SignedPayload against the protobuf library's strict parse.
func TestParseBytesPairMatchesStrictUnmarshal(t *testing.T) {
	t.Parallel()
	for _, b := range pairParserCorpus() {
		t.Run(fmt.Sprintf("%x", b), func(t *testing.T) { comparePairParsers(t, b) })
	}
}

func pairParserCorpus() [][]byte {
	x := []byte("xy")
	return [][]byte{
		nil,
		{0x0a, 0x02, 'x', 'y'},
		{0x12, 0x02, 'x', 'y'},
		{0x0a, 0x02, 'x', 'y', 0x12, 0x01, 'z'},
		{0x12, 0x01, 'z', 0x0a, 0x02, 'x', 'y'},
		{0x0a, 0x00},
		{0x0a, 0x82, 0x00, 'x', 'y'},
		{0x8a, 0x00, 0x02, 'x', 'y'},
		{0x0a, 0x02, 'x', 'y', 0x0a, 0x02, 'x', 'y'},
		{0x0a, 0x03, 'x', 'y'},
		{0x08, 0x01},
		{0x1a, 0x01, 'x'},
		append(appendBytesField(nil, 1, x), 0x12),
		{0x0a},
		{0x00},
		{0x0b, 0x0c},
	}
}

func comparePairParsers(t *testing.T, b []byte) {
	t.Helper()
	first, second, err := ParseBytesPair("pair", b)
	var m envelopev1.Envelope
	strictErr := UnmarshalStrict("pair", b, &m)
	if (err == nil) != (strictErr == nil) {
		t.Fatalf("ParseBytesPair(%x) = %v; UnmarshalStrict = %v", b, err, strictErr)
	}
	if err != nil {
		if !errors.Is(err, ErrMalformed) {
			t.Fatalf("ParseBytesPair(%x) = %v; want %v", b, err, ErrMalformed)
		}
		return
	}
	if !bytes.Equal(first, m.GetHeader()) || !bytes.Equal(second, m.GetBody()) {
		t.Fatalf("ParseBytesPair(%x) = %x, %x; UnmarshalStrict = %x, %x", b, first, second, m.GetHeader(), m.GetBody())
	}
}

func TestEnvelopeSizesMatchTheProtoComments(t *testing.T) {
	t.Parallel()
	sender := newMember(t, SuiteX25519, alice, 1)
	for _, tc := range []struct {
		suite     Suite
		perStanza int // the envelope.proto comment says "about" this
	}{{SuiteX25519, 120}, {SuiteHybrid, 1210}} {
		rcpts := newMembers(t, 11, tc.suite)
		headerLen := func(cards []*Card) int {
			data, err := Encrypt(sender.kp, sender.card.ID, cards, nil, when)
			if err != nil {
				t.Fatal(err)
			}
			e, err := parseEnvelope(data)
			if err != nil {
				t.Fatal(err)
			}
			return len(e.header)
		}
		one, eleven := headerLen(cardsOf(rcpts[:1])), headerLen(cardsOf(rcpts))
		per := (eleven - one) / 10
		if per < tc.perStanza-10 || per > tc.perStanza+10 {
			t.Errorf("%s: %d header bytes per stanza; the proto says about %d", tc.suite, per, tc.perStanza)
		}
		if base := one - per; base > 110 {
			t.Errorf("%s: header is %d bytes without its stanzas; the proto says about 100", tc.suite, base)
		}
	}
	if got := 64 + MaxRecipients*1216; got > MaxEnvelopeHeaderSize {
		t.Errorf("a header of %d hybrid stanzas (%d bytes) is over MaxEnvelopeHeaderSize", MaxRecipients, got)
	}
}
