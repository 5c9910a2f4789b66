package e2ee

import (
	"bytes"
	"crypto/ed25519"
	"crypto/hkdf"
	"crypto/sha256"
	"fmt"
	"testing"
	"testing/cryptotest"
	"time"

	"github.com/umbra-e2ee/umbra/pkg/internal/vectortest"
	envelopev1 "github.com/umbra-e2ee/umbra/proto/umbra/envelope/v1"
)

// The group test vectors of docs/wire-format.md ("Group messages and epochs"). They use
// the key pairs and cards of testdata/vectors.json, fixed epoch keys and salts, and the
// deterministic randomness of cryptotest.SetGlobalRandom for the HPKE encapsulations.
// TestGroupVectors checks them as TestVectors checks the others: every vector verifies
// and opens with the values it states, generating them again gives the same bytes, and
// the document shows exactly these bytes. Regenerate after an intended change with
//
//	go test ./pkg/e2ee -run '^TestGroupVectors$' -update-vectors

const (
	groupVectorsFile  = "testdata/group_vectors.json"
	groupRandomSeed   = 20261105
	groupVectorsGroup = "g_gggggggggggggggggggggggggggggggg"
)

type groupVectorFile struct {
	Comment  []string             `json:"comment"`
	GroupID  string               `json:"group_id"`
	Epochs   []epochVector        `json:"epochs"`
	Messages []groupMessageVector `json:"messages"`
}

type wrappedKeyVector struct {
	RecipientCard string         `json:"recipient_card"`
	CardID        vectortest.Hex `json:"recipient_card_id"`
	Info          vectortest.Hex `json:"info"`
	Enc           vectortest.Hex `json:"enc"`
	Ciphertext    vectortest.Hex `json:"ciphertext"`
	// Encoding is the canonical WrappedEpochKey.
	Encoding vectortest.Hex `json:"encoding"`
}

type epochVector struct {
	Epoch                uint64             `json:"epoch"`
	SignerCard           string             `json:"signer_card"`
	CreatedAtUnixSeconds int64              `json:"created_at_unix_seconds"`
	EpochKey             vectortest.Hex     `json:"epoch_key"`
	KeyCommitmentInput   vectortest.Hex     `json:"key_commitment_input"`
	KeyCommitment        vectortest.Hex     `json:"key_commitment"`
	WrappedKeys          []wrappedKeyVector `json:"wrapped_keys"`
	DigestInput          vectortest.Hex     `json:"wrapped_keys_digest_input"`
	WrappedKeysDigest    vectortest.Hex     `json:"wrapped_keys_digest"`
	PreviousCommitHash   vectortest.Hex     `json:"previous_commit_hash"`
	MembershipSequence   uint64             `json:"membership_sequence"`
	MembershipHash       vectortest.Hex     `json:"membership_hash"`
	Content              vectortest.Hex     `json:"content"`
	SignatureInput       vectortest.Hex     `json:"signature_input"`
	Signature            vectortest.Hex     `json:"signature"`
	CommitHash           vectortest.Hex     `json:"commit_hash"`
}

type groupMessageVector struct {
	Name                 string         `json:"name"`
	SenderCard           string         `json:"sender_card"`
	Epoch                uint64         `json:"epoch"`
	AEAD                 string         `json:"aead"`
	CreatedAtUnixSeconds int64          `json:"created_at_unix_seconds"`
	Plaintext            vectortest.Hex `json:"plaintext"`
	Salt                 vectortest.Hex `json:"salt"`
	Header               vectortest.Hex `json:"header"`
	HeaderHash           vectortest.Hex `json:"header_hash"`
	HKDFInfo             vectortest.Hex `json:"hkdf_info"`
	MessageKey           vectortest.Hex `json:"message_key"`
	Nonce                vectortest.Hex `json:"nonce"`
	SignatureInput       vectortest.Hex `json:"signature_input"`
	Signature            vectortest.Hex `json:"signature"`
	SignedPayload        vectortest.Hex `json:"signed_payload"`
	Body                 vectortest.Hex `json:"body"`
	Message              vectortest.Hex `json:"message"`
}

