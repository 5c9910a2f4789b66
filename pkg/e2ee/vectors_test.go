package e2ee

import (
	"bytes"
	"crypto/ed25519"
	"fmt"
	"strings"
	"testing"
	"testing/cryptotest"
	"time"

	"github.com/umbra-e2ee/umbra/pkg/internal/vectortest"
	envelopev1 "github.com/umbra-e2ee/umbra/proto/umbra/envelope/v1"
)

// The test vectors of docs/wire-format.md. They are generated from fixed seeds, fixed
// content keys and nonces, and (for the HPKE encapsulations) the deterministic
// randomness of cryptotest.SetGlobalRandom. TestVectors checks them in three ways:
// every vector verifies and decrypts with nothing but the values it states; generating
// them again gives the same bytes; and the document shows exactly these bytes.
//
// After an intended change of the format (or a Go release that consumes randomness
// differently inside crypto/hpke), regenerate both files with
//
//	go test ./pkg/e2ee -run '^TestVectors$' -update-vectors
//
// and review the diff.
const (
	vectorsFile = "testdata/vectors.json"
	// vectorRandomSeed is the cryptotest.SetGlobalRandom seed of the HPKE encapsulations.
	vectorRandomSeed = 20261101
)

type vectorFile struct {
	Comment      []string              `json:"comment"`
	Keys         []keyVector           `json:"keys"`
	ServiceKey   vectortest.Ed25519Key `json:"service_key"`
	Cards        []cardVector          `json:"cards"`
	Endorsements []endorsementVector   `json:"endorsements"`
	Envelopes    []envelopeVector      `json:"envelopes"`
}

type keyVector struct {
	Name             string         `json:"name"`
	Suite            string         `json:"suite"`
	Seed             vectortest.Hex `json:"seed"`
	SigningSeed      vectortest.Hex `json:"signing_seed"`
	SigningPublicKey vectortest.Hex `json:"signing_public_key"`
	KEMPrivateKey    vectortest.Hex `json:"kem_private_key"`
	KEMPublicKey     vectortest.Hex `json:"kem_public_key"`
}

type cardVector struct {
	Name                 string         `json:"name"`
	Key                  string         `json:"key"`
	Identity             string         `json:"identity"`
	CreatedAtUnixSeconds int64          `json:"created_at_unix_seconds"`
	PreviousCardID       vectortest.Hex `json:"previous_card_id"`
	Content              vectortest.Hex `json:"content"`
	CardID               vectortest.Hex `json:"card_id"`
	SelfSignature        vectortest.Hex `json:"self_signature"`
	ServiceSignature     vectortest.Hex `json:"service_signature"`
}

type endorsementVector struct {
	PreviousCard string         `json:"previous_card"`
	NewCard      string         `json:"new_card"`
	Content      vectortest.Hex `json:"content"`
	Signature    vectortest.Hex `json:"signature"`
}

type stanzaVector struct {
	RecipientCard string         `json:"recipient_card"`
	Info          vectortest.Hex `json:"info"`
	Enc           vectortest.Hex `json:"enc"`
	WrappedKey    vectortest.Hex `json:"wrapped_key"`
}

type envelopeVector struct {
	Name                 string         `json:"name"`
	SenderCard           string         `json:"sender_card"`
	AEAD                 string         `json:"aead"`
	CreatedAtUnixSeconds int64          `json:"created_at_unix_seconds"`
	Plaintext            vectortest.Hex `json:"plaintext"`
	ContentKey           vectortest.Hex `json:"content_key"`
	Nonce                vectortest.Hex `json:"nonce"`
	Stanzas              []stanzaVector `json:"stanzas"`
	Header               vectortest.Hex `json:"header"`
	HeaderHash           vectortest.Hex `json:"header_hash"`
	SignatureInput       vectortest.Hex `json:"signature_input"`
	Signature            vectortest.Hex `json:"signature"`
	SignedPayload        vectortest.Hex `json:"signed_payload"`
	Body                 vectortest.Hex `json:"body"`
	Envelope             vectortest.Hex `json:"envelope"`
}

