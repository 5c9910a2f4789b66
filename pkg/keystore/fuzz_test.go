package keystore

import (
	"errors"
	"testing"
	"time"

	"github.com/umbra-e2ee/umbra/pkg/e2ee"
)

// The fuzz target runs its seed corpus in every `go test`. For a long run (see
// docs/wire-format.md, "Fuzzing"):
//
//	go test -run='^$' -fuzz='^FuzzOpenKeystoreFile$' -fuzztime=10m ./pkg/keystore

// FuzzOpenKeystoreFile feeds keystore file bytes to the keystore parser without a
// passphrase (so that no Argon2id runs on fuzzed parameters). It must never panic and
// fail only with a typed error.
func FuzzOpenKeystoreFile(f *testing.F) {
	ks := &Keystore{identity: alice, byID: map[string]*storedKey{}, now: func() time.Time { return when }}
	m := newMember(f, e2ee.SuiteHybrid, alice, 1)
	if err := ks.SetCurrent(m.kp, m.card.ID); err != nil {
		f.Fatal(err)
	}
	bundle, err := ks.KeyBundle()
	if err != nil {
		f.Fatal(err)
	}
	plain, err := ks.encode(bundle)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(plain)
	kdf := fastKDF
	kdf.Salt = make([]byte, 16)
	ks.encrypted, ks.kdf, ks.key, ks.keyCheck = true, kdf, make([]byte, 32), make([]byte, keyCheckSize)
	encrypted, err := ks.encode(bundle)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(encrypted)
	f.Fuzz(func(t *testing.T, data []byte) {
		ks := &Keystore{}
		bundle, err := ks.decode(data, nil)
		if err == nil {
			_, err = parseKeyBundle(bundle)
		}
		if err == nil {
			return
		}
		for _, k := range []error{e2ee.ErrMalformed, e2ee.ErrUnknownSuite, e2ee.ErrTooLarge, e2ee.ErrPassphrase} {
			if errors.Is(err, k) {
				return
			}
		}
		t.Fatalf("error %v has no keystore error kind", err)
	})
}
