package e2ee

import (
	"bytes"
	"crypto/ecdh"
	"crypto/hkdf"
	"crypto/mlkem"
	"crypto/sha256"
	"crypto/sha3"
	"encoding/binary"
	"encoding/json"
	"os"
	"testing"

	"golang.org/x/crypto/chacha20poly1305"
)

// TestKEMsAsWritten implements the two suites' KEMs, DeriveKeyPair and the HPKE key
// schedule from primitives, exactly as docs/wire-format.md section 3 writes them out,
// without crypto/hpke, and checks them against the test vectors: the stated private
// and public keys come out of the seeds, and every stanza of every vector envelope
// opens to its content key. If the document's description and Go's crypto/hpke ever
// part, this fails.
func TestKEMsAsWritten(t *testing.T) {
	t.Parallel()
	data, err := os.ReadFile(vectorsFile)
	if err != nil {
		t.Fatal(err)
	}
	var v vectorFile
	if err := json.Unmarshal(data, &v); err != nil {
		t.Fatal(err)
	}
	private := map[string][]byte{}
	suites := map[string]string{}
	for _, k := range v.Keys {
		var priv, pub []byte
		switch k.Suite {
		case "SUITE_X25519":
			priv, pub = writtenX25519DeriveKeyPair(t, k.Seed[32:])
		case "SUITE_MLKEM768_X25519":
			priv, pub = writtenHybridDeriveKeyPair(t, k.Seed[32:])
		}
		if !bytes.Equal(priv, k.KEMPrivateKey) || !bytes.Equal(pub, k.KEMPublicKey) {
			t.Errorf("key %s: the written-out DeriveKeyPair gives private key %x and a public key that differ from the vector", k.Name, priv)
		}
		private[k.Name], suites[k.Name] = k.KEMPrivateKey, k.Suite
	}
	for _, e := range v.Envelopes {
		for i, s := range e.Stanzas {
			var kemID uint16
			var sharedSecret []byte
			switch suites[s.RecipientCard] {
			case "SUITE_X25519":
				kemID, sharedSecret = 0x0020, writtenX25519Decap(t, s.Enc, private[s.RecipientCard])
			case "SUITE_MLKEM768_X25519":
				kemID, sharedSecret = 0x647a, writtenHybridDecap(t, s.Enc, private[s.RecipientCard])
			}
			key, nonce := writtenKeySchedule(t, kemID, sharedSecret, s.Info)
			aead, err := chacha20poly1305.New(key)
			if err != nil {
				t.Fatal(err)
			}
			got, err := aead.Open(nil, nonce, s.WrappedKey, nil)
			if err != nil || !bytes.Equal(got, e.ContentKey) {
				t.Errorf("envelope %q stanza %d (%s): the written-out HPKE opens to %x, %v; want the content key", e.Name, i, s.RecipientCard, got, err)
			}
		}
	}
}

// RFC 9180, section 4: LabeledExtract and LabeledExpand over HKDF-SHA256.
func labeledExtract(t *testing.T, suiteID, salt []byte, label string, ikm []byte) []byte {
	in := append(append(append([]byte("HPKE-v1"), suiteID...), label...), ikm...)
	prk, err := hkdf.Extract(sha256.New, in, salt)
	if err != nil {
		t.Fatal(err)
	}
	return prk
}

