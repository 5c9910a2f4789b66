package e2ee

import (
	"bytes"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	envelopev1 "github.com/umbra-e2ee/umbra/proto/umbra/envelope/v1"
)

// fastKDF keeps tests quick; TestKeystoreDefaultArgon2id covers the defaults.
var fastKDF = Argon2idParams{Time: 1, MemoryKiB: 64, Threads: 1}

var passphrase = []byte("correct horse battery staple")

func newTestKeystore(t *testing.T, opts KeystoreOptions) (*Keystore, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "keys", "keystore")
	if opts.Identity == "" && len(opts.KeyBundle) == 0 {
		opts.Identity = alice
	}
	if opts.Argon2id == (Argon2idParams{}) {
		opts.Argon2id = fastKDF
	}
	ks, err := CreateKeystore(path, opts)
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
	ks, path := newTestKeystore(t, KeystoreOptions{Passphrase: passphrase})
	checkMode0600(t, path)
	if kp, id := ks.Current(); kp != nil || id != nil {
		t.Fatalf("a new keystore has a current key %x", id)
	}
	sender := newMember(t, SuiteX25519, bob, 50)
	first := newMember(t, SuiteHybrid, alice, 1)
	if err := ks.SetCurrent(first.kp, first.card.ID); err != nil {
		t.Fatal(err)
	}
	if err := ks.Save(); err != nil {
		t.Fatal(err)
	}
	old, err := Encrypt(sender.kp, sender.card.ID, []*Card{first.card}, []byte("before the rotation"), when)
	if err != nil {
		t.Fatal(err)
	}

	second := newMember(t, SuiteX25519, alice, 2)
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
	recent, err := Encrypt(sender.kp, sender.card.ID, []*Card{second.card}, []byte("after the rotation"), when)
	if err != nil {
		t.Fatal(err)
	}

	reopened, err := OpenKeystore(path, passphrase)
	if err != nil {
		t.Fatal(err)
	}
	if reopened.Identity() != alice {
		t.Errorf("identity %q; want %q", reopened.Identity(), alice)
	}
	kp, id := reopened.Current()
	if !bytes.Equal(id, second.card.ID) || !sameKeyPair(kp, second.kp) {
		t.Errorf("current card %x; want %x", id, second.card.ID)
	}
	for _, m := range []struct {
		data []byte
		want string
	}{{old, "before the rotation"}, {recent, "after the rotation"}} {
		got, err := Decrypt(m.data, reopened.KeyFor, sender.card)
		if err != nil || string(got) != m.want {
			t.Errorf("Decrypt = %q, %v; want %q", got, err, m.want)
		}
	}
	if reopened.KeyFor(sender.card.ID) != nil {
		t.Error("KeyFor returns a key for a card that is not ours")
	}

	// A superseded key does not become current again; the current one may be set again.
	if err := reopened.SetCurrent(first.kp, first.card.ID); !errors.Is(err, ErrMalformed) {
		t.Errorf("SetCurrent(superseded key) = %v; want %v", err, ErrMalformed)
	}
	if err := reopened.SetCurrent(second.kp, second.card.ID); err != nil {
		t.Errorf("SetCurrent(current key) = %v", err)
	}
	if err := reopened.SetCurrent(second.kp, second.card.ID[:5]); !errors.Is(err, ErrMalformed) {
		t.Errorf("SetCurrent(short card id) = %v", err)
	}
}

func TestKeystoreBundleRecordsTimes(t *testing.T) {
	t.Parallel()
	ks, _ := newTestKeystore(t, KeystoreOptions{NoPassphrase: true})
	clock := when
	ks.now = func() time.Time { return clock }
	a, b := newMember(t, SuiteX25519, alice, 1), newMember(t, SuiteX25519, alice, 2)
	ks.SetCurrent(a.kp, a.card.ID)
	clock = when.Add(time.Hour)
	ks.SetCurrent(b.kp, b.card.ID)
	raw, err := ks.KeyBundle()
	if err != nil {
		t.Fatal(err)
	}
	var m envelopev1.KeyBundle
	if err := UnmarshalStrict("bundle", raw, &m); err != nil {
		t.Fatal(err)
	}
	k := m.GetKeys()
	if len(k) != 2 || !bytes.Equal(m.GetCurrentCardId(), b.card.ID) ||
		k[0].GetAddedAtUnixSeconds() != when.Unix() || k[0].GetSupersededAtUnixSeconds() != clock.Unix() ||
		k[1].GetAddedAtUnixSeconds() != clock.Unix() || k[1].GetSupersededAtUnixSeconds() != 0 ||
		!bytes.Equal(k[0].GetSigningSeed(), a.kp.SigningSeed()) || k[1].GetSuite() != SuiteX25519 {
		t.Errorf("bundle = %v", &m)
	}
}

