// Package argon2id holds the one type of Argon2id (RFC 9106, version 0x13) parameters
// of Umbra's clients, its default cost and its derivation. Two formats stretch a secret
// with it, each under bounds of its own built on the limits declared here:
//
//   - a keystore's passphrase (pkg/keystore; docs/wire-format.md, 7.3): any cost
//     RFC 9106 allows, down to 8 KiB of memory per thread;
//   - a key backup's OPRF output (pkg/keybackup; docs/wire-format.md, 10.4): no less
//     than 8 MiB of memory, the least the backup service stores.
//
// Neither the parameters nor their encodings changed when the two formats' types became
// this one.
package argon2id

import (
	"fmt"

	"golang.org/x/crypto/argon2"
)

// Params are the cost of an Argon2id derivation, and its salt.
type Params struct {
	Time      uint32 // passes: 1 to MaxTime
	MemoryKiB uint32 // memory in KiB: at most MaxMemoryKiB
	Threads   uint32 // parallelism: 1 to MaxThreads
	Salt      []byte // MinSaltSize to MaxSaltSize bytes, fresh for every keystore or record
}

// The limits both formats keep to.
const (
	MaxTime      = 16
	MaxThreads   = 64
	MaxMemoryKiB = 4 << 20 // 4 GiB
	MinSaltSize  = 16
	MaxSaltSize  = 64
	// SaltSize is the length of the salts Umbra's clients draw.
	SaltSize = 32
)

// Default is the cost of stretching a passphrase or a password: RFC 9106's second
// recommended setting (section 4), t=3, m=64 MiB, p=4. It has no salt: every keystore
// and every backup record draws its own. One derivation takes 64 MiB and about 85 ms on
// a 2-core AMD EPYC VM (BenchmarkKeystoreArgon2id in pkg/keystore), about 160 ms on a
// 2-vCPU Intel Xeon VM (BenchmarkRestoreClientArgon2id in pkg/keybackup: 153-200 ms
// over 8 runs, up to 400 ms while other work shared the CPUs). It runs once when a
// keystore is created or opened, and once per backup or restore, where it is nearly all
// of a restore's time (BenchmarkRestoreClient, and pkg/sdk's BenchmarkRestorePrivateKey).
var Default = Params{Time: 3, MemoryKiB: 64 * 1024, Threads: 4}

// Key returns the keyLen-byte Argon2id tag of secret under p's cost and salt, with no
// secret key and no associated data. The caller checks p against its format's bounds
// first; Key panics if p.Threads is over MaxThreads, as argon2 does below 1.
func (p Params) Key(secret []byte, keyLen uint32) []byte {
	if p.Threads > MaxThreads {
		panic(fmt.Sprintf("argon2id: %d threads; at most %d", p.Threads, MaxThreads))
	}
	return argon2.IDKey(secret, p.Salt, p.Time, p.MemoryKiB, uint8(p.Threads), keyLen)
}
