// Package keystore is the on-device file of a user's private keys: the current key pair
// and every one it replaced, by card id, so that what was sent to an old card still
// decrypts. The file is encrypted under a passphrase (Argon2id, HKDF-SHA256,
// ChaCha20-Poly1305), or, only when asked for explicitly, left unencrypted with mode
// 0600, and it is replaced atomically on every Save.
//
// The format is docs/wire-format.md, section 7 (proto/umbra/envelope/v1/keystore.proto),
// and the failures are of pkg/e2ee's kinds, tested with errors.Is: e2ee.ErrPassphrase,
// e2ee.ErrDecrypt, e2ee.ErrMalformed, e2ee.ErrTooLarge, e2ee.ErrUnknownSuite. The
// KeyBundle a keystore holds is what a key backup (pkg/keybackup) encrypts.
package keystore