func TestKeystoreRestoreFromBundle(t *testing.T) {
	t.Parallel()
	ks, _ := newTestKeystore(t, KeystoreOptions{Passphrase: passphrase})
	a, b := newMember(t, SuiteHybrid, alice, 1), newMember(t, SuiteX25519, alice, 2)
	ks.SetCurrent(a.kp, a.card.ID)
	ks.SetCurrent(b.kp, b.card.ID)
	bundle, err := ks.KeyBundle()
	if err != nil {
		t.Fatal(err)
	}
	restored, path := newTestKeystore(t, KeystoreOptions{KeyBundle: bundle, Passphrase: []byte("another passphrase")})
	if restored.Identity() != alice || !sameKeyPair(restored.KeyFor(a.card.ID), a.kp) || !sameKeyPair(restored.KeyFor(b.card.ID), b.kp) {
		t.Fatal("the restored keystore lacks keys of the bundle")
	}
	if _, id := restored.Current(); !bytes.Equal(id, b.card.ID) {
		t.Errorf("restored current card %x; want %x", id, b.card.ID)
	}
	if again, err := OpenKeystore(path, []byte("another passphrase")); err != nil || again.KeyFor(a.card.ID) == nil {
		t.Errorf("reopening the restored keystore: %v", err)
	}
	if _, err := CreateKeystore(filepath.Join(t.TempDir(), "ks"), KeystoreOptions{Identity: bob, KeyBundle: bundle, NoPassphrase: true}); !errors.Is(err, ErrMalformed) {
		t.Errorf("restoring alice's bundle as bob's: %v", err)
	}
}

func TestKeystoreUnencryptedOnlyWhenAsked(t *testing.T) {
	t.Parallel()
	m := newMember(t, SuiteX25519, alice, 1)
	seedIn := func(path string) bool {
		data, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		return bytes.Contains(data, m.kp.SigningSeed())
	}

	encrypted, encPath := newTestKeystore(t, KeystoreOptions{Passphrase: passphrase})
	encrypted.SetCurrent(m.kp, m.card.ID)
	if err := encrypted.Save(); err != nil {
		t.Fatal(err)
	}
	if seedIn(encPath) {
		t.Error("the encrypted keystore file holds the signing seed in the clear")
	}

	plain, plainPath := newTestKeystore(t, KeystoreOptions{NoPassphrase: true})
	plain.SetCurrent(m.kp, m.card.ID)
	if err := plain.Save(); err != nil {
		t.Fatal(err)
	}
	checkMode0600(t, plainPath)
	if !seedIn(plainPath) {
		t.Error("the unencrypted keystore does not hold the seed as is: is it encrypted after all?")
	}
	if ks, err := OpenKeystore(plainPath, nil); err != nil || ks.KeyFor(m.card.ID) == nil {
		t.Errorf("OpenKeystore(unencrypted, no passphrase) = %v", err)
	}

	dir := t.TempDir()
	for _, tc := range []struct {
		name string
		opts KeystoreOptions
	}{
		{"no passphrase and no NoPassphrase", KeystoreOptions{Identity: alice}},
		{"empty passphrase", KeystoreOptions{Identity: alice, Passphrase: []byte{}}},
		{"a passphrase and NoPassphrase", KeystoreOptions{Identity: alice, Passphrase: passphrase, NoPassphrase: true}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(dir, tc.name)
			if _, err := CreateKeystore(path, tc.opts); !errors.Is(err, ErrPassphrase) {
				t.Fatalf("CreateKeystore = %v; want %v", err, ErrPassphrase)
			}
			if _, err := os.Stat(path); !errors.Is(err, fs.ErrNotExist) {
				t.Errorf("a refused keystore was written: %v", err)
			}
		})
	}
}