// loadVectorKeys returns the key pairs and cards of testdata/vectors.json by name.
func loadVectorKeys(t *testing.T) (map[string]*KeyPair, map[string]*Card) {
	t.Helper()
	v := vectortest.Load[vectorFile](t, vectorsFile)
	keys, cards := map[string]*KeyPair{}, map[string]*Card{}
	for _, k := range v.Keys {
		kp, err := NewKeyPair(Suite(envelopev1.Suite_value[k.Suite]), k.SigningSeed, k.KEMPrivateKey)
		if err != nil {
			t.Fatal(err)
		}
		keys[k.Name] = kp
	}
	for _, c := range v.Cards {
		card, err := ParseCard(c.Content, c.SelfSignature)
		if err != nil {
			t.Fatal(err)
		}
		cards[c.Name] = card
		keys["card:"+c.Name] = keys[c.Key]
	}
	return keys, cards
}

func generateGroupVectors(t *testing.T) *groupVectorFile {
	keys, cards := loadVectorKeys(t)
	v := &groupVectorFile{
		Comment: []string{
			"Group test vectors of docs/wire-format.md: all byte strings are hex.",
			"Key pairs and cards are those of vectors.json. Epoch keys and message salts are fixed; the HPKE encapsulations used deterministic test randomness, so only an unwrap can be checked against them.",
		},
		GroupID: groupVectorsGroup,
	}
	created := time.Date(2026, 11, 3, 12, 0, 0, 0, time.UTC)
	// Each epoch is made for a head of the chain of the membership vectors: epoch 1
	// after bob became an admin (alice, bob and carol are members), epoch 2 after bob
	// removed carol.
	chain := generateMembershipVectors(t).Statements
	heads := map[uint64]MembershipHead{
		1: {Sequence: chain[3].Sequence, Hash: chain[3].Hash},
		2: {Sequence: chain[4].Sequence, Hash: chain[4].Hash},
	}
	epochKeys := map[uint64][]byte{}
	var previous []byte
	for _, e := range []struct {
		epoch      uint64
		signer     string
		recipients []string
		key        []byte
	}{
		{1, "alice-1", []string{"alice-1", "bob", "carol"}, vectortest.Counting(0x20, EpochKeySize)},
		{2, "bob", []string{"bob", "alice-2"}, vectortest.Counting(0xa0, EpochKeySize)},
	} {
		var rcpts []*Card
		for _, r := range e.recipients {
			rcpts = append(rcpts, cards[r])
		}
		at := created.Add(time.Duration(e.epoch) * time.Hour)
		ep, err := newEpoch(bytes.NewReader(e.key), 1, keys["card:"+e.signer], cards[e.signer].ID, groupVectorsGroup, e.epoch, previous, heads[e.epoch], rcpts, at)
		if err != nil {
			t.Fatal(err)
		}
		c, err := ParseEpochCommit(ep.Commit)
		if err != nil {
			t.Fatal(err)
		}
		ev := epochVector{
			Epoch: e.epoch, SignerCard: e.signer, CreatedAtUnixSeconds: at.Unix(), EpochKey: ep.Key,
			KeyCommitmentInput: Labelled(LabelEpochKeyCommitment, str(groupVectorsGroup), u64(e.epoch), ep.Key),
			KeyCommitment:      c.KeyCommitment, WrappedKeysDigest: c.WrappedKeysDigest, PreviousCommitHash: previous,
			MembershipSequence: heads[e.epoch].Sequence, MembershipHash: heads[e.epoch].Hash,
			Content: ep.Commit.GetContent(), SignatureInput: Labelled(LabelEpochCommitSignature, ep.Commit.GetContent()),
			Signature: ep.Commit.GetSignature(), CommitHash: ep.CommitHash,
		}
		// The digest input, spelled out: the wraps in ascending card id order.
		sorted := make([]int, len(rcpts))
		for i := range sorted {
			sorted[i] = i
		}
		for i := range sorted {
			for j := i + 1; j < len(sorted); j++ {
				if bytes.Compare(rcpts[sorted[j]].ID, rcpts[sorted[i]].ID) < 0 {
					sorted[i], sorted[j] = sorted[j], sorted[i]
				}
			}
		}
		ev.DigestInput = Labelled(LabelEpochRecipients, u32(uint32(len(rcpts))))
		for _, i := range sorted {
			w := ep.WrappedKeys[i]
			ev.DigestInput = append(append(ev.DigestInput, w.GetRecipientCardId()...), sha(u16(uint16(len(w.GetEnc()))), w.GetEnc(), w.GetCiphertext())...)
		}
		for i, w := range ep.WrappedKeys {
			enc, err := Marshal(w)
			if err != nil {
				t.Fatal(err)
			}
			ev.WrappedKeys = append(ev.WrappedKeys, wrappedKeyVector{e.recipients[i], w.GetRecipientCardId(), epochKeyWrapInfo(groupVectorsGroup, e.epoch, w.GetRecipientCardId()), w.GetEnc(), w.GetCiphertext(), enc})
		}
		v.Epochs = append(v.Epochs, ev)
		epochKeys[e.epoch] = ep.Key
		previous = ep.CommitHash
	}

	for _, m := range []struct {
		name, sender string
		epoch        uint64
		aead         AEAD
		salt         []byte
		plaintext    []byte
	}{
		{"alice-1 at epoch 1", "alice-1", 1, AEADChaCha20Poly1305, vectortest.Counting(0x40, groupSaltSize), []byte("Hello, group! Alice here, at epoch 1.")},
		{"bob at epoch 2, AES-256-GCM", "bob", 2, AEADAES256GCM, vectortest.Counting(0xc0, groupSaltSize), []byte("Carol has left; this is epoch 2.")},
	} {
		at := created.Add(time.Duration(m.epoch)*time.Hour + time.Minute)
		data, err := sealGroupMessage(bytes.NewReader(m.salt), m.aead, keys["card:"+m.sender], cards[m.sender].ID, groupVectorsGroup, m.epoch, epochKeys[m.epoch], m.plaintext, at)
		if err != nil {
			t.Fatal(err)
		}
		gm, err := parseGroupMessage(data)
		if err != nil {
			t.Fatal(err)
		}
		key, nonce, err := groupMessageKey(epochKeys[m.epoch], m.salt, gm.headerHash)
		if err != nil {
			t.Fatal(err)
		}
		sigInput := Labelled(LabelGroupMessageSignature, gm.headerHash, m.plaintext)
		sig := ed25519.Sign(keys["card:"+m.sender].Signing, sigInput)
		v.Messages = append(v.Messages, groupMessageVector{
			Name: m.name, SenderCard: m.sender, Epoch: m.epoch, AEAD: m.aead.String(), CreatedAtUnixSeconds: at.Unix(),
			Plaintext: m.plaintext, Salt: m.salt, Header: gm.header, HeaderHash: gm.headerHash,
			HKDFInfo: Labelled(LabelGroupMessageKey, gm.headerHash), MessageKey: key, Nonce: nonce,
			SignatureInput: sigInput, Signature: sig,
			SignedPayload: appendBytesField(appendBytesField(nil, 1, m.plaintext), 2, sig),
			Body:          gm.body, Message: data,
		})
	}
	return v
}

