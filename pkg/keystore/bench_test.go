package keystore

import (
	"testing"

	"github.com/umbra-e2ee/umbra/pkg/argon2id"
)

// BenchmarkKeystoreArgon2id is the cost of opening (or creating) a keystore with the
// default Argon2id parameters: one passphrase stretch.
//
//	go test -run='^$' -bench='^BenchmarkKeystoreArgon2id$' -count=6 ./pkg/keystore
func BenchmarkKeystoreArgon2id(b *testing.B) {
	kdf := argon2id.Default
	kdf.Salt = make([]byte, argon2id.SaltSize)
	b.ReportAllocs()
	for b.Loop() {
		if _, _, err := stretch(passphrase, kdf); err != nil {
			b.Fatal(err)
		}
	}
}