func TestKeystoreRefusals(t *testing.T) {
	t.Parallel()
	ks, path := newTestKeystore(t, KeystoreOptions{Passphrase: passphrase})
	m := newMember(t, SuiteX25519, alice, 1)
	ks.SetCurrent(m.kp, m.card.ID)
	if err := ks.Save(); err != nil {
		t.Fatal(err)
	}
	good, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	_, plainPath := newTestKeystore(t, KeystoreOptions{NoPassphrase: true})

	// The file: magic, then KeystoreFile{header, sealed bundle}.
	header, sealedBundle, err := ParseBytesPair("file", good[len(keystoreMagic):])
	if err != nil {
		t.Fatal(err)
	}
	var h envelopev1.KeystoreHeader
	if err := UnmarshalStrict("header", header, &h); err != nil {
		t.Fatal(err)
	}
	withHeader := func(edit func(h *envelopev1.KeystoreHeader)) []byte {
		var c envelopev1.KeystoreHeader
		UnmarshalStrict("header", header, &c)
		edit(&c)
		hb, _ := Marshal(&c)
		f, _ := Marshal(&envelopev1.KeystoreFile{Header: hb, KeyBundle: sealedBundle})
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
		{"wrong passphrase", good, "", []byte("incorrect horse"), ErrPassphrase},
		{"no passphrase for an encrypted keystore", good, "", nil, ErrPassphrase},
		{"a passphrase for an unencrypted keystore", nil, plainPath, passphrase, ErrPassphrase},
		{"ciphertext altered", flip(len(good) - 20), "", passphrase, ErrDecrypt},
		{"tag altered", flip(len(good) - 1), "", passphrase, ErrDecrypt},
		{"nonce altered", withHeader(func(h *envelopev1.KeystoreHeader) { h.Nonce[0] ^= 1 }), "", passphrase, ErrDecrypt},
		{"salt altered", withHeader(func(h *envelopev1.KeystoreHeader) { h.Argon2Id.Salt[0] ^= 1 }), "", passphrase, ErrPassphrase},
		{"Argon2id time altered", withHeader(func(h *envelopev1.KeystoreHeader) { h.Argon2Id.Time = 2 }), "", passphrase, ErrPassphrase},
		{"Argon2id memory over the bound", withHeader(func(h *envelopev1.KeystoreHeader) { h.Argon2Id.MemoryKib = 5 << 20 }), "", passphrase, ErrMalformed},
		{"Argon2id threads over the bound", withHeader(func(h *envelopev1.KeystoreHeader) { h.Argon2Id.Threads = 257 }), "", passphrase, ErrMalformed},
		{"short salt", withHeader(func(h *envelopev1.KeystoreHeader) { h.Argon2Id.Salt = h.Argon2Id.Salt[:8] }), "", passphrase, ErrMalformed},
		{"no Argon2id parameters", withHeader(func(h *envelopev1.KeystoreHeader) { h.Argon2Id = nil }), "", passphrase, ErrMalformed},
		{"key check altered", withHeader(func(h *envelopev1.KeystoreHeader) { h.KeyCheck[0] ^= 1 }), "", passphrase, ErrPassphrase},
		{"marked unencrypted", withHeader(func(h *envelopev1.KeystoreHeader) {
			h.Protection, h.Argon2Id, h.KeyCheck, h.Nonce = envelopev1.KeystoreProtection_KEYSTORE_PROTECTION_NONE, nil, nil, nil
		}), "", nil, ErrMalformed},
		{"unknown protection", withHeader(func(h *envelopev1.KeystoreHeader) { h.Protection = 9 }), "", passphrase, ErrUnknownSuite},
		{"version 2", withHeader(func(h *envelopev1.KeystoreHeader) { h.Version = 2 }), "", passphrase, ErrMalformed},
		{"truncated", good[:len(good)-7], "", passphrase, ErrMalformed},
		{"magic only", []byte(keystoreMagic), "", passphrase, ErrMalformed},
		{"not a keystore", []byte("{\"keys\": []}"), "", passphrase, ErrMalformed},
		{"empty file", []byte{}, "", passphrase, ErrMalformed},
		{"over the size limit", make([]byte, MaxKeystoreFileSize+1), "", passphrase, ErrTooLarge},
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
			ks, err := OpenKeystore(path, tc.passphrase)
			if !errors.Is(err, tc.kind) || ks != nil {
				t.Fatalf("OpenKeystore = %v; want %v", err, tc.kind)
			}
		})
	}

	t.Run("missing file", func(t *testing.T) {
		if _, err := OpenKeystore(filepath.Join(dir, "none"), passphrase); !errors.Is(err, fs.ErrNotExist) {
			t.Fatalf("OpenKeystore = %v; want %v", err, fs.ErrNotExist)
		}
	})
	t.Run("create over an existing file", func(t *testing.T) {
		if _, err := CreateKeystore(path, KeystoreOptions{Identity: alice, Passphrase: passphrase, Argon2id: fastKDF}); !errors.Is(err, fs.ErrExist) {
			t.Fatalf("CreateKeystore = %v; want %v", err, fs.ErrExist)
		}
		if after, _ := os.ReadFile(path); !bytes.Equal(after, good) {
			t.Error("the existing keystore was changed")
		}
	})
	t.Run("bad identity", func(t *testing.T) {
		if _, err := CreateKeystore(filepath.Join(dir, "bad-identity"), KeystoreOptions{Identity: "alice", NoPassphrase: true}); !errors.Is(err, ErrMalformed) {
			t.Fatalf("CreateKeystore = %v; want %v", err, ErrMalformed)
		}
	})
	t.Run("Argon2id parameters out of bounds", func(t *testing.T) {
		_, err := CreateKeystore(filepath.Join(dir, "bad-kdf"), KeystoreOptions{Identity: alice, Passphrase: passphrase, Argon2id: Argon2idParams{Time: 17, MemoryKiB: 64, Threads: 1}})
		if !errors.Is(err, ErrMalformed) {
			t.Fatalf("CreateKeystore = %v; want %v", err, ErrMalformed)
		}
	})
	t.Run("remove", func(t *testing.T) {
		if err := RemoveKeystore(path); err != nil {
			t.Fatal(err)
		}
		if _, err := OpenKeystore(path, passphrase); !errors.Is(err, fs.ErrNotExist) {
			t.Fatalf("OpenKeystore after RemoveKeystore = %v", err)
		}
		if err := RemoveKeystore(path); !errors.Is(err, fs.ErrNotExist) {
			t.Fatalf("RemoveKeystore twice = %v", err)
		}
	})
}

