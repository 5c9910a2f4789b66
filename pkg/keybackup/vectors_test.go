package keybackup

import (
	"bytes"
	"crypto/sha256"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"testing/cryptotest"
	"time"

	"github.com/cloudflare/circl/oprf"
	"google.golang.org/protobuf/proto"

	"github.com/umbra-e2ee/umbra/pkg/argon2id"
	"github.com/umbra-e2ee/umbra/pkg/e2ee"
	"github.com/umbra-e2ee/umbra/pkg/internal/vectortest"
	"github.com/umbra-e2ee/umbra/pkg/keystore"
	envelopev1 "github.com/umbra-e2ee/umbra/proto/umbra/envelope/v1"
)

// The test vectors of docs/wire-format.md, "Key backup". They come from a fixed OPRF
// key, fixed blinds, salts and nonces, and (for the DLEQ proofs, which are randomised)
// the deterministic randomness of cryptotest.SetGlobalRandom. TestVectors checks them
// three ways: a client finalises and decrypts with nothing but the values they state;
// generating them again gives the same bytes; and the document shows exactly these.
//
// After an intended change of the format, regenerate both files with
//
//	go test ./pkg/keybackup -run '^TestVectors$' -update-vectors
//
// and review the diff.
const (
	vectorsFile      = "testdata/vectors.json"
	vectorRandomSeed = 20261129
	vectorServerInfo = "umbra key backup test vector"
)

type vectorFile struct {
	Comment          []string       `json:"comment"`
	ServerSeed       vectortest.Hex `json:"oprf_server_seed"`
	ServerInfo       string         `json:"oprf_server_info"`
	ServerPrivateKey vectortest.Hex `json:"oprf_server_private_key"`
	ServerPublicKey  vectortest.Hex `json:"oprf_server_public_key"`
	Backups          []backupVector `json:"backups"`
}

type backupVector struct {
	Name             string         `json:"name"`
	App              string         `json:"app"`
	Identity         string         `json:"identity"`
	Slot             uint32         `json:"slot"`
	Secret           vectortest.Hex `json:"secret"`
	RecoveryKey      string         `json:"recovery_key,omitempty"`
	OPRFInput        vectortest.Hex `json:"oprf_input"`
	Blind            vectortest.Hex `json:"blind"`
	BlindedElement   vectortest.Hex `json:"blinded_element"`
	EvaluatedElement vectortest.Hex `json:"evaluated_element"`
	Proof            vectortest.Hex `json:"proof"`
	OPRFOutput       vectortest.Hex `json:"oprf_output"`
	Version          uint64         `json:"version"`
	AEAD             uint32         `json:"aead"`
	Time             uint32         `json:"argon2id_time"`
	MemoryKiB        uint32         `json:"argon2id_memory_kib"`
	Threads          uint32         `json:"argon2id_threads"`
	Salt             vectortest.Hex `json:"argon2id_salt"`
	Stretched        vectortest.Hex `json:"stretched"`
	EncryptionInfo   vectortest.Hex `json:"encryption_key_info"`
	EncryptionKey    vectortest.Hex `json:"encryption_key"`
	AuthInfo         vectortest.Hex `json:"auth_key_info"`
	AuthKey          vectortest.Hex `json:"auth_key"`
	AuthKeyHash      vectortest.Hex `json:"auth_key_hash"`
	BundleContents   string         `json:"key_bundle_contents"`
	Bundle           vectortest.Hex `json:"key_bundle"`
	Nonce            vectortest.Hex `json:"nonce"`
	AssociatedData   vectortest.Hex `json:"associated_data"`
	Ciphertext       vectortest.Hex `json:"ciphertext"`
}

// vectorServer is the OPRF key of the vectors: DeriveKey(ristretto255-SHA512,
// verifiable mode, seed, info).
func vectorServer(t *testing.T) (seed []byte, key *oprf.PrivateKey) {
	seed = bytes.Repeat([]byte{0x5b}, 32)
	key, err := oprf.DeriveKey(suite, oprf.VerifiableMode, seed, []byte(vectorServerInfo))
	if err != nil {
		t.Fatal(err)
	}
	return seed, key
}

