package sdk

import "github.com/umbra-e2ee/umbra/pkg/argon2id"

// CheapKeystore returns cfg with the cheapest Argon2id cost a keystore accepts (t=1,
// m=8 KiB, p=1) for the passphrase of the keystores it creates, for the tests that
// are not about Argon2id. The cost of production is argon2id.Default, which
// nothing outside the tests changes.
func CheapKeystore(cfg Config) Config {
	cfg.keystoreArgon2id = argon2id.Params{Time: 1, MemoryKiB: 8, Threads: 1}
	return cfg
}

// WithoutKeyTransparency returns cfg with card lookups made without proofs
// (SearchCards), for the tests of the pins on their own: a malicious operator holds
// the log key, so it can put a card it forged in its log (where the owner's monitoring
// and witnesses see it), and the pins must still refuse it.
func WithoutKeyTransparency(cfg Config) Config {
	cfg.withoutKT = true
	return cfg
}