func TestKeyBundleRefusals(t *testing.T) {
	t.Parallel()
	m := newMember(t, SuiteX25519, alice, 1)
	kem, _ := m.kp.KEMPrivateKey()
	key := func() *envelopev1.StoredKey {
		return &envelopev1.StoredKey{CardId: m.card.ID, Suite: SuiteX25519, SigningSeed: m.kp.SigningSeed(), KemPrivateKey: kem, AddedAtUnixSeconds: when.Unix()}
	}
	base := func() *envelopev1.KeyBundle {
		return &envelopev1.KeyBundle{Version: 1, Identity: alice, CurrentCardId: m.card.ID, Keys: []*envelopev1.StoredKey{key()}}
	}
	cases := []struct {
		name string
		edit func(b *envelopev1.KeyBundle)
		kind error
	}{
		{"version 2", func(b *envelopev1.KeyBundle) { b.Version = 2 }, ErrMalformed},
		{"bad identity", func(b *envelopev1.KeyBundle) { b.Identity = "u_x" }, ErrMalformed},
		{"a card twice", func(b *envelopev1.KeyBundle) { b.Keys = append(b.Keys, key()) }, ErrMalformed},
		{"current card without a key", func(b *envelopev1.KeyBundle) { b.CurrentCardId = sha([]byte("x")) }, ErrMalformed},
		{"keys but no current card", func(b *envelopev1.KeyBundle) { b.CurrentCardId = nil }, ErrMalformed},
		{"current key marked superseded", func(b *envelopev1.KeyBundle) { b.Keys[0].SupersededAtUnixSeconds = 5 }, ErrMalformed},
		{"short card id", func(b *envelopev1.KeyBundle) { b.Keys[0].CardId = b.Keys[0].CardId[:4] }, ErrMalformed},
		{"short signing seed", func(b *envelopev1.KeyBundle) { b.Keys[0].SigningSeed = b.Keys[0].SigningSeed[:31] }, ErrMalformed},
		{"short KEM key", func(b *envelopev1.KeyBundle) { b.Keys[0].KemPrivateKey = b.Keys[0].KemPrivateKey[:31] }, ErrMalformed},
		{"unknown suite", func(b *envelopev1.KeyBundle) { b.Keys[0].Suite = 8 }, ErrUnknownSuite},
	}
	good, _ := Marshal(base())
	if _, err := parseKeyBundle(good); err != nil {
		t.Fatalf("the unaltered bundle: %v", err)
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			b := base()
			tc.edit(b)
			raw, _ := Marshal(b)
			if _, err := parseKeyBundle(raw); !errors.Is(err, tc.kind) {
				t.Fatalf("parseKeyBundle = %v; want %v", err, tc.kind)
			}
		})
	}
	if _, err := parseKeyBundle(append(bytes.Clone(good), 0x50, 1)); !errors.Is(err, ErrMalformed) {
		t.Errorf("bundle with an unknown field: %v", err)
	}
}

func TestKeystoreConcurrentUse(t *testing.T) {
	t.Parallel()
	ks, path := newTestKeystore(t, KeystoreOptions{NoPassphrase: true})
	members := make([]member, 8)
	for i := range members {
		members[i] = newMember(t, SuiteX25519, alice, i+1)
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
	reopened, err := OpenKeystore(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range members {
		if !sameKeyPair(reopened.KeyFor(m.card.ID), m.kp) {
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
	if _, err := CreateKeystore(path, KeystoreOptions{Identity: alice, Passphrase: passphrase}); err != nil {
		t.Fatal(err)
	}
	ks, err := OpenKeystore(path, passphrase)
	if err != nil {
		t.Fatal(err)
	}
	if ks.kdf != DefaultArgon2id {
		t.Errorf("Argon2id parameters %+v; want the defaults %+v", ks.kdf, DefaultArgon2id)
	}
	t.Logf("create and open with t=%d m=%d KiB p=%d: %v", DefaultArgon2id.Time, DefaultArgon2id.MemoryKiB, DefaultArgon2id.Threads, time.Since(start))
}