// vectorBundles are the plaintexts of the vectors: real KeyBundles (docs/wire-format.md
// 7.1) of alice's key pairs and cards of the envelope vectors (section 9), so that a
// client checks the whole restore, down to the keys it would install. The first holds
// key pair alice-1 alone; the second alice-1, superseded by alice-2 when alice-2's card
// was created, and alice-2, current.
func vectorBundles(t *testing.T) (alone, rotated []byte) {
	alice := "u_" + strings.Repeat("a", 32)
	created := time.Date(2026, 11, 1, 12, 0, 0, 0, time.UTC)
	key := func(suite e2ee.Suite, from byte, at time.Time, previous []byte) (*envelopev1.StoredKey, []byte) {
		kp, err := e2ee.DeriveKeyPair(suite, vectortest.Counting(from, 64))
		if err != nil {
			t.Fatal(err)
		}
		content, _, err := e2ee.NewCard(kp, alice, at, previous)
		if err != nil {
			t.Fatal(err)
		}
		kem, err := kp.KEMPrivateKey()
		if err != nil {
			t.Fatal(err)
		}
		id := e2ee.CardID(content)
		return &envelopev1.StoredKey{CardId: id, Suite: suite, SigningSeed: kp.SigningSeed(), KemPrivateKey: kem, AddedAtUnixSeconds: at.Unix()}, id
	}
	marshal := func(b *envelopev1.KeyBundle) []byte {
		out, err := proto.MarshalOptions{Deterministic: true}.Marshal(b)
		if err != nil {
			t.Fatal(err)
		}
		return out
	}
	k1, id1 := key(e2ee.SuiteHybrid, 0x00, created, nil)
	alone = marshal(&envelopev1.KeyBundle{Version: 1, Identity: alice, CurrentCardId: id1, Keys: []*envelopev1.StoredKey{k1}})
	k2, id2 := key(e2ee.SuiteX25519, 0x40, created.Add(24*time.Hour), id1)
	k1 = proto.Clone(k1).(*envelopev1.StoredKey)
	k1.SupersededAtUnixSeconds = k2.GetAddedAtUnixSeconds()
	rotated = marshal(&envelopev1.KeyBundle{Version: 1, Identity: alice, CurrentCardId: id2, Keys: []*envelopev1.StoredKey{k1, k2}})
	return alone, rotated
}

func generateVectors(t *testing.T) *vectorFile {
	cryptotest.SetGlobalRandom(t, vectorRandomSeed)
	seed, key := vectorServer(t)
	priv, err := key.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	pub, err := key.Public().MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	srv := &testServer{t: t, srv: oprf.NewVerifiableServer(suite, key), pk: pub}
	v := &vectorFile{
		Comment: []string{
			"Test vectors of docs/wire-format.md, Key backup: all byte strings are hex.",
			"The OPRF key is RFC 9497 DeriveKeyPair(ristretto255-SHA512, verifiable mode, seed, info); blinds, salts and nonces are fixed.",
			"The DLEQ proofs are randomised: a client checks them, it cannot reproduce them.",
		},
		ServerSeed: seed, ServerInfo: vectorServerInfo, ServerPrivateKey: priv, ServerPublicKey: pub,
	}
	app, id := "app_"+strings.Repeat("a", 26), "u_"+strings.Repeat("a", 32)
	var rk RecoveryKey
	copy(rk[:], vectortest.Counting(0x10, RecoveryKeySize))
	alone, rotated := vectorBundles(t)
	for _, c := range []struct {
		name      string
		slot      Slot
		secret    []byte
		recovery  string
		blind     []byte
		version   uint64
		aead      AEAD
		kdf       argon2id.Params
		contents  string
		bundle    []byte
		nonceFrom byte
	}{
		// The password slot's cost is the SDK's (argon2id.Default), which is the floor a
		// client accepts (MinPasswordCost); the recovery slot's is RecoveryArgon2id.
		{"password slot, ChaCha20-Poly1305", SlotPassword, []byte("correct horse battery staple"), "", vectortest.Counting(0x01, 31),
			1, ChaCha20Poly1305, argon2id.Params{Time: 3, MemoryKiB: 65536, Threads: 4, Salt: vectortest.Counting(0x30, 32)},
			"the KeyBundle of alice holding key pair alice-1 (section 9), current", alone, 0xa0},
		{"recovery slot, AES-256-GCM", SlotRecovery, rk[:], rk.String(), vectortest.Counting(0x41, 31),
			4, AES256GCM, argon2id.Params{Time: 1, MemoryKiB: 8192, Threads: 1, Salt: vectortest.Counting(0x50, 16)},
			"the KeyBundle of alice holding key pair alice-1, superseded at 1793620800, and alice-2 (section 9), current", rotated, 0xc0},
	} {
		b := Binding{App: app, Identity: id, Slot: c.slot}
		scalar := suite.Group().NewScalar()
		blindBytes := append(c.blind, 0) // little-endian, so well below the group order
		if err := scalar.UnmarshalBinary(blindBytes); err != nil {
			t.Fatal(err)
		}
		bl, err := blind(b, c.secret, scalar)
		if err != nil {
			t.Fatal(err)
		}
		ev, proof := srv.evaluate(bl.Element())
		out, err := bl.Finalize(ev, proof, pub)
		if err != nil {
			t.Fatal(err)
		}
		input, _ := OPRFInput(b, c.secret)
		p := Params{Version: c.version, AEAD: c.aead, KDF: c.kdf}
		stretched, err := Stretch(out, c.kdf)
		if err != nil {
			t.Fatal(err)
		}
		keys, err := deriveFromStretched(out, p, stretched)
		if err != nil {
			t.Fatal(err)
		}
		ctx := keyContext(b, c.version, pub)
		nonce, ct, err := keys.Seal(bytes.NewReader(vectortest.Counting(c.nonceFrom, NonceSize)), c.bundle)
		if err != nil {
			t.Fatal(err)
		}
		v.Backups = append(v.Backups, backupVector{
			Name: c.name, App: app, Identity: id, Slot: uint32(c.slot), Secret: c.secret, RecoveryKey: c.recovery,
			OPRFInput: input, Blind: blindBytes, BlindedElement: bl.Element(), EvaluatedElement: ev, Proof: proof, OPRFOutput: out.Value,
			Version: c.version, AEAD: uint32(c.aead), Time: c.kdf.Time, MemoryKiB: c.kdf.MemoryKiB, Threads: c.kdf.Threads, Salt: c.kdf.Salt,
			Stretched:      stretched,
			EncryptionInfo: append(labelled(LabelEncryptionKey), ctx...), EncryptionKey: keys.EncryptionKey(),
			AuthInfo: append(labelled(LabelAuthKey), ctx...), AuthKey: keys.AuthKey(), AuthKeyHash: keys.AuthKeyHash(),
			BundleContents: c.contents, Bundle: c.bundle, Nonce: nonce, AssociatedData: keys.AssociatedData(), Ciphertext: ct,
		})
	}
	return v
}

