// Package identity implements umbra.identity.v1.IdentityService: apps and their API
// keys, the opaque identities apps map their users and groups to, and the access tokens
// every other service verifies (EdDSA JWTs, their signing keys, and revocations).
//
// State lives behind the Store interface (store.go); its bbolt engine is identity.db
// (store_bolt.go). API-key secrets are stored only as SHA-256 hashes; they are 256-bit
// random values, so a fast hash is enough. The service calls no other service and runs
// no background work.
package identity