// generateVectors builds every vector. The caller has fixed crypto/rand.
func generateVectors(t *testing.T) *vectorFile {
	v := &vectorFile{Comment: []string{
		"Test vectors of docs/wire-format.md: all byte strings are hex.",
		"Key pairs come from DeriveKeyPair(suite, seed): the Ed25519 key from seed[0:32], the KEM key from the suite's RFC 9180 DeriveKeyPair(seed[32:64]).",
		"Envelope content keys and nonces are fixed; the HPKE encapsulations used deterministic test randomness, so only a decryption can be checked against them.",
	}}
	keys := map[string]*KeyPair{}
	for i, k := range []struct {
		name  string
		suite Suite
	}{{"alice-1", SuiteHybrid}, {"alice-2", SuiteX25519}, {"bob", SuiteHybrid}, {"carol", SuiteX25519}} {
		seed := vectortest.Counting(byte(i*64), 64)
		kp, err := DeriveKeyPair(k.suite, seed)
		if err != nil {
			t.Fatal(err)
		}
		kem, err := kp.KEMPrivateKey()
		if err != nil {
			t.Fatal(err)
		}
		keys[k.name] = kp
		v.Keys = append(v.Keys, keyVector{k.name, k.suite.String(), seed, kp.SigningSeed(), vectortest.Hex(kp.SigningPublicKey()), kem, kp.KEMPublicKey()})
	}
	service := ed25519.NewKeyFromSeed(bytes.Repeat([]byte{0x5e}, 32))
	v.ServiceKey = vectortest.Ed25519KeyOf(service)

	cards := map[string]*Card{}
	created := time.Date(2026, 11, 1, 12, 0, 0, 0, time.UTC)
	for _, c := range []struct {
		name, key, identity string
		created             time.Time
		previous            string
	}{
		{"alice-1", "alice-1", alice, created, ""},
		{"alice-2", "alice-2", alice, created.Add(24 * time.Hour), "alice-1"},
		{"bob", "bob", bob, created, ""},
		{"carol", "carol", "u_" + strings.Repeat("c", 32), created, ""},
	} {
		var previous []byte
		if c.previous != "" {
			previous = cards[c.previous].ID
		}
		content, sig, err := NewCard(keys[c.key], c.identity, c.created, previous)
		if err != nil {
			t.Fatal(err)
		}
		card, err := ParseCard(content, sig)
		if err != nil {
			t.Fatal(err)
		}
		cards[c.name] = card
		v.Cards = append(v.Cards, cardVector{c.name, c.key, c.identity, c.created.Unix(), previous, content, card.ID, sig, ServiceSign(service, card.ID)})
	}
	econtent, esig, err := Endorse(keys["alice-1"], cards["alice-2"])
	if err != nil {
		t.Fatal(err)
	}
	v.Endorsements = append(v.Endorsements, endorsementVector{"alice-1", "alice-2", econtent, esig})

	for _, e := range []struct {
		name, sender string
		recipients   []string
		aead         AEAD
		secrets      []byte
		plaintext    []byte
	}{
		{"alice-1 to bob and carol", "alice-1", []string{"bob", "carol"}, AEADChaCha20Poly1305, vectortest.Counting(0x00, 44), []byte("Hello, Bob and Carol! This is Alice, signing inside the encryption.")},
		{"alice-2 to carol and alice-2, AES-256-GCM", "alice-2", []string{"carol", "alice-2"}, AEADAES256GCM, vectortest.Counting(0x80, 44), []byte("After the rotation.")},
	} {
		var rcpts []*Card
		for _, r := range e.recipients {
			rcpts = append(rcpts, cards[r])
		}
		sender := cards[e.sender]
		createdAt := created.Add(48 * time.Hour)
		data, err := encrypt(bytes.NewReader(e.secrets), e.aead, keys[e.sender], sender.ID, rcpts, e.plaintext, createdAt)
		if err != nil {
			t.Fatal(err)
		}
		env, err := parseEnvelope(data)
		if err != nil {
			t.Fatal(err)
		}
		sigInput := Labelled(LabelEnvelopeSignature, env.headerHash, e.plaintext)
		sig := ed25519.Sign(keys[e.sender].Signing, sigInput)
		ev := envelopeVector{
			Name: e.name, SenderCard: e.sender, AEAD: e.aead.String(), CreatedAtUnixSeconds: createdAt.Unix(),
			Plaintext: e.plaintext, ContentKey: e.secrets[:contentKeySize], Nonce: e.secrets[contentKeySize:],
			Header: env.header, HeaderHash: env.headerHash, SignatureInput: sigInput, Signature: sig,
			SignedPayload: appendBytesField(appendBytesField(nil, 1, e.plaintext), 2, sig),
			Body:          env.body, Envelope: data,
		}
		for i, s := range env.h.GetRecipients() {
			ev.Stanzas = append(ev.Stanzas, stanzaVector{e.recipients[i], keyWrapInfo(sender.ID, s.GetRecipientCardId()), s.GetEnc(), s.GetWrappedKey()})
		}
		v.Envelopes = append(v.Envelopes, ev)
	}
	return v
}

func TestVectors(t *testing.T) {
	cryptotest.SetGlobalRandom(t, vectorRandomSeed)
	vectortest.Check(t, vectortest.Set[vectorFile]{
		File:     vectorsFile,
		Section:  "TEST VECTORS",
		Generate: generateVectors,
		Verify:   verifyVectors,
		Render:   renderVectors,
		Changed:  "the format changed, or Go's HPKE consumes randomness differently",
	})
}

