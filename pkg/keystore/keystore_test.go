package keystore

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/umbra-e2ee/umbra/pkg/argon2id"
	"github.com/umbra-e2ee/umbra/pkg/e2ee"
	envelopev1 "github.com/umbra-e2ee/umbra/proto/umbra/envelope/v1"
)

var (
	alice = "u_" + strings.Repeat("a", 32)
	bob   = "u_" + strings.Repeat("b", 32)
	when  = time.Date(2026, 11, 1, 12, 0, 0, 0, time.UTC)
)

// fastKDF keeps tests quick; TestKeystoreDefaultArgon2id covers the defaults.
var fastKDF = argon2id.Params{Time: 1, MemoryKiB: 64, Threads: 1}

var passphrase = []byte("correct horse battery staple")

// member is a key pair and its parsed card.
type member struct {
	kp   *e2ee.KeyPair
	card *e2ee.Card
}

// newMember derives the key pair number n of suite and makes its card, of identity:
// the same keys as pkg/e2ee's tests.
func newMember(t testing.TB, suite e2ee.Suite, identity string, n int) member {
	t.Helper()
	u32 := func(n uint32) []byte { return binary.BigEndian.AppendUint32(nil, n) }
	seed := append(sha([]byte("umbra test key"), u32(uint32(suite)), u32(uint32(n))), sha(u32(uint32(n)))...)
	kp, err := e2ee.DeriveKeyPair(suite, seed)
	if err != nil {
		t.Fatal(err)
	}
	content, sig, err := e2ee.NewCard(kp, identity, when, nil)
	if err != nil {
		t.Fatal(err)
	}
	card, err := e2ee.ParseCard(content, sig)
	if err != nil {
		t.Fatal(err)
	}
	return member{kp, card}
}

func sha(parts ...[]byte) []byte {
	h := sha256.New()
	for _, p := range parts {
		h.Write(p)
	}
	return h.Sum(nil)
}

func newTestKeystore(t *testing.T, opts Options) (*Keystore, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "keys", "keystore")
	if opts.Identity == "" && len(opts.KeyBundle) == 0 {
		opts.Identity = alice
	}
	if opts.Argon2id.Time == 0 && opts.Argon2id.MemoryKiB == 0 && opts.Argon2id.Threads == 0 {
		opts.Argon2id = fastKDF
	}
	ks, err := Create(path, opts)
	if err != nil {
		t.Fatal(err)
	}
	return ks, path
}

func checkMode0600(t *testing.T, path string) {
	t.Helper()
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o600 {
		t.Errorf("%s has mode %v; want 0600", path, st.Mode().Perm())
	}
}

func TestKeystoreRotationKeepsOldKeys(t *testing.T) {
	t.Parallel()
	ks, path := newTestKeystore(t, Options{Passphrase: passphrase})
	checkMode0600(t, path)
	if kp, id := ks.Current(); kp != nil || id != nil {
		t.Fatalf("a new keystore has a current key %x", id)
	}
	sender := newMember(t, e2ee.SuiteX25519, bob, 50)
	first := newMember(t, e2ee.SuiteHybrid, alice, 1)
	if err := ks.SetCurrent(first.kp, first.card.ID); err != nil {
		t.Fatal(err)
	}
	if err := ks.Save(); err != nil {
		t.Fatal(err)
	}
	old, err := e2ee.Encrypt(sender.kp, sender.card.ID, []*e2ee.Card{first.card}, []byte("before the rotation"), when)
	if err != nil {
		t.Fatal(err)
	}

	second := newMember(t, e2ee.SuiteX25519, alice, 2)
	if err := ks.SetCurrent(second.kp, second.card.ID); err != nil {
		t.Fatal(err)
	}
	if err := ks.Save(); err != nil {
		t.Fatal(err)
	}
	checkMode0600(t, path)
	if entries, _ := os.ReadDir(filepath.Dir(path)); len(entries) != 1 {
		t.Errorf("the keystore's directory holds %d files; want the keystore alone (no temporary files left)", len(entries))
	}
	recent, err := e2ee.Encrypt(sender.kp, sender.card.ID, []*e2ee.Card{second.card}, []byte("after the rotation"), when)
	if err != nil {
		t.Fatal(err)
	}

	reopened, err := Open(path, passphrase)
	if err != nil {
		t.Fatal(err)
	}
	if reopened.Identity() != alice {
		t.Errorf("identity %q; want %q", reopened.Identity(), alice)
	}
	kp, id := reopened.Current()
	if !bytes.Equal(id, second.card.ID) || !kp.Equal(second.kp) {
		t.Errorf("current card %x; want %x", id, second.card.ID)
	}
	for _, m := range []struct {
		data []byte
		want string
	}{{old, "before the rotation"}, {recent, "after the rotation"}} {
		got, err := e2ee.Decrypt(m.data, reopened.KeyFor, sender.card)
		if err != nil || string(got) != m.want {
			t.Errorf("Decrypt = %q, %v; want %q", got, err, m.want)
		}
	}
	if reopened.KeyFor(sender.card.ID) != nil {
		t.Error("KeyFor returns a key for a card that is not ours")
	}

	// A superseded key does not become current again; the current one may be set again.
	if err := reopened.SetCurrent(first.kp, first.card.ID); !errors.Is(err, e2ee.ErrMalformed) {
		t.Errorf("SetCurrent(superseded key) = %v; want %v", err, e2ee.ErrMalformed)
	}
	if err := reopened.SetCurrent(second.kp, second.card.ID); err != nil {
		t.Errorf("SetCurrent(current key) = %v", err)
	}
	if err := reopened.SetCurrent(second.kp, second.card.ID[:5]); !errors.Is(err, e2ee.ErrMalformed) {
		t.Errorf("SetCurrent(short card id) = %v", err)
	}
}

