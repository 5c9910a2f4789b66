// The keystore file and the KeyBundle (docs/wire-format.md, section 7): one identity's
// private keys, the current key pair and every superseded one by card id, encrypted
// under a passphrase with Argon2id and ChaCha20-Poly1305. This module reads and writes
// the bytes; where they are kept (a file, IndexedDB, memory) is the caller's choice.
import { hkdf } from "@noble/hashes/hkdf.js";
import { sha256 } from "@noble/hashes/sha2.js";
import { Aead, aeadOpen, aeadSeal } from "./aead.js";
import { argon2id } from "./argon2.js";
import { concat, constantTimeEqual, copyBytes, equalBytes, labelled, randomBytes, toHex, unixSeconds, utf8Bytes } from "./bytes.js";
import { CardIdSize } from "./card.js";
import { E2eeError, E2eeErrorKind, e2eeError } from "./errors.js";
import { KeyBundleSchema, KeystoreHeaderSchema, KeystoreProtection, KeystoreFileSchema } from "./gen/umbra/envelope/v1/keystore_pb.js";
import { params } from "./hpke.js";
import { userIdentityProblem } from "./ident.js";
import { KeyPair } from "./keys.js";
import { LabelKeystoreEncryptionKey, LabelKeystoreKeyCheck } from "./labels.js";
import { encode, parseBytesPair, parseStrict } from "./proto.js";

/** Limits of the keystore file (section 7). */
export const MaxKeyBundleSize = 1 << 20;
export const MaxStoredKeys = 5000;
export const MaxKeystoreFileSize = MaxKeyBundleSize + 4096;
/** KeystoreMagic starts every keystore file. */
export const KeystoreMagic = utf8Bytes("umbra keystore v1\n");

/** Argon2idParams are the cost of stretching a keystore passphrase. */
export interface KeystoreArgon2id {
  time: number;
  memoryKiB: number;
  threads: number;
}

/** DefaultKeystoreArgon2id is RFC 9106's second recommended setting: t=3, m=64 MiB, p=4. */
export const DefaultKeystoreArgon2id: KeystoreArgon2id = { time: 3, memoryKiB: 64 * 1024, threads: 4 };

function checkArgon2id(p: KeystoreArgon2id): void {
  const ok = (n: number, lo: number, hi: number) => Number.isInteger(n) && n >= lo && n <= hi;
  if (!ok(p.time, 1, 16) || !ok(p.threads, 1, 64) || !ok(p.memoryKiB, 8 * p.threads, 4 << 20)) {
    throw e2eeError(E2eeErrorKind.Malformed, `Argon2id parameters t=${p.time} m=${p.memoryKiB} KiB p=${p.threads} are outside t 1-16, p 1-64, m 8p KiB-4 GiB (RFC 9106)`);
  }
}

/** StoredKey is one key of a bundle. */
export interface StoredKey {
  readonly cardId: Uint8Array;
  readonly keyPair: KeyPair;
  readonly addedAtUnixSeconds: bigint;
  /** When another key became current; 0n for the current key. */
  supersededAtUnixSeconds: bigint;
}

/** KeyBundle is a parsed KeyBundle: an identity's keys, oldest first, and the current one. */
export interface KeyBundle {
  readonly identity: string;
  readonly currentCardId: Uint8Array | undefined;
  readonly keys: StoredKey[];
}

/** encodeKeyBundle returns the canonical KeyBundle bytes (secret). */
export function encodeKeyBundle(b: KeyBundle): Uint8Array {
  const bytes = encode(KeyBundleSchema, {
    version: 1,
    identity: b.identity,
    currentCardId: b.currentCardId ?? new Uint8Array(0),
    keys: b.keys.map((k) => ({
      cardId: k.cardId,
      suite: k.keyPair.suite,
      signingSeed: k.keyPair.signingSeed,
      kemPrivateKey: k.keyPair.kemPrivateKey,
      addedAtUnixSeconds: k.addedAtUnixSeconds,
      supersededAtUnixSeconds: k.supersededAtUnixSeconds,
    })),
  });
  if (bytes.length > MaxKeyBundleSize) throw e2eeError(E2eeErrorKind.TooLarge, `key bundle is ${bytes.length} bytes; at most ${MaxKeyBundleSize}`);
  return bytes;
}