func labeledExpand(t *testing.T, suiteID, prk []byte, label string, info []byte, n int) []byte {
	in := binary.BigEndian.AppendUint16(nil, uint16(n))
	in = append(append(append(append(in, "HPKE-v1"...), suiteID...), label...), info...)
	out, err := hkdf.Expand(sha256.New, prk, string(in), n)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func kemSuiteID(id uint16) []byte { return binary.BigEndian.AppendUint16([]byte("KEM"), id) }

func x25519(t *testing.T, scalar, point []byte) []byte {
	k, err := ecdh.X25519().NewPrivateKey(scalar)
	if err != nil {
		t.Fatal(err)
	}
	if point == nil {
		return k.PublicKey().Bytes()
	}
	p, err := ecdh.X25519().NewPublicKey(point)
	if err != nil {
		t.Fatal(err)
	}
	out, err := k.ECDH(p)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// writtenX25519DeriveKeyPair is RFC 9180, section 7.1.3, then the clamping of
// SerializePrivateKey (section 7.1.2).
func writtenX25519DeriveKeyPair(t *testing.T, ikm []byte) (priv, pub []byte) {
	id := kemSuiteID(0x0020)
	sk := labeledExpand(t, id, labeledExtract(t, id, nil, "dkp_prk", ikm), "sk", nil, 32)
	sk[0] &= 248
	sk[31] &= 127
	sk[31] |= 64
	return sk, x25519(t, sk, nil)
}

// writtenX25519Decap is DHKEM(X25519, HKDF-SHA256)'s Decap (RFC 9180, section 4.1).
func writtenX25519Decap(t *testing.T, enc, sk []byte) []byte {
	id := kemSuiteID(0x0020)
	dh := x25519(t, sk, enc)
	kemContext := append(bytes.Clone(enc), x25519(t, sk, nil)...)
	return labeledExpand(t, id, labeledExtract(t, id, nil, "eae_prk", dh), "shared_secret", kemContext, 32)
}

// writtenHybridExpand is expandKey: the 32-byte seed to ML-KEM-768 and X25519 keys.
func writtenHybridExpand(t *testing.T, seed []byte) (dk *mlkem.DecapsulationKey768, skX, pkX []byte) {
	e := sha3.SumSHAKE256(seed, 96)
	dk, err := mlkem.NewDecapsulationKey768(e[:64]) // d = e[0:32], z = e[32:64]
	if err != nil {
		t.Fatal(err)
	}
	return dk, e[64:96], x25519(t, e[64:96], nil)
}

func writtenHybridDeriveKeyPair(t *testing.T, ikm []byte) (priv, pub []byte) {
	in := append(bytes.Clone(ikm), "HPKE-v1"...)
	in = append(in, kemSuiteID(0x647a)...)
	in = binary.BigEndian.AppendUint16(in, uint16(len("DeriveKeyPair")))
	in = append(in, "DeriveKeyPair"...)
	in = binary.BigEndian.AppendUint16(in, 32) // then the empty context
	seed := sha3.SumSHAKE256(in, 32)
	dk, _, pkX := writtenHybridExpand(t, seed)
	return seed, append(dk.EncapsulationKey().Bytes(), pkX...)
}

func writtenHybridDecap(t *testing.T, enc, seed []byte) []byte {
	dk, skX, pkX := writtenHybridExpand(t, seed)
	ctM, ctX := enc[:mlkem.CiphertextSize768], enc[mlkem.CiphertextSize768:]
	ssM, err := dk.Decapsulate(ctM)
	if err != nil {
		t.Fatal(err)
	}
	ssX := x25519(t, skX, ctX)
	h := sha3.New256()
	for _, b := range [][]byte{ssM, ssX, ctX, pkX, {0x5c, 0x2e, 0x2f, 0x2f, 0x5e, 0x5c}} {
		h.Write(b)
	}
	return h.Sum(nil)
}

// writtenKeySchedule is RFC 9180's KeySchedule in mode_base with HKDF-SHA256 and
// ChaCha20-Poly1305; it returns the key and the nonce of the first (only) Seal.
func writtenKeySchedule(t *testing.T, kemID uint16, sharedSecret, info []byte) (key, nonce []byte) {
	id := []byte("HPKE")
	for _, n := range []uint16{kemID, 0x0001, 0x0003} {
		id = binary.BigEndian.AppendUint16(id, n)
	}
	ctx := append([]byte{0x00}, labeledExtract(t, id, nil, "psk_id_hash", nil)...)
	ctx = append(ctx, labeledExtract(t, id, nil, "info_hash", info)...)
	secret := labeledExtract(t, id, sharedSecret, "secret", nil)
	return labeledExpand(t, id, secret, "key", ctx, 32), labeledExpand(t, id, secret, "base_nonce", ctx, 12)
}