func TestKeystoreBundleRecordsTimes(t *testing.T) {
	t.Parallel()
	ks, _ := newTestKeystore(t, Options{NoPassphrase: true})
	clock := when
	ks.now = func() time.Time { return clock }
	a, b := newMember(t, e2ee.SuiteX25519, alice, 1), newMember(t, e2ee.SuiteX25519, alice, 2)
	ks.SetCurrent(a.kp, a.card.ID)
	clock = when.Add(time.Hour)
	ks.SetCurrent(b.kp, b.card.ID)
	raw, err := ks.KeyBundle()
	if err != nil {
		t.Fatal(err)
	}
	var m envelopev1.KeyBundle
	if err := e2ee.UnmarshalStrict("bundle", raw, &m); err != nil {
		t.Fatal(err)
	}
	k := m.GetKeys()
	if len(k) != 2 || !bytes.Equal(m.GetCurrentCardId(), b.card.ID) ||
		k[0].GetAddedAtUnixSeconds() != when.Unix() || k[0].GetSupersededAtUnixSeconds() != clock.Unix() ||
		k[1].GetAddedAtUnixSeconds() != clock.Unix() || k[1].GetSupersededAtUnixSeconds() != 0 ||
		!bytes.Equal(k[0].GetSigningSeed(), a.kp.SigningSeed()) || k[1].GetSuite() != e2ee.SuiteX25519 {
		t.Errorf("bundle = %v", &m)
	}
}

func TestKeystoreRestoreFromBundle(t *testing.T) {
	t.Parallel()
	ks, _ := newTestKeystore(t, Options{Passphrase: passphrase})
	a, b := newMember(t, e2ee.SuiteHybrid, alice, 1), newMember(t, e2ee.SuiteX25519, alice, 2)
	ks.SetCurrent(a.kp, a.card.ID)
	ks.SetCurrent(b.kp, b.card.ID)
	bundle, err := ks.KeyBundle()
	if err != nil {
		t.Fatal(err)
	}
	restored, path := newTestKeystore(t, Options{KeyBundle: bundle, Passphrase: []byte("another passphrase")})
	if restored.Identity() != alice || !restored.KeyFor(a.card.ID).Equal(a.kp) || !restored.KeyFor(b.card.ID).Equal(b.kp) {
		t.Fatal("the restored keystore lacks keys of the bundle")
	}
	if _, id := restored.Current(); !bytes.Equal(id, b.card.ID) {
		t.Errorf("restored current card %x; want %x", id, b.card.ID)
	}
	if again, err := Open(path, []byte("another passphrase")); err != nil || again.KeyFor(a.card.ID) == nil {
		t.Errorf("reopening the restored keystore: %v", err)
	}
	if _, err := Create(filepath.Join(t.TempDir(), "ks"), Options{Identity: bob, KeyBundle: bundle, NoPassphrase: true}); !errors.Is(err, e2ee.ErrMalformed) {
		t.Errorf("restoring alice's bundle as bob's: %v", err)
	}
}