// verifyVectors checks every vector with only the values it states, as an
// implementation in another language would.
func verifyVectors(t *testing.T, v *vectorFile) {
	keys := map[string]*KeyPair{}
	for _, k := range v.Keys {
		suite := Suite(envelopev1.Suite_value[k.Suite])
		kp, err := NewKeyPair(suite, k.SigningSeed, k.KEMPrivateKey)
		if err != nil {
			t.Fatalf("key %s: %v", k.Name, err)
		}
		derived, err := DeriveKeyPair(suite, k.Seed)
		if err != nil {
			t.Fatalf("key %s: %v", k.Name, err)
		}
		if !kp.Equal(derived) || !bytes.Equal(kp.SigningPublicKey(), k.SigningPublicKey) || !bytes.Equal(kp.KEMPublicKey(), k.KEMPublicKey) {
			t.Errorf("key %s: the stated private keys, seed and public keys do not agree", k.Name)
		}
		keys[k.Name] = kp
	}
	if !v.ServiceKey.Agrees() {
		t.Error("service key: seed and public key do not agree")
	}

	cards := map[string]*Card{}
	for _, c := range v.Cards {
		card, err := ParseCard(c.Content, c.SelfSignature)
		if err != nil {
			t.Fatalf("card %s: %v", c.Name, err)
		}
		kp := keys[c.Key]
		switch {
		case !bytes.Equal(card.ID, c.CardID):
			t.Errorf("card %s: id %x; the vector says %x", c.Name, card.ID, c.CardID)
		case card.Identity != c.Identity || card.CreatedAt.Unix() != c.CreatedAtUnixSeconds || !bytes.Equal(card.PreviousCardID, c.PreviousCardID):
			t.Errorf("card %s: content %+v differs from the vector", c.Name, card)
		case !card.SigningKey.Equal(kp.SigningPublicKey()) || !bytes.Equal(card.KEMPublicKey.Bytes(), kp.KEMPublicKey()) || card.Suite != kp.Suite:
			t.Errorf("card %s: keys differ from key pair %s", c.Name, c.Key)
		}
		if err := VerifyServiceSignature(ed25519.PublicKey(v.ServiceKey.PublicKey), c.CardID, c.ServiceSignature); err != nil {
			t.Errorf("card %s: %v", c.Name, err)
		}
		// Ed25519 is deterministic: the stated signature is the only one.
		if !bytes.Equal(ed25519.Sign(kp.Signing, Labelled(LabelCardSelfSignature, c.Content)), c.SelfSignature) {
			t.Errorf("card %s: the self-signature is not Ed25519 over LABEL || content", c.Name)
		}
		cards[c.Name] = card
	}
	for _, e := range v.Endorsements {
		if err := VerifyEndorsement(cards[e.PreviousCard], cards[e.NewCard], e.Content, e.Signature); err != nil {
			t.Errorf("endorsement of %s by %s: %v", e.NewCard, e.PreviousCard, err)
		}
	}

	for _, e := range v.Envelopes {
		sender := cards[e.SenderCard]
		info, err := InspectEnvelope(e.Envelope)
		if err != nil {
			t.Fatalf("envelope %q: %v", e.Name, err)
		}
		env, _ := parseEnvelope(e.Envelope)
		wantSigInput := append(append([]byte(LabelEnvelopeSignature+"\x00"), e.HeaderHash...), e.Plaintext...)
		switch {
		case !bytes.Equal(env.header, e.Header) || !bytes.Equal(env.body, e.Body):
			t.Errorf("envelope %q: header or body differ from the envelope's fields", e.Name)
		case !bytes.Equal(info.HeaderHash, e.HeaderHash) || !bytes.Equal(sha(e.Header), e.HeaderHash):
			t.Errorf("envelope %q: header hash differs", e.Name)
		case !bytes.Equal(info.SenderCardID, sender.ID) || info.AEAD.String() != e.AEAD || info.CreatedAt.Unix() != e.CreatedAtUnixSeconds || !bytes.Equal(env.h.GetNonce(), e.Nonce):
			t.Errorf("envelope %q: header fields differ from the vector", e.Name)
		case !bytes.Equal(e.SignatureInput, wantSigInput):
			t.Errorf("envelope %q: signature input is not LABEL || header hash || plaintext", e.Name)
		case !ed25519.Verify(sender.SigningKey, e.SignatureInput, e.Signature):
			t.Errorf("envelope %q: the stated signature does not verify", e.Name)
		}
		if payload, err := openBody(t, info.AEAD, e.ContentKey, e.Nonce, e.Body, e.Header); err != nil || !bytes.Equal(payload, e.SignedPayload) {
			t.Errorf("envelope %q: the body does not open to the signed payload under the stated content key: %v", e.Name, err)
		}
		for i, s := range e.Stanzas {
			stanza := env.h.GetRecipients()[i]
			rcpt := cards[s.RecipientCard]
			if !bytes.Equal(stanza.GetRecipientCardId(), rcpt.ID) || !bytes.Equal(stanza.GetEnc(), s.Enc) || !bytes.Equal(stanza.GetWrappedKey(), s.WrappedKey) || stanza.GetSuite() != rcpt.Suite {
				t.Errorf("envelope %q: stanza %d differs from the vector", e.Name, i)
			}
			if want := append(append([]byte(LabelEnvelopeKeyWrap+"\x00"), sender.ID...), rcpt.ID...); !bytes.Equal(s.Info, want) {
				t.Errorf("envelope %q: stanza %d info is not LABEL || sender card id || recipient card id", e.Name, i)
			}
			key, err := env.unwrap(keysOf(member{keys[s.RecipientCard], rcpt}))
			if err != nil || !bytes.Equal(key, e.ContentKey) {
				t.Errorf("envelope %q: stanza %d unwraps to %x, %v; want the content key", e.Name, i, key, err)
			}
			plaintext, err := Decrypt(e.Envelope, keysOf(member{keys[s.RecipientCard], rcpt}), sender)
			if err != nil || !bytes.Equal(plaintext, e.Plaintext) {
				t.Errorf("envelope %q as %s: %q, %v", e.Name, s.RecipientCard, plaintext, err)
			}
		}
	}
}

