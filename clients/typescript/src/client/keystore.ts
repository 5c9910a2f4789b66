// The user's keystore as the client holds it: the current key pair and every
// superseded one by card id (docs/wire-format.md §7), loaded from and saved to a
// Storage under "keystore".
//
// TO BE REPLACED: the keystore file format (§7.2–7.4: the magic, KeystoreFile,
// KeystoreHeader, Argon2id and ChaCha20-Poly1305 under the passphrase) is the crypto
// core's. Until it lands here, this file reads and writes the KeyBundle (§7.1) itself and
// only the unencrypted protection (2, NONE); a passphrase is refused with a clear error.

import { create, toBinary } from "@bufbuild/protobuf";
import { equalBytes } from "../bytes.js";
import { E2eeErrorKind, e2eeError } from "../errors.js";
import {
  KeyBundleSchema,
  KeystoreFileSchema,
  KeystoreHeaderSchema,
  KeystoreProtection,
  type KeyBundle,
} from "../gen/umbra/envelope/v1/keystore_pb.js";
import { KeyPair } from "../keys.js";
import { parseStrict } from "../proto.js";
import { KEYSTORE, type Storage } from "../storage/storage.js";

const magic = new TextEncoder().encode("umbra keystore v1\n");
const maxKeys = 5000;

interface StoredKeyPair {
  readonly cardId: Uint8Array;
  readonly kp: KeyPair;
  readonly addedAt: bigint;
  supersededAt: bigint;
}

/** LocalKeystore holds one identity's private keys. */
export class LocalKeystore {
  readonly identity: string;
  readonly #keys: StoredKeyPair[] = [];
  #current: StoredKeyPair | undefined;

  constructor(identity: string) {
    this.identity = identity;
  }

  /** The current key pair and its card id, or undefined. */
  current(): { kp: KeyPair; cardId: Uint8Array } | undefined {
    return this.#current && { kp: this.#current.kp, cardId: this.#current.cardId.slice() };
  }

  /** The key pair of card id, current or superseded, or undefined. */
  keyFor(cardId: Uint8Array): KeyPair | undefined {
    return this.#keys.find((k) => equalBytes(k.cardId, cardId))?.kp;
  }

  /** Makes kp, the keys of card cardId, the current key; the previous current key stays. */
  setCurrent(kp: KeyPair, cardId: Uint8Array, now: Date): void {
    const t = BigInt(Math.floor(now.getTime() / 1000));
    if (this.#current) {
      this.#current.supersededAt = t;
    }
    let k = this.#keys.find((e) => equalBytes(e.cardId, cardId));
    if (!k) {
      if (this.#keys.length >= maxKeys) throw e2eeError(E2eeErrorKind.TooLarge, `the keystore holds ${maxKeys} keys`);
      k = { cardId: cardId.slice(), kp, addedAt: t, supersededAt: 0n };
      this.#keys.push(k);
    }
    k.supersededAt = 0n;
    this.#current = k;
  }

  /** The KeyBundle bytes (§7.1): what the keystore file and a backup hold. */
  keyBundle(): Uint8Array {
    return toBinary(
      KeyBundleSchema,
      create(KeyBundleSchema, {
        version: 1,
        identity: this.identity,
        currentCardId: this.#current?.cardId ?? new Uint8Array(0),
        keys: this.#keys.map((k) => ({
          cardId: k.cardId,
          suite: k.kp.suite,
          signingSeed: k.kp.signingSeed,
          kemPrivateKey: k.kp.kemPrivateKey,
          addedAtUnixSeconds: k.addedAt,
          supersededAtUnixSeconds: k.supersededAt,
        })),
      }),
    );
  }

  /** Reads a KeyBundle's bytes, checked as §7.4 step 4 says. */
  static fromBundle(bytes: Uint8Array): LocalKeystore {
    const b: KeyBundle = parseStrict(KeyBundleSchema, bytes, "key bundle");
    if (b.version !== 1) throw e2eeError(E2eeErrorKind.Malformed, `key bundle version ${b.version}`);
    if (!/^u_[a-z2-7]{32}$/.test(b.identity)) throw e2eeError(E2eeErrorKind.Malformed, `key bundle identity ${JSON.stringify(b.identity)}`);
    if (b.keys.length > maxKeys) throw e2eeError(E2eeErrorKind.TooLarge, `key bundle of ${b.keys.length} keys`);
    const ks = new LocalKeystore(b.identity);
    for (const k of b.keys) {
      if (k.cardId.length !== 32 || ks.#keys.some((e) => equalBytes(e.cardId, k.cardId))) {
        throw e2eeError(E2eeErrorKind.Malformed, "key bundle holds a card id twice or one of the wrong size");
      }
      ks.#keys.push({
        cardId: k.cardId.slice(),
        kp: KeyPair.fromPrivateKeys(k.suite, k.signingSeed, k.kemPrivateKey),
        addedAt: k.addedAtUnixSeconds,
        supersededAt: k.supersededAtUnixSeconds,
      });
    }
    if (b.keys.length === 0) {
      if (b.currentCardId.length !== 0) throw e2eeError(E2eeErrorKind.Malformed, "key bundle names a current card and holds no key");
    } else {
      const cur = ks.#keys.find((e) => equalBytes(e.cardId, b.currentCardId));
      if (!cur || cur.supersededAt !== 0n) {
        throw e2eeError(E2eeErrorKind.Malformed, "key bundle's current card id names no key that is current");
      }
      ks.#current = cur;
    }
    return ks;
  }
}

