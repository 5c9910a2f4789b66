// Package identity implements umbra.identity.v1.IdentityService: apps and their API
// keys, the opaque identities apps map their users and groups to, and the access tokens
// every other service verifies (EdDSA JWTs, their signing keys, and revocations).
//
// State lives in identity.db (see store.go). API-key secrets are stored only as SHA-256
// hashes; they are 256-bit random values, so a fast hash is enough.
package identity
