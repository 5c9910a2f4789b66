package keybackup

import (
	"bytes"
	"crypto/rand"
	"errors"
	"strings"
	"testing"

	"github.com/cloudflare/circl/oprf"

	"github.com/umbra-e2ee/umbra/pkg/argon2id"
)

// testKDF is the cheapest Argon2id the service accepts, so that tests run fast.
var testKDF = argon2id.Params{Time: 1, MemoryKiB: 8192, Threads: 1, Salt: bytes.Repeat([]byte{7}, 16)}

var alice = Binding{App: "app_" + strings.Repeat("a", 26), Identity: "u_" + strings.Repeat("a", 32), Slot: SlotPassword}

// testServer is the service's side of the OPRF, as circl implements it.
type testServer struct {
	t   testing.TB
	srv oprf.VerifiableServer
	pk  []byte
}

func newTestServer(t testing.TB) *testServer {
	t.Helper()
	key, err := oprf.GenerateKey(suite, rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	pk, err := key.Public().MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	return &testServer{t: t, srv: oprf.NewVerifiableServer(suite, key), pk: pk}
}

// evaluate runs the server on a blinded element and returns the wire values.
func (s *testServer) evaluate(blinded []byte) (evaluated, proof []byte) {
	s.t.Helper()
	el := suite.Group().NewElement()
	if err := el.UnmarshalBinary(blinded); err != nil {
		s.t.Fatal(err)
	}
	ev, err := s.srv.Evaluate(&oprf.EvaluationRequest{Elements: []oprf.Blinded{el}})
	if err != nil {
		s.t.Fatal(err)
	}
	evaluated, err = ev.Elements[0].MarshalBinaryCompress()
	if err != nil {
		s.t.Fatal(err)
	}
	proof, err = ev.Proof.MarshalBinary()
	if err != nil {
		s.t.Fatal(err)
	}
	return evaluated, proof
}

// run does the client's whole OPRF against s and returns the output.
func (s *testServer) run(b Binding, secret []byte) *Output {
	s.t.Helper()
	bl, err := Blind(b, secret)
	if err != nil {
		s.t.Fatal(err)
	}
	ev, proof := s.evaluate(bl.Element())
	out, err := bl.Finalize(ev, proof, s.pk)
	if err != nil {
		s.t.Fatal(err)
	}
	return out
}

func derive(t *testing.T, out *Output, p Params) *Keys {
	t.Helper()
	k, err := DeriveKeys(out, p)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func TestBackupAndRestoreRoundTrip(t *testing.T) {
	t.Parallel()
	s := newTestServer(t)
	bundle := []byte("a key bundle: every private key of alice")
	for _, aead := range []AEAD{ChaCha20Poly1305, AES256GCM} {
		t.Run(aead.String(), func(t *testing.T) {
			kdf, err := NewArgon2id(argon2id.Params{Time: 1, MemoryKiB: 8192, Threads: 2}, nil)
			if err != nil {
				t.Fatal(err)
			}
			p := Params{Version: 3, AEAD: aead, KDF: kdf}
			backup := derive(t, s.run(alice, []byte("hunter2")), p)
			nonce, ct, err := backup.Seal(nil, bundle)
			if err != nil {
				t.Fatal(err)
			}
			if len(nonce) != NonceSize || len(ct) != len(bundle)+TagSize {
				t.Fatalf("nonce %d bytes, ciphertext %d bytes", len(nonce), len(ct))
			}
			// A restore blinds afresh (another blind, another blinded element) and
			// derives the same keys.
			restore := derive(t, s.run(alice, []byte("hunter2")), p)
			if !bytes.Equal(restore.AuthKey(), backup.AuthKey()) || !bytes.Equal(restore.AuthKeyHash(), backup.AuthKeyHash()) {
				t.Fatal("the restore derived another auth key")
			}
			got, err := restore.Open(nonce, ct)
			if err != nil || !bytes.Equal(got, bundle) {
				t.Fatalf("Open = %q, %v", got, err)
			}
			// A wrong password gives another auth key, and could not open the bundle.
			wrong := derive(t, s.run(alice, []byte("hunter3")), p)
			if bytes.Equal(wrong.AuthKeyHash(), backup.AuthKeyHash()) {
				t.Fatal("a wrong password derived the same auth key")
			}
			if _, err := wrong.Open(nonce, ct); !errors.Is(err, ErrDecrypt) {
				t.Fatalf("Open with a wrong password: %v, want ErrDecrypt", err)
			}
		})
	}
}

func TestBlindedElementsDifferAndHideTheInput(t *testing.T) {
	t.Parallel()
	a, err := Blind(alice, []byte("hunter2"))
	if err != nil {
		t.Fatal(err)
	}
	b, err := Blind(alice, []byte("hunter2"))
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Equal(a.Element(), b.Element()) {
		t.Error("two blindings of one input are equal")
	}
	// The unblinded hash of the input is not what is sent.
	input, _ := OPRFInput(alice, []byte("hunter2"))
	h := suite.Group().HashToElement(input, []byte("HashToGroup-OPRFV1-\x01-ristretto255-SHA512"))
	hb, _ := h.MarshalBinaryCompress()
	if bytes.Equal(a.Element(), hb) || len(a.Element()) != ElementSize {
		t.Error("the blinded element is the input's hash")
	}
}

func TestEveryBindingChangesTheOutput(t *testing.T) {
	t.Parallel()
	s := newTestServer(t)
	base := s.run(alice, []byte("hunter2")).Value
	for name, b := range map[string]Binding{
		"another identity": {App: alice.App, Identity: "u_" + strings.Repeat("b", 32), Slot: SlotPassword},
		"another app":      {App: "app_" + strings.Repeat("b", 26), Identity: alice.Identity, Slot: SlotPassword},
		"another slot":     {App: alice.App, Identity: alice.Identity, Slot: SlotRecovery},
	} {
		if out := s.run(b, []byte("hunter2")).Value; bytes.Equal(out, base) {
			t.Errorf("%s: same OPRF output", name)
		}
	}
	if out := newTestServer(t).run(alice, []byte("hunter2")).Value; bytes.Equal(out, base) {
		t.Error("another service key gave the same OPRF output")
	}
}

func TestOPRFInputIsUnambiguous(t *testing.T) {
	t.Parallel()
	// Length prefixes keep a shift of bytes between fields from giving the same input.
	a, _ := OPRFInput(Binding{App: "app_x", Identity: "u_ab", Slot: SlotPassword}, []byte("c"))
	b, _ := OPRFInput(Binding{App: "app_xu", Identity: "_ab", Slot: SlotPassword}, []byte("c"))
	if bytes.Equal(a, b) {
		t.Fatal("two bindings encode alike")
	}
	if !bytes.HasPrefix(a, []byte("umbra/v1/backup-oprf-input\x00\x00\x05app_x\x00\x04u_ab\x00\x00\x00\x01\x00\x00\x00\x01c")) || len(a) != 27+7+6+4+4+1 {
		t.Errorf("OPRF input = %q", a)
	}
}

func TestFinalizeRefusesABadEvaluation(t *testing.T) {
	t.Parallel()
	s, other := newTestServer(t), newTestServer(t)
	bl, err := Blind(alice, []byte("hunter2"))
	if err != nil {
		t.Fatal(err)
	}
	ev, proof := s.evaluate(bl.Element())
	otherEv, otherProof := other.evaluate(bl.Element())
	flipped := bytes.Clone(proof)
	flipped[3] ^= 1
	identity, _ := suite.Group().Identity().MarshalBinaryCompress()
	for _, tc := range []struct {
		name          string
		ev, proof, pk []byte
		want          error
	}{
		{"another key's evaluation and proof, this key named", otherEv, otherProof, s.pk, ErrBadProof},
		{"this key's evaluation, the other key named", ev, proof, other.pk, ErrBadProof},
		{"another key's evaluation with this key's proof", otherEv, proof, s.pk, ErrBadProof},
		{"a proof with a flipped bit", ev, flipped, s.pk, ErrBadProof},
		{"a short proof", ev, proof[:63], s.pk, ErrInvalid},
		{"a short public key", ev, proof, s.pk[:31], ErrInvalid},
		{"the identity as public key", ev, proof, identity, ErrInvalid},
		{"the identity as evaluation", identity, proof, s.pk, ErrInvalid},
		{"a non-canonical evaluation", bytes.Repeat([]byte{0xff}, 32), proof, s.pk, ErrInvalid},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, err := bl.Finalize(tc.ev, tc.proof, tc.pk)
			if !errors.Is(err, tc.want) || out != nil {
				t.Fatalf("Finalize = %v, %v; want %v", out, err, tc.want)
			}
		})
	}
	if _, err := bl.Finalize(ev, proof, s.pk); err != nil {
		t.Fatalf("the honest evaluation after the refusals: %v", err)
	}
}

