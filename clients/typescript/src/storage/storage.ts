// Where the SDK keeps a user's local state: the keystore (docs/wire-format.md §7.2,
// encrypted under the passphrase by the keystore format itself), the pin file (§5.7:
// public keys and card ids, no secret) and the key transparency state (§13.10: log
// keys and the checkpoint kept, no secret). Each is one named value; a Storage holds
// one user's values. Implementations: MemoryStorage (tests), FileStorage (Node: a
// folder, laid out as the Go SDK lays out its files) and IndexedDBStorage (browsers).

/** The names the SDK stores under. */
export const KEYSTORE = "keystore";
/** The pin file, named as the Go SDK names it beside its keystore. */
export const TRUST = "keystore.trust";
/** The key transparency state file, named as the Go SDK names it beside its keystore. */
export const KT_STATE = "keystore.kt";

/**
 * Storage keeps named byte values. put replaces a value as a whole, atomically: a crash
 * leaves the old value or the new one, never a mix.
 */
export interface Storage {
  get(name: string): Promise<Uint8Array | undefined>;
  put(name: string, value: Uint8Array): Promise<void>;
  delete(name: string): Promise<void>;
}

/** MemoryStorage keeps values in memory: for tests, and for a session that keeps nothing. */
export class MemoryStorage implements Storage {
  readonly #values = new Map<string, Uint8Array>();

  async get(name: string): Promise<Uint8Array | undefined> {
    checkName(name);
    const v = this.#values.get(name);
    return v && v.slice();
  }

  async put(name: string, value: Uint8Array): Promise<void> {
    checkName(name);
    this.#values.set(name, value.slice());
  }

  async delete(name: string): Promise<void> {
    checkName(name);
    this.#values.delete(name);
  }
}

/** Checks a storage name: one path segment of letters, digits, dots, dashes and underscores. */
export function checkName(name: string): void {
  if (!/^[A-Za-z0-9._-]{1,128}$/.test(name) || name === "." || name === "..") {
    throw new Error(`umbra: storage name ${JSON.stringify(name)} is not usable`);
  }
}
