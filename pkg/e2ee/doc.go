// Package e2ee is Umbra's client cryptography: key pairs, cards (the signed public keys
// of an identity), and messages encrypted to cards and groups. It runs on the client;
// the services use only its card verification, which needs no secret.
//
// Every primitive comes from Go's standard library (crypto/ed25519, crypto/hpke,
// crypto/sha256, crypto/hkdf, crypto/chacha20poly1305 through x/crypto...). The byte
// layouts are those of proto/umbra/envelope/v1 and docs/wire-format.md: every signature
// and every HPKE or HKDF info starts with a domain-separation label, and every signed
// structure travels as the exact bytes that were signed.
package e2ee
