package e2ee

import (
	"bytes"
	"errors"
	"testing"

	"google.golang.org/protobuf/encoding/protowire"
)

// The fuzz targets run their seed corpus in every `go test`. For a long run (see
// docs/wire-format.md, "Fuzzing"):
//
//	go test -run='^$' -fuzz='^FuzzDecrypt$' -fuzztime=10m ./pkg/e2ee

// FuzzParseCard feeds card content and self-signature bytes to ParseCard, as the card
// service and every client do with what they receive. It must never panic, and a card
// it accepts must be exactly what the bytes say.
func FuzzParseCard(f *testing.F) {
	for i, suite := range []Suite{SuiteX25519, SuiteHybrid} {
		kp := testKeyPair(f, suite, byte(i+1))
		content, sig, err := NewCard(kp, alice, when, nil)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(content, sig)
		rotated, rsig, err := NewCard(kp, bob, when, CardID(content))
		if err != nil {
			f.Fatal(err)
		}
		f.Add(rotated, rsig)
		f.Add(content[:len(content)/2], sig)
		f.Add(append(bytes.Clone(content), 0x40, 0x01), sig)
	}
	f.Add([]byte{}, []byte{})
	f.Fuzz(func(t *testing.T, content, sig []byte) {
		c, err := ParseCard(content, sig)
		if err != nil {
			if c != nil {
				t.Fatal("ParseCard returned a card and an error")
			}
			checkKind(t, err, cardKinds)
			return
		}
		if !bytes.Equal(c.ID, sha(content)) || !bytes.Equal(c.Content, content) || !bytes.Equal(c.SelfSignature, sig) {
			t.Fatal("an accepted card's id, content or signature differ from its bytes")
		}
		if len(c.SigningKey) != 32 || c.KEMPublicKey == nil {
			t.Fatal("an accepted card lacks a key")
		}
	})
}

// cardKinds are every kind ParseCard may fail with.
var cardKinds = []error{ErrMalformed, ErrUnknownSuite, ErrBadSignature, ErrTooLarge}

// FuzzDecrypt feeds envelope bytes to InspectEnvelope and Decrypt with fixed keys. They
// must never panic, fail only with a typed error, and agree with each other.
func FuzzDecrypt(f *testing.F) {
	// The fixed keys: alice sends, bob (X25519) and carol (hybrid) receive.
	sender, bobM, carol := newMember(f, SuiteX25519, alice, 1), newMember(f, SuiteX25519, bob, 2), newMember(f, SuiteHybrid, bob, 3)
	for _, seed := range []struct {
		aead       AEAD
		recipients []*Card
		plaintext  []byte
	}{
		{AEADChaCha20Poly1305, []*Card{bobM.card}, []byte("hello bob")},
		{AEADChaCha20Poly1305, []*Card{carol.card}, []byte("hello carol")},
		{AEADAES256GCM, []*Card{carol.card, bobM.card, sender.card}, []byte("hello all")},
		{AEADChaCha20Poly1305, []*Card{bobM.card}, nil},
	} {
		data, err := EncryptWithAEAD(seed.aead, sender.kp, sender.card.ID, seed.recipients, seed.plaintext, when)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
		f.Add(data[:len(data)-1])
	}
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, data []byte) {
		info, inspectErr := InspectEnvelope(data)
		plaintext, err := Decrypt(data, keysOf(bobM, carol), sender.card)
		if !openAgrees(t, fuzzedOpen{"Decrypt", "InspectEnvelope", "an envelope", envelopeKinds}, plaintext, err, inspectErr) {
			return
		}
		if !bytes.Equal(info.SenderCardID, sender.card.ID) {
			t.Fatal("Decrypt accepted an envelope that names another sender")
		}
	})
}

// fuzzedOpen names a function that opens fuzzed bytes (Decrypt), the one that
// inspects them without a key (InspectEnvelope), what the bytes are ("an envelope"),
// and the kinds the open may fail with.
type fuzzedOpen struct {
	open, inspect, what string
	kinds               []error
}

// openAgrees fails t unless an open of fuzzed bytes, which returned plaintext and err,
// agrees with their inspection, which returned inspectErr: a failed open returns no
// plaintext and fails with one of f.kinds, of the inspection's kind if that failed too;
// a successful open follows a successful inspection. It reports whether the open
// succeeded.
func openAgrees(t *testing.T, f fuzzedOpen, plaintext []byte, err, inspectErr error) bool {
	t.Helper()
	if err != nil {
		if plaintext != nil {
			t.Fatalf("%s returned a plaintext and an error", f.open)
		}
		checkKind(t, err, f.kinds)
		if inspectErr != nil && kindOf(inspectErr) != kindOf(err) {
			t.Fatalf("%s fails with %v but %s with %v", f.inspect, inspectErr, f.open, err)
		}
		return false
	}
	if inspectErr != nil {
		t.Fatalf("%s accepts %s %s refuses: %v", f.open, f.what, f.inspect, inspectErr)
	}
	return true
}

// kindOf returns the kind of an error of this package, or nil.
func kindOf(err error) error {
	var e *Error
	if errors.As(err, &e) {
		return e.Kind
	}
	return nil
}

// FuzzParseBytesPair checks the hand-written parser of Envelope and SignedPayload
// against the protobuf library's strict parse on any input.
func FuzzParseBytesPair(f *testing.F) {
	for _, b := range pairParserCorpus() {
		f.Add(b)
	}
	f.Add(protowire.AppendBytes(protowire.AppendTag(nil, 2, protowire.BytesType), make([]byte, 300)))
	f.Fuzz(comparePairParsers)
}