func TestKeystoreUnencryptedOnlyWhenAsked(t *testing.T) {
	t.Parallel()
	m := newMember(t, e2ee.SuiteX25519, alice, 1)
	seedIn := func(path string) bool {
		data, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		return bytes.Contains(data, m.kp.SigningSeed())
	}

	encrypted, encPath := newTestKeystore(t, Options{Passphrase: passphrase})
	encrypted.SetCurrent(m.kp, m.card.ID)
	if err := encrypted.Save(); err != nil {
		t.Fatal(err)
	}
	if seedIn(encPath) {
		t.Error("the encrypted keystore file holds the signing seed in the clear")
	}

	plain, plainPath := newTestKeystore(t, Options{NoPassphrase: true})
	plain.SetCurrent(m.kp, m.card.ID)
	if err := plain.Save(); err != nil {
		t.Fatal(err)
	}
	checkMode0600(t, plainPath)
	if !seedIn(plainPath) {
		t.Error("the unencrypted keystore does not hold the seed as is: is it encrypted after all?")
	}
	if ks, err := Open(plainPath, nil); err != nil || ks.KeyFor(m.card.ID) == nil {
		t.Errorf("Open(unencrypted, no passphrase) = %v", err)
	}

	dir := t.TempDir()
	for _, tc := range []struct {
		name string
		opts Options
	}{
		{"no passphrase and no NoPassphrase", Options{Identity: alice}},
		{"empty passphrase", Options{Identity: alice, Passphrase: []byte{}}},
		{"a passphrase and NoPassphrase", Options{Identity: alice, Passphrase: passphrase, NoPassphrase: true}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(dir, tc.name)
			if _, err := Create(path, tc.opts); !errors.Is(err, e2ee.ErrPassphrase) {
				t.Fatalf("Create = %v; want %v", err, e2ee.ErrPassphrase)
			}
			if _, err := os.Stat(path); !errors.Is(err, fs.ErrNotExist) {
				t.Errorf("a refused keystore was written: %v", err)
			}
		})
	}
}

