package vectortest

import (
	"crypto/ed25519"
	"testing"
)

func TestEd25519KeyAgrees(t *testing.T) {
	k := Ed25519KeyOf(ed25519.NewKeyFromSeed(Counting(0, ed25519.SeedSize)))
	if !k.Agrees() {
		t.Fatal("a key and its own seed do not agree")
	}
	other := Ed25519KeyOf(ed25519.NewKeyFromSeed(Counting(1, ed25519.SeedSize)))
	for _, tc := range []struct {
		name string
		key  Ed25519Key
	}{
		{"another public key", Ed25519Key{Seed: k.Seed, PublicKey: other.PublicKey}},
		{"another seed", Ed25519Key{Seed: other.Seed, PublicKey: k.PublicKey}},
		{"a short seed", Ed25519Key{Seed: k.Seed[:ed25519.SeedSize-1], PublicKey: k.PublicKey}},
		{"no public key", Ed25519Key{Seed: k.Seed}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.key.Agrees() {
				t.Errorf("seed %x and public key %x agree", []byte(tc.key.Seed), []byte(tc.key.PublicKey))
			}
		})
	}
}
