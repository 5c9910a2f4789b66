package backup

import (
	"bytes"
	"encoding/hex"
	"testing"

	"github.com/cloudflare/circl/oprf"
	"github.com/cloudflare/circl/zk/dleq"
)

func unhex(t testing.TB, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestEvaluateRFC9497Vectors: the service's key derivation and evaluation reproduce
// the test vectors of RFC 9497 appendix A.1.2 (VOPRF, ristretto255-SHA512, batch size
// 1): the key, the evaluated element, and the output a circl client finalises after
// checking the proof (whose bytes depend on fresh randomness).
func TestEvaluateRFC9497Vectors(t *testing.T) {
	t.Parallel()
	priv, err := oprf.DeriveKey(suite, oprf.VerifiableMode, unhex(t, "a3a3a3a3a3a3a3a3a3a3a3a3a3a3a3a3a3a3a3a3a3a3a3a3a3a3a3a3a3a3a3a3"), []byte("test key"))
	if err != nil {
		t.Fatal(err)
	}
	if sk, _ := priv.MarshalBinary(); !bytes.Equal(sk, unhex(t, "e6f73f344b79b379f1a0dd37e07ff62e38d9f71345ce62ae3a9bc60b04ccd909")) {
		t.Fatalf("skSm %x", sk)
	}
	public, _ := priv.Public().MarshalBinary()
	if !bytes.Equal(public, unhex(t, "c803e2cc6b05fc15064549b5920659ca4a77b2cca6f04f6b357009335476ad4e")) {
		t.Fatalf("pkSm %x", public)
	}
	key, err := newOPRFKey(priv, public)
	if err != nil {
		t.Fatal(err)
	}
	g := suite.Group()
	for _, v := range []struct{ input, blind, blinded, evaluated, proof, output string }{
		{"00", "64d37aed22a27f5191de1c1d69fadb899d8862b58eb4220029e036ec4c1f6706",
			"863f330cc1a1259ed5a5998a23acfd37fb4351a793a5b3c090b642ddc439b945",
			"aa8fa048764d5623868679402ff6108d2521884fa138cd7f9c7669a9a014267e",
			"ddef93772692e535d1a53903db24367355cc2cc78de93b3be5a8ffcc6985dd066d4346421d17bf5117a2a1ff0fcb2a759f58a539dfbe857a40bce4cf49ec600d",
			"b58cfbe118e0cb94d79b5fd6a6dafb98764dff49c14e1770b566e42402da1a7da4d8527693914139caee5bd03903af43a491351d23b430948dd50cde10d32b3c"},
		{"5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a", "64d37aed22a27f5191de1c1d69fadb899d8862b58eb4220029e036ec4c1f6706",
			"cc0b2a350101881d8a4cba4c80241d74fb7dcbfde4a61fde2f91443c2bf9ef0c",
			"60a59a57208d48aca71e9e850d22674b611f752bed48b36f7a91b372bd7ad468",
			"401a0da6264f8cf45bb2f5264bc31e109155600babb3cd4e5af7d181a2c9dc0a67154fabf031fd936051dec80b0b6ae29c9503493dde7393b722eafdf5a50b02",
			"8a9a2f3c7f085b65933594309041fc1898d42d0858e59f90814ae90571a6df60356f4610bf816f27afdd84f47719e480906d27ecd994985890e5f539e7ea74b6"},
	} {
		blinded, err := parseElement(unhex(t, v.blinded))
		if err != nil {
			t.Fatal(err)
		}
		evaluated, proof, err := key.evaluate(blinded)
		if err != nil {
			t.Fatal(err)
		}
		if hex.EncodeToString(evaluated) != v.evaluated || len(proof) != proofSize {
			t.Fatalf("input %s: evaluated %x, proof of %d bytes", v.input, evaluated, len(proof))
		}

		blind := g.NewScalar()
		if err := blind.UnmarshalBinary(unhex(t, v.blind)); err != nil {
			t.Fatal(err)
		}
		client := oprf.NewVerifiableClient(suite, priv.Public())
		fin, req, err := client.DeterministicBlind([][]byte{unhex(t, v.input)}, []oprf.Blind{blind})
		if err != nil {
			t.Fatal(err)
		}
		if enc, _ := req.Elements[0].MarshalBinaryCompress(); hex.EncodeToString(enc) != v.blinded {
			t.Fatalf("client blinded to %x", enc)
		}
		ev := g.NewElement()
		if err := ev.UnmarshalBinary(evaluated); err != nil {
			t.Fatal(err)
		}
		p := new(dleq.Proof)
		if err := p.UnmarshalBinary(g, proof); err != nil {
			t.Fatal(err)
		}
		outs, err := client.Finalize(fin, &oprf.Evaluation{Elements: []oprf.Evaluated{ev}, Proof: p})
		if err != nil || hex.EncodeToString(outs[0]) != v.output {
			t.Fatalf("finalised to %x (%v)", outs, err)
		}
	}
}

// TestKeyDerivation: a key is a function of the secret, app, identity, slot and
// version, each of which changes it; parts are length-prefixed, so moving bytes from
// one to the next changes it too.
func TestKeyDerivation(t *testing.T) {
	t.Parallel()
	secret := []byte(testSecret)
	base := keyRef{app: "app_a", identity: "u_b", slot: 1, version: 1}
	pub := func(secret []byte, ref keyRef) string {
		t.Helper()
		k, err := newKeyDeriver(secret, 0).key(ref)
		if err != nil {
			t.Fatal(err)
		}
		return string(k.public)
	}
	first := pub(secret, base)
	seen := map[string]string{first: "base"}
	if again := pub(secret, base); again != first {
		t.Fatal("derivation is not deterministic")
	}
	for name, k := range map[string]string{
		"other secret":   pub([]byte(testSecret+"x"), base),
		"other app":      pub(secret, keyRef{app: "app_c", identity: "u_b", slot: 1, version: 1}),
		"other identity": pub(secret, keyRef{app: "app_a", identity: "u_c", slot: 1, version: 1}),
		"other slot":     pub(secret, keyRef{app: "app_a", identity: "u_b", slot: 2, version: 1}),
		"next version":   pub(secret, keyRef{app: "app_a", identity: "u_b", slot: 1, version: 2}),
		"shifted parts":  pub(secret, keyRef{app: "app_au", identity: "_b", slot: 1, version: 1}),
	} {
		if prev, dup := seen[k]; dup {
			t.Errorf("%s gives the key of %s", name, prev)
		}
		seen[k] = name
	}
}

// TestKeyCache: the cache is bounded, and a key evicted from it is derived again to
// the same key.
func TestKeyCache(t *testing.T) {
	t.Parallel()
	d := newKeyDeriver([]byte(testSecret), 2)
	var first []byte
	for v := uint64(1); v <= 5; v++ {
		k, err := d.key(keyRef{app: "app_a", identity: "u_b", slot: 1, version: v})
		if err != nil {
			t.Fatal(err)
		}
		if v == 1 {
			first = k.public
		}
	}
	if n := d.cached(); n != 2 {
		t.Fatalf("%d keys cached, want 2", n)
	}
	k, err := d.key(keyRef{app: "app_a", identity: "u_b", slot: 1, version: 1})
	if err != nil || !bytes.Equal(k.public, first) {
		t.Fatalf("evicted key derived again differs: %v", err)
	}
}