func TestOpenRefusesAlteredRecords(t *testing.T) {
	t.Parallel()
	s := newTestServer(t)
	out := s.run(alice, []byte("hunter2"))
	p := Params{Version: 2, AEAD: ChaCha20Poly1305, KDF: testKDF}
	k := derive(t, out, p)
	nonce, ct, err := k.Seal(nil, []byte("bundle"))
	if err != nil {
		t.Fatal(err)
	}
	flip := func(b []byte, i int) []byte { c := bytes.Clone(b); c[i] ^= 1; return c }
	otherSalt := testKDF
	otherSalt.Salt = bytes.Repeat([]byte{8}, 16)
	otherPK := *out
	otherPK.PublicKey = newTestServer(t).pk
	for _, tc := range []struct {
		name      string
		keys      *Keys
		nonce, ct []byte
	}{
		{"a flipped ciphertext bit", k, nonce, flip(ct, 0)},
		{"a flipped tag bit", k, nonce, flip(ct, len(ct)-1)},
		{"another nonce", k, flip(nonce, 5), ct},
		{"another version", derive(t, out, Params{Version: 3, AEAD: ChaCha20Poly1305, KDF: testKDF}), nonce, ct},
		{"another AEAD", derive(t, out, Params{Version: 2, AEAD: AES256GCM, KDF: testKDF}), nonce, ct},
		{"another salt", derive(t, out, Params{Version: 2, AEAD: ChaCha20Poly1305, KDF: otherSalt}), nonce, ct},
		{"another OPRF public key", derive(t, &otherPK, p), nonce, ct},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got, err := tc.keys.Open(tc.nonce, tc.ct); !errors.Is(err, ErrDecrypt) || got != nil {
				t.Fatalf("Open = %q, %v; want ErrDecrypt", got, err)
			}
		})
	}
	// The keys themselves depend on the version and the public key.
	if bytes.Equal(derive(t, &otherPK, p).AuthKey(), k.AuthKey()) {
		t.Error("the auth key does not depend on the OPRF public key")
	}
	if bytes.Equal(derive(t, out, Params{Version: 3, AEAD: ChaCha20Poly1305, KDF: testKDF}).AuthKey(), k.AuthKey()) {
		t.Error("the auth key does not depend on the version")
	}
}

