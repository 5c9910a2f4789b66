package kt

import (
	"bytes"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/umbra-e2ee/umbra/pkg/internal/vectortest"
)

// The cosignature test vectors of docs/wire-format.md section 13.8: a witness key, and
// its cosignature of the second checkpoint of section 13.7's vectors at a fixed time.
// TestCosignatureVectors checks that they verify with only the values they state, that
// generating them again gives the same bytes, and that the document shows them.
// -update-vectors (vectors_test.go) rewrites them too.

const cosignatureVectorsFile = "testdata/cosignature_vectors.json"

type cosignatureVectorFile struct {
	Comment []string `json:"comment"`
	Name    string   `json:"witness_name"`
	vectortest.Ed25519Key
	KeyIDInput     vectortest.Hex `json:"key_id_input"`
	KeyID          vectortest.Hex `json:"key_id"`
	VerifierKey    string         `json:"verifier_key"`
	PrivateKey     string         `json:"private_key"`
	Checkpoint     string         `json:"checkpoint_signed_note"`
	Timestamp      uint64         `json:"timestamp"`
	SignedMessage  string         `json:"signed_message"`
	Signature      vectortest.Hex `json:"signature"`
	SignatureLine  string         `json:"signature_line"`
	CosignedNote   string         `json:"cosigned_note"`
	PolicyQuorum   int            `json:"policy_quorum"`
	PolicyVerified bool           `json:"policy_verified"`
}

const vectorCosignTime = 1796126500 // 2026-12-01T12:01:40Z, after the vectors' entries

func generateCosignatureVectors(t *testing.T) *cosignatureVectorFile {
	log := generateVectors(t)
	seed := vectortest.Counting(0xe0, 32)
	w, err := NewWitnessSigner("witness.example/w1", seed)
	if err != nil {
		t.Fatal(err)
	}
	signed := []byte(log.Checkpoints[1].Signed)
	cosigned, err := w.Cosign(signed, time.Unix(vectorCosignTime, 0))
	if err != nil {
		t.Fatal(err)
	}
	line := string(cosigned[len(signed):])
	raw, err := base64.StdEncoding.DecodeString(strings.TrimSuffix(strings.TrimPrefix(line, "— "+w.Key().Name()+" "), "\n"))
	if err != nil {
		t.Fatal(err)
	}
	text, _ := CheckpointText(signed)
	pub := w.Key().PublicKey()
	policy, err := NewWitnessPolicy(1, w.Key().String())
	if err != nil {
		t.Fatal(err)
	}
	_, perr := policy.Check(cosigned, time.Unix(vectorCosignTime, 0))
	return &cosignatureVectorFile{
		Comment: []string{
			"Cosignature test vectors of docs/wire-format.md section 13.8 (C2SP tlog-cosignature/v1, Ed25519); byte strings are hex.",
			"The witness cosigns the checkpoint of 4 entries of vectors.json at the timestamp given.",
		},
		Name:           w.Key().Name(),
		Ed25519Key:     vectortest.Ed25519Key{Seed: seed, PublicKey: vectortest.Hex(pub)},
		KeyIDInput:     append(append([]byte(w.Key().Name()), '\n', 0x04), pub...),
		KeyID:          binary.BigEndian.AppendUint32(nil, w.Key().KeyHash()),
		VerifierKey:    w.Key().String(),
		PrivateKey:     w.String(),
		Checkpoint:     string(signed),
		Timestamp:      vectorCosignTime,
		SignedMessage:  string(CosignedMessage(text, vectorCosignTime)),
		Signature:      raw[12:],
		SignatureLine:  line,
		CosignedNote:   string(cosigned),
		PolicyQuorum:   1,
		PolicyVerified: perr == nil,
	}
}

