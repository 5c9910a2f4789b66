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
			checkCardErrorKind(t, err)
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

func checkCardErrorKind(t *testing.T, err error) {
	t.Helper()
	for _, k := range []error{ErrMalformed, ErrUnknownSuite, ErrBadSignature, ErrTooLarge} {
		if errors.Is(err, k) {
			return
		}
	}
	t.Fatalf("ParseCard error %v has no card error kind", err)
}

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
		if err != nil {
			if plaintext != nil {
				t.Fatal("Decrypt returned a plaintext and an error")
			}
			checkKind(t, err)
			if inspectErr != nil && kindOf(inspectErr) != kindOf(err) {
				t.Fatalf("InspectEnvelope fails with %v but Decrypt with %v", inspectErr, err)
			}
			return
		}
		if inspectErr != nil {
			t.Fatalf("Decrypt accepts an envelope InspectEnvelope refuses: %v", inspectErr)
		}
		if !bytes.Equal(info.SenderCardID, sender.card.ID) {
			t.Fatal("Decrypt accepted an envelope that names another sender")
		}
	})
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