func TestInvalidInputs(t *testing.T) {
	t.Parallel()
	good := Params{Version: 1, AEAD: ChaCha20Poly1305, KDF: testKDF}
	out := &Output{Binding: alice, PublicKey: make([]byte, 32), Value: make([]byte, 64)}
	kdf := func(edit func(*argon2id.Params)) Params {
		p := good
		edit(&p.KDF)
		return p
	}
	for _, tc := range []struct {
		name string
		out  *Output
		p    Params
	}{
		{"version 0", out, Params{AEAD: ChaCha20Poly1305, KDF: testKDF}},
		{"AEAD unspecified", out, Params{Version: 1, KDF: testKDF}},
		{"AEAD 3", out, Params{Version: 1, AEAD: 3, KDF: testKDF}},
		{"time 0", out, kdf(func(k *argon2id.Params) { k.Time = 0 })},
		{"time 17", out, kdf(func(k *argon2id.Params) { k.Time = 17 })},
		{"memory under 8 MiB", out, kdf(func(k *argon2id.Params) { k.MemoryKiB = 8191 })},
		{"memory over 4 GiB", out, kdf(func(k *argon2id.Params) { k.MemoryKiB = 4<<20 + 1 })},
		{"threads 0", out, kdf(func(k *argon2id.Params) { k.Threads = 0 })},
		{"threads 65", out, kdf(func(k *argon2id.Params) { k.Threads = 65 })},
		{"salt of 15 bytes", out, kdf(func(k *argon2id.Params) { k.Salt = make([]byte, 15) })},
		{"salt of 65 bytes", out, kdf(func(k *argon2id.Params) { k.Salt = make([]byte, 65) })},
		{"no output", nil, good},
		{"short output", &Output{Binding: alice, PublicKey: make([]byte, 32), Value: make([]byte, 63)}, good},
		{"short public key", &Output{Binding: alice, PublicKey: make([]byte, 31), Value: make([]byte, 64)}, good},
		{"no slot", &Output{Binding: Binding{App: alice.App, Identity: alice.Identity}, PublicKey: make([]byte, 32), Value: make([]byte, 64)}, good},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if k, err := DeriveKeys(tc.out, tc.p); !errors.Is(err, ErrInvalid) || k != nil {
				t.Fatalf("DeriveKeys = %v, %v; want ErrInvalid", k, err)
			}
		})
	}
	for name, b := range map[string]Binding{
		"no app":      {Identity: alice.Identity, Slot: SlotPassword},
		"no identity": {App: alice.App, Slot: SlotPassword},
		"slot 0":      {App: alice.App, Identity: alice.Identity},
		"slot 3":      {App: alice.App, Identity: alice.Identity, Slot: 3},
		"long app":    {App: strings.Repeat("a", 256), Identity: alice.Identity, Slot: SlotPassword},
	} {
		if _, err := Blind(b, []byte("pw")); !errors.Is(err, ErrInvalid) {
			t.Errorf("Blind with %s: %v, want ErrInvalid", name, err)
		}
	}
	for _, secret := range [][]byte{nil, make([]byte, MaxSecretSize+1)} {
		if _, err := Blind(alice, secret); !errors.Is(err, ErrInvalid) {
			t.Errorf("Blind of a %d-byte secret: %v, want ErrInvalid", len(secret), err)
		}
	}
	k := derive(t, out, good)
	if _, _, err := k.Seal(nil, nil); !errors.Is(err, ErrInvalid) {
		t.Errorf("Seal of nothing: %v", err)
	}
	if _, _, err := k.Seal(nil, make([]byte, MaxBundleSize+1)); !errors.Is(err, ErrInvalid) {
		t.Errorf("Seal over 1 MiB: %v", err)
	}
	if _, err := k.Open(make([]byte, 11), make([]byte, 20)); !errors.Is(err, ErrInvalid) {
		t.Errorf("Open with an 11-byte nonce: %v", err)
	}
	if _, err := k.Open(make([]byte, 12), make([]byte, 16)); !errors.Is(err, ErrInvalid) {
		t.Errorf("Open of a bare tag: %v", err)
	}
}