// verifyCosignatureVectors checks the vectors as an implementation in another
// language would, from the stated values alone.
func verifyCosignatureVectors(t *testing.T, v *cosignatureVectorFile) {
	if !v.Ed25519Key.Agrees() {
		t.Error("seed and public key do not agree")
	}
	if !bytes.Equal(v.KeyIDInput, append(append([]byte(v.Name), '\n', 0x04), v.PublicKey...)) {
		t.Error("key ID input is not name ‖ 0x0a ‖ 0x04 ‖ public key")
	}
	if h := sha256.Sum256(v.KeyIDInput); !bytes.Equal(h[:4], v.KeyID) {
		t.Error("key ID is not the first 4 bytes of SHA-256 of its input")
	}
	wantVkey := fmt.Sprintf("%s+%x+%s", v.Name, []byte(v.KeyID), base64.StdEncoding.EncodeToString(append([]byte{0x04}, v.PublicKey...)))
	if v.VerifierKey != wantVkey {
		t.Errorf("verifier key %q, want %q", v.VerifierKey, wantVkey)
	}
	wantSkey := fmt.Sprintf("PRIVATE+KEY+%s+%x+%s", v.Name, []byte(v.KeyID), base64.StdEncoding.EncodeToString(append([]byte{0x04}, v.Seed...)))
	if v.PrivateKey != wantSkey {
		t.Errorf("private key %q, want %q", v.PrivateKey, wantSkey)
	}
	body, _, ok := strings.Cut(v.Checkpoint, "\n\n")
	if !ok {
		t.Fatal("the checkpoint has no blank line before its signatures")
	}
	if want := fmt.Sprintf("cosignature/v1\ntime %d\n%s\n", v.Timestamp, body); v.SignedMessage != want {
		t.Errorf("signed message %q, want %q", v.SignedMessage, want)
	}
	if !ed25519.Verify(ed25519.PublicKey(v.PublicKey), []byte(v.SignedMessage), v.Signature) {
		t.Error("the signature does not verify over the signed message")
	}
	raw := append(append(bytes.Clone(v.KeyID), binary.BigEndian.AppendUint64(nil, v.Timestamp)...), v.Signature...)
	if want := "— " + v.Name + " " + base64.StdEncoding.EncodeToString(raw) + "\n"; v.SignatureLine != want {
		t.Errorf("signature line %q, want %q", v.SignatureLine, want)
	}
	if v.CosignedNote != v.Checkpoint+v.SignatureLine {
		t.Error("the cosigned note is not the checkpoint with the signature line appended")
	}
	// And this package agrees.
	k, err := ParseWitnessKey(v.VerifierKey)
	if err != nil {
		t.Fatal(err)
	}
	if at, err := VerifyCosignature([]byte(v.CosignedNote), k); err != nil || at.Unix() != int64(v.Timestamp) {
		t.Errorf("VerifyCosignature = %v, %v", at, err)
	}
	if !v.PolicyVerified {
		t.Error("the policy of the witness alone does not accept the cosigned note")
	}
}

func TestCosignatureVectors(t *testing.T) {
	vectortest.Check(t, vectortest.Set[cosignatureVectorFile]{
		File:     cosignatureVectorsFile,
		Section:  "KT COSIGNATURE VECTORS",
		Generate: generateCosignatureVectors,
		Verify:   verifyCosignatureVectors,
		Render:   renderCosignatureVectors,
		Changed:  "the cosignature format changed",
	})
}

func renderCosignatureVectors(v *cosignatureVectorFile) string {
	var w vectortest.Doc
	w.WriteString("\nThe same values are in `pkg/kt/testdata/cosignature_vectors.json`. The witness cosigns the\ncheckpoint of 4 entries of 13.7.\n\n```\n")
	fmt.Fprintf(&w, "witness name: %s\n", v.Name)
	w.Field("seed", v.Seed)
	w.Field("public key", v.PublicKey)
	w.Field("key ID input, name ‖ 0x0a ‖ 0x04 ‖ public key", v.KeyIDInput)
	w.Field("key ID, SHA-256(input)[:4]", v.KeyID)
	fmt.Fprintf(&w, "verifier key: %s\nprivate key: %s\ntimestamp: %d (%s)\n", v.VerifierKey, v.PrivateKey, v.Timestamp, time.Unix(int64(v.Timestamp), 0).UTC().Format(time.RFC3339))
	w.Field("Ed25519 signature", v.Signature)
	w.WriteString("```\n\nSigned message:\n\n```\n")
	w.WriteString(v.SignedMessage)
	w.WriteString("```\n\nThe cosigned checkpoint (the last line is the cosignature):\n\n```\n")
	w.WriteString(v.CosignedNote)
	w.WriteString("```\n\n")
	return w.String()
}