/** parseKeyBundle parses and checks an encoded KeyBundle (section 7.4, step 4). */
export function parseKeyBundle(b: Uint8Array): KeyBundle {
  if (b.length > MaxKeyBundleSize) throw e2eeError(E2eeErrorKind.TooLarge, `key bundle is ${b.length} bytes; at most ${MaxKeyBundleSize}`);
  const m = parseStrict(KeyBundleSchema, b, "key bundle");
  if (m.version !== 1) throw e2eeError(E2eeErrorKind.Malformed, `key bundle version ${m.version}; this client reads version 1`);
  if (m.keys.length > MaxStoredKeys) throw e2eeError(E2eeErrorKind.TooLarge, `key bundle holds ${m.keys.length} keys; at most ${MaxStoredKeys}`);
  const problem = userIdentityProblem(m.identity);
  if (problem !== undefined) throw e2eeError(E2eeErrorKind.Malformed, `key bundle identity ${problem}`);
  const byId = new Map<string, StoredKey>();
  const keys: StoredKey[] = m.keys.map((s, i) => {
    if (s.cardId.length !== CardIdSize) throw e2eeError(E2eeErrorKind.Malformed, `key bundle key ${i}: card id is ${s.cardId.length} bytes; want 32`);
    const id = toHex(s.cardId);
    if (byId.has(id)) throw e2eeError(E2eeErrorKind.Malformed, `key bundle key ${i}: card ${id} has two keys`);
    let keyPair: KeyPair;
    try {
      keyPair = KeyPair.fromPrivateKeys(s.suite, s.signingSeed, s.kemPrivateKey);
    } catch (err) {
      if (err instanceof E2eeError) throw new E2eeError(err.kind, `key bundle key ${i}: ${err.message}`, { cause: err });
      throw err;
    }
    const k: StoredKey = { cardId: copyBytes(s.cardId), keyPair, addedAtUnixSeconds: s.addedAtUnixSeconds, supersededAtUnixSeconds: s.supersededAtUnixSeconds };
    byId.set(id, k);
    return k;
  });
  const cur = byId.get(toHex(m.currentCardId));
  if (m.currentCardId.length === 0 && keys.length > 0) throw e2eeError(E2eeErrorKind.Malformed, "key bundle has keys but no current key");
  if (m.currentCardId.length > 0 && cur === undefined) throw e2eeError(E2eeErrorKind.Malformed, `key bundle's current card ${toHex(m.currentCardId)} has no key`);
  if (cur !== undefined && cur.supersededAtUnixSeconds !== 0n) throw e2eeError(E2eeErrorKind.Malformed, "key bundle's current key is marked superseded");
  return { identity: m.identity, currentCardId: cur?.cardId, keys };
}

/**
 * Argon2idFunction computes Argon2id as the SDK's argon2id does: an app passes its own to
 * run it elsewhere, such as a browser's Web Worker (64 MiB and a fraction of a second to
 * seconds at the default cost, which would freeze a page).
 */
export type Argon2idFunction = (password: Uint8Array, salt: Uint8Array, time: number, memoryKiB: number, threads: number, tagLength: number) => Promise<Uint8Array>;

/** stretch derives the keystore's AEAD key and key check value from a passphrase (section 7.3). */
async function stretch(passphrase: Uint8Array, salt: Uint8Array, p: KeystoreArgon2id, run: Argon2idFunction = argon2id): Promise<{ key: Uint8Array; keyCheck: Uint8Array }> {
  const master = await run(passphrase, salt, p.time, p.memoryKiB, p.threads, 32);
  return {
    key: hkdf(sha256, master, undefined, labelled(LabelKeystoreEncryptionKey), 32),
    keyCheck: hkdf(sha256, master, undefined, labelled(LabelKeystoreKeyCheck), 16),
  };
}