func TestCheckPasswordCost(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		p    argon2id.Params
		weak bool
	}{
		{argon2id.Default, false},
		{argon2id.Params{Time: 1, MemoryKiB: 2 << 20}, false},
		{argon2id.Params{Time: 16, MemoryKiB: 12288}, false},
		{argon2id.Params{Time: 2, MemoryKiB: 64 * 1024}, true},
		{RecoveryArgon2id, true},
	} {
		if err := CheckPasswordCost(tc.p); errors.Is(err, ErrWeakParams) != tc.weak || (err != nil && !tc.weak) {
			t.Errorf("CheckPasswordCost(t=%d, m=%d) = %v; weak %v", tc.p.Time, tc.p.MemoryKiB, err, tc.weak)
		}
	}
}

func TestRecoveryKeyFormat(t *testing.T) {
	t.Parallel()
	k, err := NewRecoveryKey(nil)
	if err != nil {
		t.Fatal(err)
	}
	s := k.String()
	groups := strings.Split(s, "-")
	if len(s) != RecoveryKeyLen || len(groups) != 9 {
		t.Fatalf("recovery key %q: want nine groups of four", s)
	}
	for _, g := range groups {
		if len(g) != 4 || strings.ContainsAny(g, "ILOU") || strings.ToUpper(g) != g {
			t.Fatalf("group %q of %q", g, s)
		}
	}
	for _, variant := range []string{
		s,
		strings.ToLower(s),
		strings.ReplaceAll(s, "-", " "),
		strings.ReplaceAll(s, "-", ""),
		"  " + strings.ReplaceAll(strings.ToLower(s), "-", " - ") + "\n",
		strings.NewReplacer("0", "o", "1", "l").Replace(s),
		strings.NewReplacer("0", "O", "1", "I").Replace(s),
	} {
		got, err := ParseRecoveryKey(variant)
		if err != nil || got != k {
			t.Errorf("ParseRecoveryKey(%q) = %v, %v", variant, got, err)
		}
	}
}