// checkVector restores a vector as a client would, from its stated values only.
func checkVector(t *testing.T, pub []byte, v backupVector) {
	b := Binding{App: v.App, Identity: v.Identity, Slot: Slot(v.Slot)}
	secret := []byte(v.Secret)
	if v.RecoveryKey != "" {
		rk, err := ParseRecoveryKey(v.RecoveryKey)
		if err != nil || !bytes.Equal(rk[:], v.Secret) {
			t.Fatalf("%s: recovery key %q parses to %x, %v", v.Name, v.RecoveryKey, rk, err)
		}
		if rk.String() != v.RecoveryKey {
			t.Fatalf("%s: recovery key formats as %q", v.Name, rk.String())
		}
	}
	if input, err := OPRFInput(b, secret); err != nil || !bytes.Equal(input, v.OPRFInput) {
		t.Fatalf("%s: OPRF input %x, %v", v.Name, input, err)
	}
	scalar := suite.Group().NewScalar()
	if err := scalar.UnmarshalBinary(v.Blind); err != nil {
		t.Fatal(err)
	}
	bl, err := blind(b, secret, scalar)
	if err != nil || !bytes.Equal(bl.Element(), v.BlindedElement) {
		t.Fatalf("%s: blinded element %x, %v", v.Name, bl.Element(), err)
	}
	out, err := bl.Finalize(v.EvaluatedElement, v.Proof, pub)
	if err != nil || !bytes.Equal(out.Value, v.OPRFOutput) {
		t.Fatalf("%s: OPRF output %x, %v", v.Name, out.Value, err)
	}
	p := Params{Version: v.Version, AEAD: AEAD(v.AEAD), KDF: argon2id.Params{Time: v.Time, MemoryKiB: v.MemoryKiB, Threads: v.Threads, Salt: v.Salt}}
	keys, err := DeriveKeys(out, p)
	if err != nil {
		t.Fatal(err)
	}
	h := sha256.Sum256(v.AuthKey)
	switch {
	case !bytes.Equal(keys.EncryptionKey(), v.EncryptionKey):
		t.Fatalf("%s: encryption key %x", v.Name, keys.EncryptionKey())
	case !bytes.Equal(keys.AuthKey(), v.AuthKey) || !bytes.Equal(h[:], v.AuthKeyHash):
		t.Fatalf("%s: auth key %x", v.Name, keys.AuthKey())
	case !bytes.Equal(keys.AssociatedData(), v.AssociatedData):
		t.Fatalf("%s: associated data %x", v.Name, keys.AssociatedData())
	}
	bundle, err := keys.Open(v.Nonce, v.Ciphertext)
	if err != nil || !bytes.Equal(bundle, v.Bundle) {
		t.Fatalf("%s: Open = %x, %v", v.Name, bundle, err)
	}
	// The plaintext is a KeyBundle a client installs (7.4 step 4): a keystore takes it,
	// and writes back exactly these bytes.
	ks, err := keystore.Create(filepath.Join(t.TempDir(), "keystore"), keystore.Options{NoPassphrase: true, KeyBundle: bundle})
	if err != nil {
		t.Fatalf("%s: the key bundle does not load into a keystore: %v", v.Name, err)
	}
	if again, err := ks.KeyBundle(); err != nil || !bytes.Equal(again, bundle) {
		t.Fatalf("%s: the keystore writes the bundle back as %x, %v", v.Name, again, err)
	}
	// A client restores a password record only at or above the cost floor (10.5).
	if Slot(v.Slot) == SlotPassword {
		if err := CheckPasswordCost(p.KDF); err != nil {
			t.Fatalf("%s: %v", v.Name, err)
		}
	}
}

