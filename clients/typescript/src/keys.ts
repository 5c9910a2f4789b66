// Key pairs: the private half of a card, an Ed25519 signing key and an HPKE KEM key of
// one suite (pkg/e2ee keys.go).
import { copyBytes, randomBytes } from "./bytes.js";
import { E2eeErrorKind, e2eeError } from "./errors.js";
import { Suite, clampX25519, deriveKemPrivateKey, generateKemPrivateKey, kemPublicKey, params } from "./hpke.js";
import { ed25519Sign, ed25519SigningKey, type Ed25519Key } from "./platform.js";
import { sign, signingPublicKey } from "./pubkey.js";

/** DefaultSuite is the suite of new key pairs unless asked otherwise: the hybrid one. */
export const DefaultSuite = Suite.MLKEM768_X25519;

/** KeyPair is a card's private keys. It never leaves the client but encrypted (keystore, backup). */
export class KeyPair {
  /** The suite of the KEM key. */
  readonly suite: Suite;
  /** The 32-byte Ed25519 seed. Secret. */
  readonly signingSeed: Uint8Array;
  /** The Ed25519 public key. */
  readonly signingPublicKey: Uint8Array;
  /** The serialised KEM private key (32 bytes for both suites; X25519 keys clamped). Secret. */
  readonly kemPrivateKey: Uint8Array;
  /** The serialised KEM public key: 1,216 or 32 bytes. */
  readonly kemPublicKey: Uint8Array;

  private constructor(suite: Suite, signingSeed: Uint8Array, kemPrivate: Uint8Array) {
    this.suite = suite;
    this.signingSeed = signingSeed;
    this.signingPublicKey = signingPublicKey(signingSeed);
    this.kemPrivateKey = suite === Suite.X25519 ? clampX25519(kemPrivate) : copyBytes(kemPrivate);
    this.kemPublicKey = kemPublicKey(suite, this.kemPrivateKey);
  }

  /** generate returns a fresh key pair of suite. */
  static generate(suite: Suite = DefaultSuite): KeyPair {
    params(suite);
    return new KeyPair(suite, randomBytes(32), generateKemPrivateKey(suite));
  }

  /**
   * derive derives a key pair from seed (at least 64 bytes): the Ed25519 seed is its
   * first 32 bytes, the KEM key the suite KEM's DeriveKeyPair of the rest. For test
   * vectors; real keys come from generate.
   */
  static async derive(suite: Suite, seed: Uint8Array): Promise<KeyPair> {
    params(suite);
    if (seed.length < 64) throw e2eeError(E2eeErrorKind.Malformed, `key seed of ${seed.length} bytes; want at least 64`);
    return new KeyPair(suite, copyBytes(seed.subarray(0, 32)), await deriveKemPrivateKey(suite, seed.subarray(32)));
  }

  /** fromPrivateKeys rebuilds a key pair from its serialised private keys: the 32-byte Ed25519 seed and the KEM private key. */
  static fromPrivateKeys(suite: Suite, signingSeed: Uint8Array, kemPrivate: Uint8Array): KeyPair {
    params(suite);
    if (signingSeed.length !== 32) throw e2eeError(E2eeErrorKind.Malformed, `signing seed of ${signingSeed.length} bytes; want 32`);
    if (kemPrivate.length !== 32) throw e2eeError(E2eeErrorKind.Malformed, `KEM private key of ${kemPrivate.length} bytes; want 32`);
    return new KeyPair(suite, copyBytes(signingSeed), kemPrivate);
  }

  /** The seed imported into the platform's crypto, on first use of signAsync; undefined where only @noble signs. */
  #platformKey: Promise<Ed25519Key | undefined> | undefined;

  /** sign signs message with the Ed25519 key. */
  sign(message: Uint8Array): Uint8Array {
    return sign(this.signingSeed, message);
  }

  /**
   * signAsync is sign on the platform's crypto where it signs Ed25519 (platform.ts:
   * Node's crypto module or WebCrypto), many times faster: the same signature, since
   * Ed25519 is deterministic.
   */
  async signAsync(message: Uint8Array): Promise<Uint8Array> {
    let key: Ed25519Key | undefined;
    try {
      key = await (this.#platformKey ??= ed25519SigningKey(this.signingSeed));
    } catch {
      this.#platformKey = Promise.resolve(undefined);
    }
    return key === undefined ? this.sign(message) : ed25519Sign(key, message);
  }
}