func TestKeystoreRefusals(t *testing.T) {
	t.Parallel()
	ks, path := newTestKeystore(t, Options{Passphrase: passphrase})
	m := newMember(t, e2ee.SuiteX25519, alice, 1)
	ks.SetCurrent(m.kp, m.card.ID)
	if err := ks.Save(); err != nil {
		t.Fatal(err)
	}
	good, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	_, plainPath := newTestKeystore(t, Options{NoPassphrase: true})

	// The file: magic, then KeystoreFile{header, sealed bundle}.
	header, sealedBundle, err := e2ee.ParseBytesPair("file", good[len(keystoreMagic):])
	if err != nil {
		t.Fatal(err)
	}
	var h envelopev1.KeystoreHeader
	if err := e2ee.UnmarshalStrict("header", header, &h); err != nil {
		t.Fatal(err)
	}
	withHeader := func(edit func(h *envelopev1.KeystoreHeader)) []byte {
		var c envelopev1.KeystoreHeader
		e2ee.UnmarshalStrict("header", header, &c)
		edit(&c)
		hb, _ := e2ee.Marshal(&c)
		f, _ := e2ee.Marshal(&envelopev1.KeystoreFile{Header: hb, KeyBundle: sealedBundle})
		return append([]byte(keystoreMagic), f...)
	}
	flip := func(i int) []byte {
		b := bytes.Clone(good)
		b[i] ^= 1
		return b
	}

	dir := t.TempDir()
	cases := []struct {
		name       string
		file       []byte // written to a new file, unless path is set
		path       string
		passphrase []byte
		kind       error
	}{
		{"wrong passphrase", good, "", []byte("incorrect horse"), e2ee.ErrPassphrase},
		{"no passphrase for an encrypted keystore", good, "", nil, e2ee.ErrPassphrase},
		{"a passphrase for an unencrypted keystore", nil, plainPath, passphrase, e2ee.ErrPassphrase},
		{"ciphertext altered", flip(len(good) - 20), "", passphrase, e2ee.ErrDecrypt},
		{"tag altered", flip(len(good) - 1), "", passphrase, e2ee.ErrDecrypt},
		{"nonce altered", withHeader(func(h *envelopev1.KeystoreHeader) { h.Nonce[0] ^= 1 }), "", passphrase, e2ee.ErrDecrypt},
		{"salt altered", withHeader(func(h *envelopev1.KeystoreHeader) { h.Argon2Id.Salt[0] ^= 1 }), "", passphrase, e2ee.ErrPassphrase},
		{"Argon2id time altered", withHeader(func(h *envelopev1.KeystoreHeader) { h.Argon2Id.Time = 2 }), "", passphrase, e2ee.ErrPassphrase},
		{"Argon2id memory over the bound", withHeader(func(h *envelopev1.KeystoreHeader) { h.Argon2Id.MemoryKib = 5 << 20 }), "", passphrase, e2ee.ErrMalformed},
		{"Argon2id threads over the bound", withHeader(func(h *envelopev1.KeystoreHeader) { h.Argon2Id.Threads = 257 }), "", passphrase, e2ee.ErrMalformed},
		{"short salt", withHeader(func(h *envelopev1.KeystoreHeader) { h.Argon2Id.Salt = h.Argon2Id.Salt[:8] }), "", passphrase, e2ee.ErrMalformed},
		{"no Argon2id parameters", withHeader(func(h *envelopev1.KeystoreHeader) { h.Argon2Id = nil }), "", passphrase, e2ee.ErrMalformed},
		{"key check altered", withHeader(func(h *envelopev1.KeystoreHeader) { h.KeyCheck[0] ^= 1 }), "", passphrase, e2ee.ErrPassphrase},
		{"marked unencrypted", withHeader(func(h *envelopev1.KeystoreHeader) {
			h.Protection, h.Argon2Id, h.KeyCheck, h.Nonce = envelopev1.KeystoreProtection_KEYSTORE_PROTECTION_NONE, nil, nil, nil
		}), "", nil, e2ee.ErrMalformed},
		{"unknown protection", withHeader(func(h *envelopev1.KeystoreHeader) { h.Protection = 9 }), "", passphrase, e2ee.ErrUnknownSuite},
		{"version 2", withHeader(func(h *envelopev1.KeystoreHeader) { h.Version = 2 }), "", passphrase, e2ee.ErrMalformed},
		{"truncated", good[:len(good)-7], "", passphrase, e2ee.ErrMalformed},
		{"magic only", []byte(keystoreMagic), "", passphrase, e2ee.ErrMalformed},
		{"not a keystore", []byte("{\"keys\": []}"), "", passphrase, e2ee.ErrMalformed},
		{"empty file", []byte{}, "", passphrase, e2ee.ErrMalformed},
		{"over the size limit", make([]byte, MaxKeystoreFileSize+1), "", passphrase, e2ee.ErrTooLarge},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			path := tc.path
			if path == "" {
				path = filepath.Join(dir, tc.name)
				if err := os.WriteFile(path, tc.file, 0o600); err != nil {
					t.Fatal(err)
				}
			}
			ks, err := Open(path, tc.passphrase)
			if !errors.Is(err, tc.kind) || ks != nil {
				t.Fatalf("Open = %v; want %v", err, tc.kind)
			}
		})
	}

	t.Run("missing file", func(t *testing.T) {
		if _, err := Open(filepath.Join(dir, "none"), passphrase); !errors.Is(err, fs.ErrNotExist) {
			t.Fatalf("Open = %v; want %v", err, fs.ErrNotExist)
		}
	})
	t.Run("create over an existing file", func(t *testing.T) {
		if _, err := Create(path, Options{Identity: alice, Passphrase: passphrase, Argon2id: fastKDF}); !errors.Is(err, fs.ErrExist) {
			t.Fatalf("Create = %v; want %v", err, fs.ErrExist)
		}
		if after, _ := os.ReadFile(path); !bytes.Equal(after, good) {
			t.Error("the existing keystore was changed")
		}
	})
	t.Run("bad identity", func(t *testing.T) {
		if _, err := Create(filepath.Join(dir, "bad-identity"), Options{Identity: "alice", NoPassphrase: true}); !errors.Is(err, e2ee.ErrMalformed) {
			t.Fatalf("Create = %v; want %v", err, e2ee.ErrMalformed)
		}
	})
	t.Run("Argon2id parameters out of bounds", func(t *testing.T) {
		_, err := Create(filepath.Join(dir, "bad-kdf"), Options{Identity: alice, Passphrase: passphrase, Argon2id: argon2id.Params{Time: 17, MemoryKiB: 64, Threads: 1}})
		if !errors.Is(err, e2ee.ErrMalformed) {
			t.Fatalf("Create = %v; want %v", err, e2ee.ErrMalformed)
		}
	})
	t.Run("remove", func(t *testing.T) {
		if err := Remove(path); err != nil {
			t.Fatal(err)
		}
		if _, err := Open(path, passphrase); !errors.Is(err, fs.ErrNotExist) {
			t.Fatalf("Open after Remove = %v", err)
		}
		if err := Remove(path); !errors.Is(err, fs.ErrNotExist) {
			t.Fatalf("Remove twice = %v", err)
		}
	})
}