// renderVectors is the document's test vector section.
func renderVectors(v *vectorFile) string {
	var b vectortest.Doc
	b.WriteString("\n")
	b.WriteString("The same values are in `pkg/e2ee/testdata/vectors.json`. Every byte string is hex, wrapped at\n32 bytes per line.\n")
	b.WriteString("\n### Key pairs\n")
	for _, k := range v.Keys {
		b.Block(fmt.Sprintf("Key pair %s (%s)", k.Name, k.Suite), func() {
			b.Field("seed, DeriveKeyPair input", k.Seed)
			b.Field("signing_seed", k.SigningSeed)
			b.Field("signing_public_key", k.SigningPublicKey)
			b.Field("kem_private_key", k.KEMPrivateKey)
			b.Field("kem_public_key", k.KEMPublicKey)
		})
	}
	b.Block("Card service key (Ed25519)", func() {
		b.Field("seed", v.ServiceKey.Seed)
		b.Field("public_key", v.ServiceKey.PublicKey)
	})
	b.WriteString("\n### Cards\n")
	for _, c := range v.Cards {
		b.Block(fmt.Sprintf("Card %s (key pair %s)", c.Name, c.Key), func() {
			fmt.Fprintf(&b, "identity: %s\ncreated_at_unix_seconds: %d\n", c.Identity, c.CreatedAtUnixSeconds)
			b.Field("previous_card_id", c.PreviousCardID)
			b.Field("content (CardContent)", c.Content)
			b.Field("card_id = SHA-256(content)", c.CardID)
			b.Field("self_signature", c.SelfSignature)
			b.Field("service_signature", c.ServiceSignature)
		})
	}
	b.WriteString("\n### Rotation endorsement\n")
	for _, e := range v.Endorsements {
		b.Block(fmt.Sprintf("Endorsement of card %s by card %s", e.NewCard, e.PreviousCard), func() {
			b.Field("content (RotationEndorsementContent)", e.Content)
			b.Field("signature", e.Signature)
		})
	}
	b.WriteString("\n### Envelopes\n")
	for _, e := range v.Envelopes {
		b.Block(fmt.Sprintf("Envelope: %s", e.Name), func() {
			fmt.Fprintf(&b, "sender card: %s\naead: %s\ncreated_at_unix_seconds: %d\nplaintext: %q\n", e.SenderCard, e.AEAD, e.CreatedAtUnixSeconds, e.Plaintext)
			b.Field("plaintext", e.Plaintext)
			b.Field("content_key", e.ContentKey)
			b.Field("nonce", e.Nonce)
			for i, s := range e.Stanzas {
				b.Field(fmt.Sprintf("stanza %d (card %s): info", i, s.RecipientCard), s.Info)
				b.Field(fmt.Sprintf("stanza %d (card %s): enc", i, s.RecipientCard), s.Enc)
				b.Field(fmt.Sprintf("stanza %d (card %s): wrapped_key", i, s.RecipientCard), s.WrappedKey)
			}
			b.Field("header (EnvelopeHeader)", e.Header)
			b.Field("header_hash = SHA-256(header)", e.HeaderHash)
			b.Field("signature input", e.SignatureInput)
			b.Field("signature", e.Signature)
			b.Field("signed payload (SignedPayload)", e.SignedPayload)
			b.Field("envelope (Envelope)", e.Envelope)
		})
	}
	b.WriteString("\n")
	return b.String()
}