func TestVectors(t *testing.T) {
	vectortest.Check(t, vectortest.Set[vectorFile]{
		File:     vectorsFile,
		Section:  "KEY BACKUP TEST VECTORS",
		Generate: generateVectors,
		Verify:   verifyVectors,
		Render:   renderVectors,
		Changed:  "the key backup format changed",
	})
}

// verifyVectors checks that a client with nothing but the stated values restores
// every vector.
func verifyVectors(t *testing.T, v *vectorFile) {
	_, key := vectorServer(t)
	if pub, _ := key.Public().MarshalBinary(); !bytes.Equal(pub, v.ServerPublicKey) {
		t.Fatalf("DeriveKey gives public key %x; the vectors state %x", pub, v.ServerPublicKey)
	}
	for _, b := range v.Backups {
		checkVector(t, v.ServerPublicKey, b)
	}
}

// renderVectors writes the vectors as the document shows them.
func renderVectors(v *vectorFile) string {
	var b vectortest.Doc
	b.WriteString("\nThe same values are in `pkg/keybackup/testdata/vectors.json`. Byte strings are hex, wrapped\nat 32 bytes per line.\n\n")
	b.WriteString("OPRF key (both vectors): `DeriveKeyPair(seed, info)` of RFC 9497 §3.2.1 with\n")
	fmt.Fprintf(&b, "seed = 32 bytes `5b` and info = %q.\n\n", v.ServerInfo)
	b.WriteString("    private key skS\n")
	b.Hex("      ", v.ServerPrivateKey)
	b.WriteString("    public key pkS\n")
	b.Hex("      ", v.ServerPublicKey)
	for _, bv := range v.Backups {
		fmt.Fprintf(&b, "\n#### Vector: %s\n\n", bv.Name)
		fmt.Fprintf(&b, "app = `%s`, identity = `%s`, slot = %d, version = %d, aead = %d,\n", bv.App, bv.Identity, bv.Slot, bv.Version, bv.AEAD)
		fmt.Fprintf(&b, "Argon2id t = %d, m = %d KiB, p = %d.", bv.Time, bv.MemoryKiB, bv.Threads)
		if bv.RecoveryKey != "" {
			fmt.Fprintf(&b, " Recovery key `%s`.", bv.RecoveryKey)
		}
		b.WriteString("\n\n")
		for _, f := range []struct {
			name string
			val  []byte
		}{
			{"secret", bv.Secret}, {"OPRF input", bv.OPRFInput}, {"blind (scalar, little-endian)", bv.Blind},
			{"blinded element", bv.BlindedElement}, {"evaluated element", bv.EvaluatedElement}, {"proof (c ‖ s)", bv.Proof},
			{"OPRF output", bv.OPRFOutput}, {"Argon2id salt", bv.Salt}, {"stretched", bv.Stretched},
			{"encryption key info", bv.EncryptionInfo}, {"encryption key", bv.EncryptionKey},
			{"auth key info", bv.AuthInfo}, {"auth key", bv.AuthKey}, {"auth key hash", bv.AuthKeyHash},
			{"key bundle (plaintext: " + bv.BundleContents + ")", bv.Bundle}, {"nonce", bv.Nonce}, {"associated data", bv.AssociatedData},
			{"ciphertext (with tag)", bv.Ciphertext},
		} {
			fmt.Fprintf(&b, "    %s\n", f.name)
			b.Hex("      ", f.val)
		}
	}
	b.WriteString("\n")
	return b.String()
}