func TestGroupVectors(t *testing.T) {
	cryptotest.SetGlobalRandom(t, groupRandomSeed)
	vectortest.Check(t, vectortest.Set[groupVectorFile]{
		File:     groupVectorsFile,
		Section:  "GROUP TEST VECTORS",
		Generate: generateGroupVectors,
		Verify:   verifyGroupVectors,
		Render:   renderGroupVectors,
		Changed:  "the group format changed",
	})
}

// verifyGroupVectors checks every group vector with only the values it states and the
// keys of vectors.json, as an implementation in another language would.
func verifyGroupVectors(t *testing.T, v *groupVectorFile) {
	keys, cards := loadVectorKeys(t)
	epochKeys := map[uint64][]byte{}
	var previous []byte
	for _, e := range v.Epochs {
		signer := cards[e.SignerCard]
		signed := &SignedEpochCommit{Content: e.Content, Signature: e.Signature}
		c, err := VerifyEpochCommit(signed, v.GroupID, e.Epoch, signer)
		if err != nil {
			t.Fatalf("epoch %d: %v", e.Epoch, err)
		}
		wantCommitInput := append(append(append([]byte(LabelEpochKeyCommitment+"\x00"), byte(len(v.GroupID)>>8), byte(len(v.GroupID))), v.GroupID...), u64(e.Epoch)...)
		wantCommitInput = append(wantCommitInput, e.EpochKey...)
		switch {
		case !bytes.Equal(e.KeyCommitmentInput, wantCommitInput) || !bytes.Equal(sha(e.KeyCommitmentInput), e.KeyCommitment) || !bytes.Equal(c.KeyCommitment, e.KeyCommitment):
			t.Errorf("epoch %d: key commitment differs", e.Epoch)
		case !bytes.Equal(sha(e.DigestInput), e.WrappedKeysDigest) || !bytes.Equal(c.WrappedKeysDigest, e.WrappedKeysDigest):
			t.Errorf("epoch %d: wrapped keys digest differs", e.Epoch)
		case !bytes.Equal(c.PreviousCommitHash, previous) || !bytes.Equal(e.PreviousCommitHash, previous):
			t.Errorf("epoch %d: previous commit hash is not the previous epoch's commit hash", e.Epoch)
		case !bytes.Equal(sha(e.Content), e.CommitHash):
			t.Errorf("epoch %d: commit hash differs", e.Epoch)
		case !bytes.Equal(e.SignatureInput, append([]byte(LabelEpochCommitSignature+"\x00"), e.Content...)) || !bytes.Equal(ed25519.Sign(keys["card:"+e.SignerCard].Signing, e.SignatureInput), e.Signature):
			t.Errorf("epoch %d: the signature is not Ed25519 over LABEL || content", e.Epoch)
		case c.Membership.Sequence != e.MembershipSequence || !bytes.Equal(c.Membership.Hash, e.MembershipHash):
			t.Errorf("epoch %d: the membership head differs from the vector", e.Epoch)
		case c.CreatedAt.Unix() != e.CreatedAtUnixSeconds || int(c.WrappedKeyCount) != len(e.WrappedKeys):
			t.Errorf("epoch %d: commit fields differ from the vector", e.Epoch)
		}
		var wraps []*WrappedEpochKey
		for _, w := range e.WrappedKeys {
			var m envelopev1.WrappedEpochKey
			if err := UnmarshalStrict("wrapped key", w.Encoding, &m); err != nil {
				t.Fatal(err)
			}
			rcpt := cards[w.RecipientCard]
			wantInfo := append(append(append([]byte(LabelEpochKeyWrap+"\x00"), byte(len(v.GroupID)>>8), byte(len(v.GroupID))), v.GroupID...), u64(e.Epoch)...)
			wantInfo = append(wantInfo, rcpt.ID...)
			if !bytes.Equal(w.Info, wantInfo) || !bytes.Equal(m.GetRecipientCardId(), rcpt.ID) || !bytes.Equal(w.CardID, rcpt.ID) || !bytes.Equal(m.GetEnc(), w.Enc) || !bytes.Equal(m.GetCiphertext(), w.Ciphertext) {
				t.Errorf("epoch %d: the wrap to %s differs from its fields", e.Epoch, w.RecipientCard)
			}
			key, err := c.OpenEpochKey(&m, keysOf(member{keys["card:"+w.RecipientCard], rcpt}))
			if err != nil || !bytes.Equal(key, e.EpochKey) {
				t.Errorf("epoch %d: %s unwraps %x, %v", e.Epoch, w.RecipientCard, key, err)
			}
			wraps = append(wraps, &m)
		}
		if err := c.CheckWrappedKeys(wraps); err != nil {
			t.Errorf("epoch %d: %v", e.Epoch, err)
		}
		epochKeys[e.Epoch] = e.EpochKey
		previous = e.CommitHash
	}
	for _, m := range v.Messages {
		sender := cards[m.SenderCard]
		info, err := InspectGroupMessage(m.Message)
		if err != nil {
			t.Fatalf("message %q: %v", m.Name, err)
		}
		okm, err := hkdf.Key(sha256.New, epochKeys[m.Epoch], m.Salt, string(m.HKDFInfo), 44)
		if err != nil {
			t.Fatal(err)
		}
		switch {
		case !bytes.Equal(m.Message, appendBytesField(appendBytesField(nil, 1, m.Header), 2, m.Body)):
			t.Errorf("message %q: not the encoding of its header and body", m.Name)
		case !bytes.Equal(sha(m.Header), m.HeaderHash) || !bytes.Equal(info.HeaderHash, m.HeaderHash):
			t.Errorf("message %q: header hash differs", m.Name)
		case info.GroupID != v.GroupID || info.Epoch != m.Epoch || !bytes.Equal(info.SenderCardID, sender.ID) || info.AEAD.String() != m.AEAD || info.CreatedAt.Unix() != m.CreatedAtUnixSeconds:
			t.Errorf("message %q: header fields differ from the vector", m.Name)
		case !bytes.Equal(m.HKDFInfo, append([]byte(LabelGroupMessageKey+"\x00"), m.HeaderHash...)):
			t.Errorf("message %q: HKDF info is not LABEL || header hash", m.Name)
		case !bytes.Equal(okm[:32], m.MessageKey) || !bytes.Equal(okm[32:], m.Nonce):
			t.Errorf("message %q: HKDF output differs from the stated key and nonce", m.Name)
		case !bytes.Equal(m.SignatureInput, append(append([]byte(LabelGroupMessageSignature+"\x00"), m.HeaderHash...), m.Plaintext...)) || !ed25519.Verify(sender.SigningKey, m.SignatureInput, m.Signature):
			t.Errorf("message %q: signature input or signature wrong", m.Name)
		}
		if payload, err := openBody(t, info.AEAD, m.MessageKey, m.Nonce, m.Body, m.Header); err != nil || !bytes.Equal(payload, m.SignedPayload) {
			t.Errorf("message %q: the body does not open to the signed payload: %v", m.Name, err)
		}
		pt, err := OpenGroupMessage(m.Message, v.GroupID, func(e uint64) []byte { return epochKeys[e] }, sender)
		if err != nil || !bytes.Equal(pt, m.Plaintext) {
			t.Errorf("message %q opens to %q, %v", m.Name, pt, err)
		}
	}
}