/** KeystoreOptions are the choices made when a keystore is created. */
export interface KeystoreOptions {
  /** The identity whose keys it holds; required unless keyBundle names it. */
  identity?: string;
  /** The passphrase (bytes as given; normalise Unicode to NFC first). Required unless noPassphrase. */
  passphrase?: Uint8Array;
  /** Store the keys unencrypted: must be asked for explicitly and excludes passphrase. */
  noPassphrase?: boolean;
  /** The Argon2id cost; DefaultKeystoreArgon2id if absent. */
  argon2id?: KeystoreArgon2id;
  /** The encoded keys to start with (a restore from a backup). */
  keyBundle?: Uint8Array;
  /** The clock that dates added and superseded keys; the system clock if absent. */
  now?: () => Date;
  /** Runs the passphrase's Argon2id (a Web Worker's); the SDK's argon2id, in this thread, if absent. */
  stretchWith?: Argon2idFunction;
}

interface Protection {
  kdf: KeystoreArgon2id;
  salt: Uint8Array;
  key: Uint8Array;
  keyCheck: Uint8Array;
}

/**
 * Keystore is a user's private keys in memory, with the protection of the file they
 * are written to: the current key pair and every one it replaced, by card id. toFile
 * returns the bytes to store (a fresh nonce each time); open reads them.
 */
export class Keystore {
  readonly identity: string;
  private keys: StoredKey[];
  private byId: Map<string, StoredKey>;
  private currentId: Uint8Array | undefined;
  private readonly protection: Protection | undefined;
  private readonly now: () => Date;

  private constructor(bundle: KeyBundle, protection: Protection | undefined, now: () => Date) {
    this.identity = bundle.identity;
    this.keys = bundle.keys;
    this.byId = new Map(bundle.keys.map((k) => [toHex(k.cardId), k]));
    this.currentId = bundle.currentCardId;
    this.protection = protection;
    this.now = now;
  }

  /** create makes a keystore, empty but for the identity or holding opts.keyBundle. */
  static async create(opts: KeystoreOptions): Promise<Keystore> {
    let bundle: KeyBundle = { identity: opts.identity ?? "", currentCardId: undefined, keys: [] };
    if (opts.keyBundle !== undefined && opts.keyBundle.length > 0) {
      bundle = parseKeyBundle(opts.keyBundle);
      if (opts.identity !== undefined && opts.identity !== bundle.identity) {
        throw e2eeError(E2eeErrorKind.Malformed, `the key bundle is ${bundle.identity}'s, not ${opts.identity}'s`);
      }
    }
    const problem = userIdentityProblem(bundle.identity);
    if (problem !== undefined) throw e2eeError(E2eeErrorKind.Malformed, `keystore identity ${problem}`);
    const hasPass = opts.passphrase !== undefined && opts.passphrase.length > 0;
    if (opts.noPassphrase && hasPass) throw e2eeError(E2eeErrorKind.Passphrase, "both a passphrase and noPassphrase given");
    if (!opts.noPassphrase && !hasPass) throw e2eeError(E2eeErrorKind.Passphrase, "no passphrase; an unencrypted keystore needs noPassphrase");
    let protection: Protection | undefined;
    if (hasPass) {
      const kdf = { ...(opts.argon2id ?? DefaultKeystoreArgon2id) };
      checkArgon2id(kdf);
      const salt = randomBytes(32);
      protection = { kdf, salt, ...(await stretch(opts.passphrase!, salt, kdf, opts.stretchWith)) };
    }
    return new Keystore(bundle, protection, opts.now ?? (() => new Date()));
  }

