// Package backup implements umbra.backup.v1.BackupService: private-key backups
// under a password (or a recovery key) hardened by an oblivious PRF, with a
// guess-limited restore.
//
// # What is stored, what is derived
//
// backup.db (store_bolt.go, the bbolt engine of the Store interface of store.go; layout
// in proto/umbra/storage/backup/v1/backup.proto) holds, per app, identity and slot, a
// BackupSlotRecord: the slot's version counter, its attempt budget and, when it holds
// one, the client's record (AEAD ciphertext, nonce, Argon2id parameters and salt, and
// SHA-256 of the client's auth key). It also holds an outbox of events for the
// messaging service, and a 16-byte check value of the server secret.
//
// The OPRF keys (RFC 9497, verifiable mode, ristretto255-SHA512) are never stored.
// Each is derived when needed from the server secret (Config.Secret, at least 32
// bytes, kept outside backup.db):
//
//	seed = HKDF-SHA256(ikm = secret, salt = none, info = "umbra backup v1 oprf seed"
//	                   || u16(len(app)) || app || u16(len(identity)) || identity
//	                   || u8(slot) || u64(version), length 32)
//	key  = DeriveKeyPair(seed, info = "umbra backup v1 oprf key")   (RFC 9497 §3.2.1)
//
// so every (app, identity, slot, version) has its own key, and the same key comes back
// after a restart. Recently used keys are kept in a bounded LRU (Config.KeyCacheSize).
// The secret's check value is HKDF-SHA256(secret, info = "umbra backup v1 secret
// check", length 16); New refuses to start when it does not match the secret it is
// given, since a different secret would silently turn every stored backup into one
// that no password opens.
//
// # Why a stolen backup.db is useless alone
//
// Testing a password guess against a record needs the OPRF output for that guess,
// which needs the record's OPRF key, which needs the server secret. backup.db holds
// neither: an attacker with the file alone cannot run a single offline guess. An
// attacker with a live access token must ask the service for every guess, and each
// guess spends one attempt of the slot's budget (Config.MaxAttempts, default 10);
// when the budget is spent the slot is erased and its owner gets a BackupEvent in
// its messaging stream.
//
// # Attempts
//
// A RESTORE evaluation spends one attempt up front and is counted as unspent until
// a Restore follows; a failed Restore spends one attempt unless it follows an unspent
// evaluation. A matching Restore and a PutBackup restore the full budget. A RESTORE
// evaluation with no attempt left, and a failed Restore that leaves neither attempts
// nor unspent evaluations, erase the slot in the same transaction that writes the
// event to the outbox (events.go); Run (background.go) delivers the outbox through the
// messaging service's PublishEvent (peers.go) and deletes each event once it is
// accepted.
//
// Versions never go back, even when a slot is deleted or erased, so no OPRF key
// protects two records. A BACKUP evaluation uses the key of the next version, so it
// reveals nothing about the stored record.
package backup