func renderGroupVectors(v *groupVectorFile) string {
	var b vectortest.Doc
	fmt.Fprintf(&b, "\nThe same values are in `pkg/e2ee/testdata/group_vectors.json`. Group: `%s`.\n", v.GroupID)
	for _, e := range v.Epochs {
		b.Block(fmt.Sprintf("Epoch %d, committed by card %s", e.Epoch, e.SignerCard), func() {
			fmt.Fprintf(&b, "created_at_unix_seconds: %d\n", e.CreatedAtUnixSeconds)
			b.Field("epoch key", e.EpochKey)
			b.Field("key commitment input", e.KeyCommitmentInput)
			b.Field("key_commitment", e.KeyCommitment)
			for i, w := range e.WrappedKeys {
				b.Field(fmt.Sprintf("wrap %d (card %s): info", i, w.RecipientCard), w.Info)
				b.Field(fmt.Sprintf("wrap %d (card %s): enc", i, w.RecipientCard), w.Enc)
				b.Field(fmt.Sprintf("wrap %d (card %s): ciphertext", i, w.RecipientCard), w.Ciphertext)
			}
			b.Field("wrapped keys digest input", e.DigestInput)
			b.Field("wrapped_keys_digest", e.WrappedKeysDigest)
			b.Field("previous_commit_hash", e.PreviousCommitHash)
			fmt.Fprintf(&b, "membership_sequence: %d\n", e.MembershipSequence)
			b.Field("membership_hash", e.MembershipHash)
			b.Field("content (EpochCommitContent)", e.Content)
			b.Field("signature", e.Signature)
			b.Field("commit hash = SHA-256(content)", e.CommitHash)
		})
	}
	for _, m := range v.Messages {
		b.Block(fmt.Sprintf("Group message: %s", m.Name), func() {
			fmt.Fprintf(&b, "sender card: %s\nepoch: %d\naead: %s\ncreated_at_unix_seconds: %d\nplaintext: %q\n", m.SenderCard, m.Epoch, m.AEAD, m.CreatedAtUnixSeconds, m.Plaintext)
			b.Field("salt", m.Salt)
			b.Field("header (GroupMessageHeader)", m.Header)
			b.Field("header_hash", m.HeaderHash)
			b.Field("HKDF info", m.HKDFInfo)
			b.Field("message key", m.MessageKey)
			b.Field("nonce", m.Nonce)
			b.Field("signature", m.Signature)
			b.Field("signed payload (SignedPayload)", m.SignedPayload)
			b.Field("group message (GroupMessage)", m.Message)
		})
	}
	b.WriteString("\n")
	return b.String()
}