// TestRecoveryKeyTyposAreCaught tries every single-character substitution and every
// swap of two adjacent different characters of fixed keys: the check group catches
// each one (a random one escapes with probability 2^-20).
func TestRecoveryKeyTyposAreCaught(t *testing.T) {
	t.Parallel()
	for seed := range 4 {
		var k RecoveryKey
		for i := range k {
			k[i] = byte(seed*37 + i*11)
		}
		chars := strings.ReplaceAll(k.String(), "-", "")
		tried := 0
		for i := range chars {
			for _, c := range recoveryAlphabet {
				if byte(c) == chars[i] {
					continue
				}
				typo := chars[:i] + string(c) + chars[i+1:]
				if _, err := ParseRecoveryKey(typo); !errors.Is(err, ErrRecoveryKey) {
					t.Fatalf("substitution at %d (%q): %v", i, typo, err)
				}
				tried++
			}
			if i+1 < len(chars) && chars[i] != chars[i+1] {
				swap := chars[:i] + string(chars[i+1]) + string(chars[i]) + chars[i+2:]
				if _, err := ParseRecoveryKey(swap); !errors.Is(err, ErrRecoveryKey) {
					t.Fatalf("swap at %d (%q): %v", i, swap, err)
				}
				tried++
			}
		}
		if tried < 36*31 {
			t.Fatalf("tried %d typos", tried)
		}
	}
	for name, s := range map[string]string{
		"empty":           "",
		"a group short":   "0000-0000-0000-0000-0000-0000-0000-0000",
		"a char too many": "0000-0000-0000-0000-0000-0000-0000-0000-00000",
		"U":               "U000-0000-0000-0000-0000-0000-0000-0000-0000",
		"punctuation":     "0000.0000-0000-0000-0000-0000-0000-0000-0000",
		"non-ASCII":       "Ö000-0000-0000-0000-0000-0000-0000-0000-0000",
	} {
		if _, err := ParseRecoveryKey(s); !errors.Is(err, ErrRecoveryKey) {
			t.Errorf("%s: %v, want ErrRecoveryKey", name, err)
		}
	}
}

func TestRecoveryKeyAsSecret(t *testing.T) {
	t.Parallel()
	s := newTestServer(t)
	k, err := NewRecoveryKey(nil)
	if err != nil {
		t.Fatal(err)
	}
	b := Binding{App: alice.App, Identity: alice.Identity, Slot: SlotRecovery}
	kdf, err := NewArgon2id(RecoveryArgon2id, nil)
	if err != nil {
		t.Fatal(err)
	}
	p := Params{Version: 1, AEAD: ChaCha20Poly1305, KDF: kdf}
	keys := derive(t, s.run(b, k[:]), p)
	nonce, ct, err := keys.Seal(nil, []byte("bundle"))
	if err != nil {
		t.Fatal(err)
	}
	parsed, err := ParseRecoveryKey(strings.ToLower(k.String()))
	if err != nil {
		t.Fatal(err)
	}
	if got, err := derive(t, s.run(b, parsed[:]), p).Open(nonce, ct); err != nil || string(got) != "bundle" {
		t.Fatalf("restore with the recovery key: %q, %v", got, err)
	}
}