  /**
   * open reads keystore file bytes (section 7.4). passphrase must be the one the file
   * was written with, and absent for an unencrypted one: a wrong, missing or
   * superfluous passphrase is Passphrase; an altered file Decrypt or Malformed.
   * stretchWith runs the passphrase's Argon2id (as KeystoreOptions.stretchWith).
   */
  static async open(file: Uint8Array, passphrase?: Uint8Array, now?: () => Date, stretchWith?: Argon2idFunction): Promise<Keystore> {
    if (file.length > MaxKeystoreFileSize) throw e2eeError(E2eeErrorKind.TooLarge, `keystore file is over ${MaxKeystoreFileSize} bytes`);
    if (file.length < KeystoreMagic.length || !equalBytes(file.subarray(0, KeystoreMagic.length), KeystoreMagic)) {
      throw e2eeError(E2eeErrorKind.Malformed, 'not an Umbra keystore file (no "umbra keystore v1\\n" magic)');
    }
    const [header = new Uint8Array(0), sealed = new Uint8Array(0)] = parseBytesPair("keystore file", file.subarray(KeystoreMagic.length));
    const h = parseStrict(KeystoreHeaderSchema, header, "keystore header");
    if (h.version !== 1) throw e2eeError(E2eeErrorKind.Malformed, `keystore version ${h.version}; this client reads version 1`);
    const hasPass = passphrase !== undefined && passphrase.length > 0;
    let bundleBytes: Uint8Array;
    let protection: Protection | undefined;
    switch (h.protection) {
      case KeystoreProtection.NONE:
        if (h.argon2id !== undefined || h.keyCheck.length !== 0 || h.nonce.length !== 0) {
          throw e2eeError(E2eeErrorKind.Malformed, "unencrypted keystore with encryption parameters");
        }
        if (hasPass) throw e2eeError(E2eeErrorKind.Passphrase, "the keystore is not encrypted, yet a passphrase was given");
        bundleBytes = sealed;
        break;
      case KeystoreProtection.ARGON2ID_CHACHA20_POLY1305: {
        const a = h.argon2id;
        if (a === undefined || a.threads > 64) throw e2eeError(E2eeErrorKind.Malformed, "keystore Argon2id parameters missing or out of bounds");
        const kdf = { time: a.time, memoryKiB: a.memoryKib, threads: a.threads };
        checkArgon2id(kdf);
        if (a.salt.length < 16 || a.salt.length > 64) throw e2eeError(E2eeErrorKind.Malformed, `keystore salt is ${a.salt.length} bytes; want 16 to 64`);
        if (h.keyCheck.length !== 16) throw e2eeError(E2eeErrorKind.Malformed, `keystore key check is ${h.keyCheck.length} bytes; want 16`);
        if (h.nonce.length !== 12) throw e2eeError(E2eeErrorKind.Malformed, `keystore nonce is ${h.nonce.length} bytes; want 12`);
        if (!hasPass) throw e2eeError(E2eeErrorKind.Passphrase, "the keystore is encrypted; a passphrase is required");
        const { key, keyCheck } = await stretch(passphrase!, a.salt, kdf, stretchWith);
        if (!constantTimeEqual(keyCheck, h.keyCheck)) throw e2eeError(E2eeErrorKind.Passphrase, "wrong passphrase (or altered Argon2id parameters)");
        const opened = aeadOpen(Aead.CHACHA20_POLY1305, key, h.nonce, sealed, header);
        if (opened === undefined) {
          throw e2eeError(E2eeErrorKind.Decrypt, "the keystore's passphrase is right but its content does not authenticate: the file was altered or damaged");
        }
        bundleBytes = opened;
        protection = { kdf, salt: copyBytes(a.salt), key, keyCheck };
        break;
      }
      default:
        throw e2eeError(E2eeErrorKind.UnknownSuite, `keystore protection ${h.protection}`);
    }
    return new Keystore(parseKeyBundle(bundleBytes), protection, now ?? (() => new Date()));
  }

