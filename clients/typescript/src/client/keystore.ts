// The user's keystore in a Storage, under "keystore": the wire format's keystore file
// (docs/wire-format.md §7.2), encrypted under the passphrase with Argon2id and
// ChaCha20-Poly1305 by the crypto core's Keystore, or unencrypted when the app asked for
// that explicitly. The bytes are those the Go SDK writes, so a FileStorage on the Go
// CLI's profile folder opens its keystore.

import { Keystore, type Argon2idFunction } from "../keystore.js";
import { KEYSTORE, type Storage } from "../storage/storage.js";

/** Writes the keystore's file bytes to storage (a fresh nonce every time). */
export async function saveKeystore(storage: Storage, ks: Keystore): Promise<void> {
  await storage.put(KEYSTORE, ks.toFile());
}

/** Reads the keystore from storage, or undefined when there is none. */
export async function loadKeystore(storage: Storage, passphrase: Uint8Array | undefined, now: () => Date, stretchWith?: Argon2idFunction): Promise<Keystore | undefined> {
  const b = await storage.get(KEYSTORE);
  if (!b) return undefined;
  return Keystore.open(b, passphrase, now, stretchWith);
}
