// Package keybackup is the client's cryptography of a key backup: what turns a password
// (or a recovery key) and the backup service's oblivious PRF into the keys that encrypt
// a KeyBundle and authenticate a restore. It does no I/O; pkg/sdk runs the protocol
// over gRPC.
//
// The steps, byte for byte in docs/wire-format.md ("Key backup"):
//
//  1. Blind: the OPRF input binds the secret to its identity and slot; the client
//     blinds it (RFC 9497, verifiable mode, ristretto255-SHA512) and sends only the
//     blinded element.
//  2. Finalize: the client checks the service's DLEQ proof against the public key the
//     service returned and unblinds, getting the 64-byte OPRF output. Nobody but the
//     client ever holds it, and computing it needs the service's key.
//  3. DeriveKeys: Argon2id stretches the output (parameters and salt stored with the
//     record), and HKDF-SHA256 derives the encryption key and the auth key, each bound
//     to the identity, slot, record version and OPRF public key.
//  4. Seal or Open: ChaCha20-Poly1305 (or AES-256-GCM) over the KeyBundle, with the
//     record's parameters as associated data.
//
// The service stores SHA-256 of the auth key and releases the ciphertext only to a
// client that presents the auth key; every presentation is counted against a small
// budget. A copy of the service's database holds no OPRF key, so it offers nothing
// to test a guess against.
//
// Recovery keys are 160 random bits written as eight groups of four base32 characters
// and a ninth group that checks them (RecoveryKey).
package keybackup