  /** encrypted reports whether the keystore's file is encrypted under a passphrase. */
  get encrypted(): boolean {
    return this.protection !== undefined;
  }

  /** current returns the current key pair and its card id, or undefined if there is none yet. */
  current(): { keyPair: KeyPair; cardId: Uint8Array } | undefined {
    const k = this.currentId === undefined ? undefined : this.byId.get(toHex(this.currentId));
    return k === undefined ? undefined : { keyPair: k.keyPair, cardId: k.cardId };
  }

  /**
   * setCurrent makes kp, the key pair of card cardId, the current one; the previous
   * current key stays, superseded, so that what was sent to its card still decrypts.
   */
  setCurrent(kp: KeyPair, cardId: Uint8Array): void {
    if (cardId.length !== CardIdSize) throw e2eeError(E2eeErrorKind.Malformed, `card id is ${cardId.length} bytes; want 32`);
    params(kp.suite);
    const existing = this.byId.get(toHex(cardId));
    if (existing !== undefined) {
      if (this.currentId !== undefined && equalBytes(cardId, this.currentId) && sameKeyPair(existing.keyPair, kp)) return;
      throw e2eeError(E2eeErrorKind.Malformed, `card ${toHex(cardId)} already has a key in the keystore`);
    }
    if (this.keys.length >= MaxStoredKeys) throw e2eeError(E2eeErrorKind.TooLarge, `the keystore holds ${this.keys.length} keys; at most ${MaxStoredKeys}`);
    const now = unixSeconds(this.now());
    const old = this.currentId === undefined ? undefined : this.byId.get(toHex(this.currentId));
    if (old !== undefined) old.supersededAtUnixSeconds = now;
    const k: StoredKey = { cardId: copyBytes(cardId), keyPair: kp, addedAtUnixSeconds: now, supersededAtUnixSeconds: 0n };
    this.keys.push(k);
    this.byId.set(toHex(k.cardId), k);
    this.currentId = k.cardId;
  }

  /** keyFor returns the key pair of card cardId, current or superseded, or undefined: decrypt's KeyLookup. */
  keyFor = (cardId: Uint8Array): KeyPair | undefined => this.byId.get(toHex(cardId))?.keyPair;

  /** storedKeys returns every key, oldest first. */
  storedKeys(): readonly StoredKey[] {
    return this.keys;
  }

  /** keyBundle returns every key as an encoded KeyBundle (what a backup encrypts). The bytes are secret. */
  keyBundle(): Uint8Array {
    return encodeKeyBundle({ identity: this.identity, currentCardId: this.currentId, keys: this.keys });
  }

  /** toFile returns the keystore file's bytes: the magic, then a KeystoreFile, sealed with a fresh nonce if encrypted. */
  toFile(): Uint8Array {
    const bundle = this.keyBundle();
    const p = this.protection;
    if (p === undefined) {
      const header = encode(KeystoreHeaderSchema, { version: 1, protection: KeystoreProtection.NONE });
      return concat(KeystoreMagic, encode(KeystoreFileSchema, { header, keyBundle: bundle }));
    }
    const nonce = randomBytes(12);
    const header = encode(KeystoreHeaderSchema, {
      version: 1,
      protection: KeystoreProtection.ARGON2ID_CHACHA20_POLY1305,
      argon2id: { time: p.kdf.time, memoryKib: p.kdf.memoryKiB, threads: p.kdf.threads, salt: p.salt },
      keyCheck: p.keyCheck,
      nonce,
    });
    const sealed = aeadSeal(Aead.CHACHA20_POLY1305, p.key, nonce, bundle, header);
    return concat(KeystoreMagic, encode(KeystoreFileSchema, { header, keyBundle: sealed }));
  }
}

function sameKeyPair(a: KeyPair, b: KeyPair): boolean {
  return a.suite === b.suite && equalBytes(a.kemPrivateKey, b.kemPrivateKey) && equalBytes(a.signingSeed, b.signingSeed);
}