/** Writes the keystore's file bytes (§7.2) to storage. */
export async function saveKeystore(storage: Storage, ks: LocalKeystore, passphrase: Uint8Array | undefined): Promise<void> {
  await storage.put(KEYSTORE, sealKeystoreFile(ks.keyBundle(), passphrase));
}

/** Reads the keystore from storage, or undefined when there is none. */
export async function loadKeystore(storage: Storage, passphrase: Uint8Array | undefined): Promise<LocalKeystore | undefined> {
  const b = await storage.get(KEYSTORE);
  if (!b) return undefined;
  return LocalKeystore.fromBundle(openKeystoreFile(b, passphrase));
}

// ---- TO BE REPLACED by the crypto core's keystore file (§7.2–7.4) ----

function sealKeystoreFile(bundle: Uint8Array, passphrase: Uint8Array | undefined): Uint8Array {
  if (passphrase !== undefined) {
    throw e2eeError(E2eeErrorKind.UnknownSuite, "this build writes unencrypted keystores only (the passphrase-protected format is not merged yet)");
  }
  const header = toBinary(KeystoreHeaderSchema, create(KeystoreHeaderSchema, { version: 1, protection: KeystoreProtection.NONE }));
  const file = toBinary(KeystoreFileSchema, create(KeystoreFileSchema, { header, keyBundle: bundle }));
  const out = new Uint8Array(magic.length + file.length);
  out.set(magic);
  out.set(file, magic.length);
  return out;
}

function openKeystoreFile(b: Uint8Array, passphrase: Uint8Array | undefined): Uint8Array {
  if (b.length < magic.length || !equalBytes(b.subarray(0, magic.length), magic)) {
    throw e2eeError(E2eeErrorKind.Malformed, "not a keystore file (no magic)");
  }
  const file = parseStrict(KeystoreFileSchema, b.subarray(magic.length), "keystore file");
  const header = parseStrict(KeystoreHeaderSchema, file.header, "keystore header");
  if (header.version !== 1) throw e2eeError(E2eeErrorKind.Malformed, `keystore version ${header.version}`);
  if (header.protection !== KeystoreProtection.NONE) {
    throw e2eeError(E2eeErrorKind.UnknownSuite, "this build reads unencrypted keystores only (the passphrase-protected format is not merged yet)");
  }
  if (passphrase !== undefined) {
    throw e2eeError(E2eeErrorKind.Passphrase, "the keystore is not encrypted, and a passphrase was given");
  }
  return file.keyBundle;
}