func TestKeyBundleRefusals(t *testing.T) {
	t.Parallel()
	m := newMember(t, e2ee.SuiteX25519, alice, 1)
	kem, _ := m.kp.KEMPrivateKey()
	key := func() *envelopev1.StoredKey {
		return &envelopev1.StoredKey{CardId: m.card.ID, Suite: e2ee.SuiteX25519, SigningSeed: m.kp.SigningSeed(), KemPrivateKey: kem, AddedAtUnixSeconds: when.Unix()}
	}
	base := func() *envelopev1.KeyBundle {
		return &envelopev1.KeyBundle{Version: 1, Identity: alice, CurrentCardId: m.card.ID, Keys: []*envelopev1.StoredKey{key()}}
	}
	cases := []struct {
		name string
		edit func(b *envelopev1.KeyBundle)
		kind error
	}{
		{"version 2", func(b *envelopev1.KeyBundle) { b.Version = 2 }, e2ee.ErrMalformed},
		{"bad identity", func(b *envelopev1.KeyBundle) { b.Identity = "u_x" }, e2ee.ErrMalformed},
		{"a card twice", func(b *envelopev1.KeyBundle) { b.Keys = append(b.Keys, key()) }, e2ee.ErrMalformed},
		{"current card without a key", func(b *envelopev1.KeyBundle) { b.CurrentCardId = sha([]byte("x")) }, e2ee.ErrMalformed},
		{"keys but no current card", func(b *envelopev1.KeyBundle) { b.CurrentCardId = nil }, e2ee.ErrMalformed},
		{"current key marked superseded", func(b *envelopev1.KeyBundle) { b.Keys[0].SupersededAtUnixSeconds = 5 }, e2ee.ErrMalformed},
		{"short card id", func(b *envelopev1.KeyBundle) { b.Keys[0].CardId = b.Keys[0].CardId[:4] }, e2ee.ErrMalformed},
		{"short signing seed", func(b *envelopev1.KeyBundle) { b.Keys[0].SigningSeed = b.Keys[0].SigningSeed[:31] }, e2ee.ErrMalformed},
		{"short KEM key", func(b *envelopev1.KeyBundle) { b.Keys[0].KemPrivateKey = b.Keys[0].KemPrivateKey[:31] }, e2ee.ErrMalformed},
		{"unknown suite", func(b *envelopev1.KeyBundle) { b.Keys[0].Suite = 8 }, e2ee.ErrUnknownSuite},
	}
	good, _ := e2ee.Marshal(base())
	if _, err := parseKeyBundle(good); err != nil {
		t.Fatalf("the unaltered bundle: %v", err)
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			b := base()
			tc.edit(b)
			raw, _ := e2ee.Marshal(b)
			if _, err := parseKeyBundle(raw); !errors.Is(err, tc.kind) {
				t.Fatalf("parseKeyBundle = %v; want %v", err, tc.kind)
			}
		})
	}
	if _, err := parseKeyBundle(append(bytes.Clone(good), 0x50, 1)); !errors.Is(err, e2ee.ErrMalformed) {
		t.Errorf("bundle with an unknown field: %v", err)
	}
}

func TestKeystoreConcurrentUse(t *testing.T) {
	t.Parallel()
	ks, path := newTestKeystore(t, Options{NoPassphrase: true})
	members := make([]member, 8)
	for i := range members {
		members[i] = newMember(t, e2ee.SuiteX25519, alice, i+1)
	}
	var wg sync.WaitGroup
	for _, m := range members {
		wg.Go(func() {
			if err := ks.SetCurrent(m.kp, m.card.ID); err != nil {
				t.Error(err)
			}
			if err := ks.Save(); err != nil {
				t.Error(err)
			}
		})
		wg.Go(func() { ks.KeyFor(m.card.ID); ks.Current() })
	}
	wg.Wait()
	reopened, err := Open(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range members {
		if !reopened.KeyFor(m.card.ID).Equal(m.kp) {
			t.Errorf("key of card %x lost", m.card.ID)
		}
	}
}

// TestKeystoreDefaultArgon2id creates and opens a keystore with the default Argon2id
// cost (64 MiB), as every user will.
func TestKeystoreDefaultArgon2id(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "keystore")
	start := time.Now()
	if _, err := Create(path, Options{Identity: alice, Passphrase: passphrase}); err != nil {
		t.Fatal(err)
	}
	ks, err := Open(path, passphrase)
	if err != nil {
		t.Fatal(err)
	}
	d := argon2id.Default
	if ks.kdf.Time != d.Time || ks.kdf.MemoryKiB != d.MemoryKiB || ks.kdf.Threads != d.Threads || len(ks.kdf.Salt) != argon2id.SaltSize {
		t.Errorf("Argon2id parameters %+v; want the defaults %+v with a %d-byte salt", ks.kdf, d, argon2id.SaltSize)
	}
	t.Logf("create and open with t=%d m=%d KiB p=%d: %v", d.Time, d.MemoryKiB, d.Threads, time.Since(start))
}
