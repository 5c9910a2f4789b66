// HPKE (RFC 9180, base mode, single-shot) for the two suites of docs/wire-format.md
// section 3. The key schedule and the AEAD come from @hpke/core and
// @hpke/chacha20poly1305; HKDF-SHA256 from @noble/hashes (synchronous: the key
// schedule's six small HMACs cost less than one round trip to WebCrypto each); the KEMs
// are composed here from their primitives, as RFC 9180 section 4.1 (DHKEM(X25519,
// HKDF-SHA256), KEM id 0x0020) and draft-ietf-hpke-pq-03 (MLKEM768-X25519, "X-Wing",
// KEM id 0x647A) define them: ML-KEM-768 from @noble/post-quantum, X25519 on the
// platform's crypto where it has it (Node's crypto module, or WebCrypto), @noble/curves
// otherwise (platform.ts).
// test/hpke.test.ts checks them against RFC 9180's vector and @noble/post-quantum's
// own X-Wing, the envelope tests against the Go SDK's vectors.
//
// Prepared keys. ML-KEM encapsulation spends half its time expanding the public key's
// matrix; @noble/post-quantum's prepare() does that once per key. The prepared keys of
// the last cards encrypted to are kept (preparedPublic), and a key pair's expanded
// private keys are kept with it (preparedPrivate): a client encrypts to the same
// contacts and decrypts with the same keys many times.
import { CipherSuite, HkdfSha256, type KemInterface } from "@hpke/core";
import { Chacha20Poly1305 } from "@hpke/chacha20poly1305";
import { KemId, XCryptoKey } from "@hpke/common";
import { ml_kem768, type KEMPrepared } from "@noble/post-quantum/ml-kem.js";
import { ml_kem768_x25519 } from "@noble/post-quantum/hybrid.js";
import { x25519 } from "@noble/curves/ed25519.js";
import { expand as hkdfExpand, extract as hkdfExtract } from "@noble/hashes/hkdf.js";
import { sha256 } from "@noble/hashes/sha2.js";
import { sha3_256, shake256 } from "@noble/hashes/sha3.js";
import { concat, copyBytes, equalBytes, toHex, u16, utf8Bytes } from "./bytes.js";
import { Suite } from "./gen/umbra/envelope/v1/envelope_pb.js";
import { E2eeErrorKind, e2eeError } from "./errors.js";
import { x25519Ephemeral, x25519Secret, x25519Shared, type X25519Secret } from "./platform.js";

export { Suite };

/** SuiteParams are a suite's sizes. */
export interface SuiteParams {
  readonly publicKeyLength: number;
  readonly encLength: number;
  readonly privateKeyLength: number;
}

const suiteParams: ReadonlyMap<Suite, SuiteParams> = new Map([
  [Suite.MLKEM768_X25519, { publicKeyLength: 1216, encLength: 1120, privateKeyLength: 32 }],
  [Suite.X25519, { publicKeyLength: 32, encLength: 32, privateKeyLength: 32 }],
]);

/** params returns suite's sizes, or throws UnknownSuite. */
export function params(suite: Suite): SuiteParams {
  const p = suiteParams.get(suite);
  if (p === undefined) throw e2eeError(E2eeErrorKind.UnknownSuite, `suite ${suite}`);
  return p;
}

function bytesOf(k: ArrayBufferLike | ArrayBufferView): Uint8Array {
  return ArrayBuffer.isView(k) ? new Uint8Array(k.buffer, k.byteOffset, k.byteLength) : new Uint8Array(k);
}

function buffer(b: Uint8Array): ArrayBuffer {
  return b.byteOffset === 0 && b.byteLength === b.buffer.byteLength && b.buffer instanceof ArrayBuffer
    ? b.buffer
    : (copyBytes(b).buffer as ArrayBuffer);
}

/** HkdfSha256Sync is @hpke/core's HKDF-SHA256 (its labelled steps) over @noble/hashes' Extract and Expand. */
class HkdfSha256Sync extends HkdfSha256 {
  override async extract(salt: ArrayBufferLike | ArrayBufferView, ikm: ArrayBufferLike | ArrayBufferView): Promise<ArrayBuffer> {
    const s = bytesOf(salt);
    return buffer(hkdfExtract(sha256, bytesOf(ikm), s.length === 0 ? undefined : s));
  }
  override async expand(prk: ArrayBufferLike | ArrayBufferView, info: ArrayBufferLike | ArrayBufferView, len: number): Promise<ArrayBuffer> {
    return buffer(hkdfExpand(sha256, bytesOf(prk), bytesOf(info), len));
  }
  override async extractAndExpand(salt: ArrayBufferLike | ArrayBufferView, ikm: ArrayBufferLike | ArrayBufferView, info: ArrayBufferLike | ArrayBufferView, len: number): Promise<ArrayBuffer> {
    return this.expand(await this.extract(salt, ikm), info, len);
  }
}

const empty = new Uint8Array(0);
const publicKind = "public";

/** A KEM private key as the KEMs below take it: prepared once per key (see preparedPrivate). */
class PrivateKemKey extends XCryptoKey {
  constructor(
    name: string,
    raw: Uint8Array,
    /** The X25519 private key (the hybrid KEM's X25519 half), prepared. */
    readonly x25519: X25519Secret,
    /** The X25519 public key that goes with it. */
    readonly x25519Public: Uint8Array,
    /** The hybrid KEM's ML-KEM-768 decapsulation key and prepared encapsulation key. */
    readonly mlkem?: { decapsulationKey: Uint8Array; prepared: KEMPrepared },
  ) {
    super(name, raw, "private", ["deriveBits"]);
  }
}

function publicKeyBytes(k: CryptoKey, name: string, size: number): Uint8Array {
  if (!(k instanceof XCryptoKey) || k.type !== publicKind || k.algorithm.name !== name || k.key.length !== size) throw new Error(`not a ${name} public key`);
  return k.key;
}

function privateKey(k: CryptoKey | CryptoKeyPair, name: string): PrivateKemKey {
  const key = "privateKey" in k ? k.privateKey : k;
  if (!(key instanceof PrivateKemKey) || key.algorithm.name !== name) throw new Error(`not a ${name} private key`);
  return key;
}

const dhkemName = "X25519";
const dhkemSuiteId = concat(utf8Bytes("KEM"), u16(KemId.DhkemX25519HkdfSha256));
const labelEaePrk = utf8Bytes("eae_prk");
const labelSharedSecret = utf8Bytes("shared_secret");
const labelDkpPrk = utf8Bytes("dkp_prk");
const labelSk = utf8Bytes("sk");

/** DhkemX25519 is DHKEM(X25519, HKDF-SHA256) of RFC 9180 section 4.1, base mode, as an @hpke/core KEM. */
class DhkemX25519 implements KemInterface {
  readonly id = KemId.DhkemX25519HkdfSha256;
  readonly secretSize = 32;
  readonly encSize = 32;
  readonly publicKeySize = 32;
  readonly privateKeySize = 32;
  readonly #kdf = new HkdfSha256Sync();

  constructor() {
    this.#kdf.init(dhkemSuiteId);
  }

  async #extractAndExpand(dh: Uint8Array, kemContext: Uint8Array): Promise<ArrayBuffer> {
    const prk = await this.#kdf.labeledExtract(empty, labelEaePrk, dh);
    return this.#kdf.labeledExpand(prk, labelSharedSecret, kemContext, this.secretSize);
  }

  /** deriveSecret is DeriveKeyPair(ikm)'s private key (RFC 9180 section 7.1.3), unclamped. */
  async deriveSecret(ikm: Uint8Array): Promise<Uint8Array> {
    const prk = await this.#kdf.labeledExtract(empty, labelDkpPrk, ikm);
    return new Uint8Array(await this.#kdf.labeledExpand(prk, labelSk, empty, this.privateKeySize));
  }

  async encap(params: { recipientPublicKey: CryptoKey; ekm?: CryptoKeyPair | ArrayBuffer }): Promise<{ sharedSecret: ArrayBuffer; enc: ArrayBuffer }> {
    const pkR = publicKeyBytes(params.recipientPublicKey, dhkemName, this.publicKeySize);
    let eph: { secret: X25519Secret; publicKey: Uint8Array };
    if (params.ekm instanceof ArrayBuffer) {
      // RFC 9180's test vectors fix the ephemeral key through its ikm.
      const sk = await this.deriveSecret(new Uint8Array(params.ekm));
      eph = { secret: await x25519Secret(sk), publicKey: x25519.getPublicKey(sk) };
    } else {
      eph = await x25519Ephemeral();
    }
    const dh = await x25519Shared(eph.secret, pkR);
    return { sharedSecret: await this.#extractAndExpand(dh, concat(eph.publicKey, pkR)), enc: buffer(eph.publicKey) };
  }

  async decap(params: { recipientKey: CryptoKey | CryptoKeyPair; enc: ArrayBufferLike | ArrayBufferView }): Promise<ArrayBuffer> {
    const sk = privateKey(params.recipientKey, dhkemName);
    const enc = bytesOf(params.enc);
    if (enc.length !== this.encSize) throw new Error(`enc of ${enc.length} bytes`);
    const dh = await x25519Shared(sk.x25519, enc);
    return this.#extractAndExpand(dh, concat(enc, sk.x25519Public));
  }

  async serializePublicKey(key: CryptoKey): Promise<ArrayBuffer> {
    return buffer(publicKeyBytes(key, dhkemName, this.publicKeySize));
  }
  async deserializePublicKey(key: ArrayBufferLike | ArrayBufferView): Promise<CryptoKey> {
    const b = bytesOf(key);
    if (b.length !== this.publicKeySize) throw new Error(`public key of ${b.length} bytes`);
    return new XCryptoKey(dhkemName, copyBytes(b), publicKind);
  }
  async serializePrivateKey(key: CryptoKey): Promise<ArrayBuffer> {
    return buffer(privateKey(key, dhkemName).key);
  }
  async deserializePrivateKey(key: ArrayBufferLike | ArrayBufferView): Promise<CryptoKey> {
    const b = copyBytes(bytesOf(key));
    if (b.length !== this.privateKeySize) throw new Error(`private key of ${b.length} bytes`);
    return new PrivateKemKey(dhkemName, b, await x25519Secret(b), x25519.getPublicKey(b));
  }
  async importKey(format: "raw" | "jwk", key: ArrayBuffer | JsonWebKey, isPublic = true): Promise<CryptoKey> {
    if (format !== "raw" || !(key instanceof ArrayBuffer || ArrayBuffer.isView(key))) throw new Error("raw keys only");
    return isPublic ? this.deserializePublicKey(key) : this.deserializePrivateKey(key);
  }
  async generateKeyPair(): Promise<CryptoKeyPair> {
    return this.deriveKeyPair(x25519.utils.randomSecretKey());
  }
  async deriveKeyPair(ikm: ArrayBufferLike | ArrayBufferView): Promise<CryptoKeyPair> {
    const sk = await this.deriveSecret(bytesOf(ikm));
    return { privateKey: await this.deserializePrivateKey(sk), publicKey: await this.deserializePublicKey(x25519.getPublicKey(sk)) };
  }
}

const xwingName = "MLKEM768-X25519";
/** X-Wing's combiner label, the six bytes \.//^\ (draft-connolly-cfrg-xwing-kem). */
const xwingLabel = utf8Bytes("\\.//^\\");
const mlkemPublicKeySize = 1184;
const mlkemCiphertextSize = 1088;

/** The DeriveKeyPair suffix of MLKEM768-X25519: "HPKE-v1" ‖ suite_id ‖ u16(13) ‖ "DeriveKeyPair" ‖ u16(32). */
const xwingDeriveSuffix = concat(utf8Bytes("HPKE-v1"), utf8Bytes("KEM"), u16(0x647a), u16(13), utf8Bytes("DeriveKeyPair"), u16(32));

/** xwingDeriveSeed is MLKEM768-X25519's DeriveKeyPair(ikm): the 32-byte private key. */
export function xwingDeriveSeed(ikm: Uint8Array): Uint8Array {
  return shake256(concat(ikm, xwingDeriveSuffix), { dkLen: 32 });
}

// The prepared ML-KEM-768 keys of the last cards encrypted to, most recently used
// last: about 13 KB each.
const maxPreparedPublic = 512;
const preparedPublicKeys = new Map<string, KEMPrepared>();

/** preparedPublic returns the prepared ML-KEM-768 encapsulation key ek (1,184 bytes). */
function preparedPublic(ek: Uint8Array): KEMPrepared {
  const id = toHex(ek.subarray(0, 32)) + toHex(ek.subarray(ek.length - 32));
  let p = preparedPublicKeys.get(id);
  if (p !== undefined && equalBytes(p.publicKey, ek)) {
    preparedPublicKeys.delete(id);
  } else {
    p = ml_kem768.prepare(ek);
    if (preparedPublicKeys.size >= maxPreparedPublic) preparedPublicKeys.delete(preparedPublicKeys.keys().next().value!);
  }
  preparedPublicKeys.set(id, p);
  return p;
}

/**
 * XWing is MLKEM768-X25519 (draft-ietf-hpke-pq-03; X-Wing, draft-connolly-cfrg-xwing-kem)
 * as an @hpke/core KEM: the private key is a 32-byte seed, expanded with SHAKE256 into
 * ML-KEM-768's (d, z) and an X25519 scalar; the shared secret is
 * SHA3-256(ss_M ‖ ss_X ‖ ct_X ‖ pk_X ‖ label), which the key schedule takes as it is.
 */
class XWing implements KemInterface {
  readonly id = KemId.XWing;
  readonly secretSize = 32;
  readonly encSize = 1120;
  readonly publicKeySize = 1216;
  readonly privateKeySize = 32;

  async encap(params: { recipientPublicKey: CryptoKey; ekm?: CryptoKeyPair | ArrayBuffer }): Promise<{ sharedSecret: ArrayBuffer; enc: ArrayBuffer }> {
    const pk = publicKeyBytes(params.recipientPublicKey, xwingName, this.publicKeySize);
    const pkX = pk.subarray(mlkemPublicKeySize);
    let eseed: Uint8Array | undefined;
    if (params.ekm !== undefined) {
      // Fixed randomness, for tests only: ML-KEM's message ‖ the ephemeral X25519 key.
      if (!(params.ekm instanceof ArrayBuffer) || params.ekm.byteLength !== 64) throw new Error("ekm: 64 bytes of randomness");
      eseed = new Uint8Array(params.ekm);
    }
    // The X25519 half starts first: on WebCrypto it runs beside ML-KEM (on Node's
    // crypto module and @noble it is done before ML-KEM starts).
    const ephemeral =
      eseed === undefined
        ? x25519Ephemeral()
        : x25519Secret(eseed.subarray(32)).then((secret) => ({ secret, publicKey: x25519.getPublicKey(eseed.subarray(32)) }));
    const shared = ephemeral.then((e) => x25519Shared(e.secret, pkX));
    shared.catch(() => {}); // awaited below, after ML-KEM
    const m = preparedPublic(pk.subarray(0, mlkemPublicKeySize)).encapsulate(eseed?.subarray(0, 32));
    const ctX = (await ephemeral).publicKey;
    const ssX = await shared;
    return {
      sharedSecret: buffer(sha3_256(concat(m.sharedSecret, ssX, ctX, pkX, xwingLabel))),
      enc: buffer(concat(m.cipherText, ctX)),
    };
  }

  async decap(params: { recipientKey: CryptoKey | CryptoKeyPair; enc: ArrayBufferLike | ArrayBufferView }): Promise<ArrayBuffer> {
    const sk = privateKey(params.recipientKey, xwingName);
    const enc = bytesOf(params.enc);
    if (enc.length !== this.encSize) throw new Error(`enc of ${enc.length} bytes`);
    const ctX = enc.subarray(mlkemCiphertextSize);
    const shared = x25519Shared(sk.x25519, ctX);
    shared.catch(() => {}); // awaited below, after ML-KEM
    const ssM = sk.mlkem!.prepared.decapsulate(enc.subarray(0, mlkemCiphertextSize), sk.mlkem!.decapsulationKey);
    const ssX = await shared;
    return buffer(sha3_256(concat(ssM, ssX, ctX, sk.x25519Public, xwingLabel)));
  }

  async serializePublicKey(key: CryptoKey): Promise<ArrayBuffer> {
    return buffer(publicKeyBytes(key, xwingName, this.publicKeySize));
  }
  async deserializePublicKey(key: ArrayBufferLike | ArrayBufferView): Promise<CryptoKey> {
    const b = bytesOf(key);
    if (b.length !== this.publicKeySize) throw new Error(`public key of ${b.length} bytes`);
    return new XCryptoKey(xwingName, copyBytes(b), publicKind);
  }
  async serializePrivateKey(key: CryptoKey): Promise<ArrayBuffer> {
    return buffer(privateKey(key, xwingName).key);
  }
  async deserializePrivateKey(key: ArrayBufferLike | ArrayBufferView): Promise<CryptoKey> {
    const seed = copyBytes(bytesOf(key));
    if (seed.length !== this.privateKeySize) throw new Error(`private key of ${seed.length} bytes`);
    // X-Wing's key expansion: SHAKE256(seed, 96) = ML-KEM-768 (d ‖ z) ‖ X25519 scalar.
    const expanded = shake256(seed, { dkLen: 96 });
    const mk = ml_kem768.keygen(expanded.subarray(0, 64));
    const skX = expanded.subarray(64);
    const key_ = new PrivateKemKey(xwingName, seed, await x25519Secret(skX), x25519.getPublicKey(skX), {
      decapsulationKey: mk.secretKey,
      prepared: ml_kem768.prepare(mk.publicKey),
    });
    expanded.fill(0);
    return key_;
  }
  async importKey(format: "raw" | "jwk", key: ArrayBuffer | JsonWebKey, isPublic = true): Promise<CryptoKey> {
    if (format !== "raw" || !(key instanceof ArrayBuffer || ArrayBuffer.isView(key))) throw new Error("raw keys only");
    return isPublic ? this.deserializePublicKey(key) : this.deserializePrivateKey(key);
  }
  async generateKeyPair(): Promise<CryptoKeyPair> {
    return this.deriveKeyPair(ml_kem768_x25519.keygen().secretKey);
  }
  async deriveKeyPair(seed: ArrayBufferLike | ArrayBufferView): Promise<CryptoKeyPair> {
    const s = bytesOf(seed);
    return { privateKey: await this.deserializePrivateKey(s), publicKey: await this.deserializePublicKey(ml_kem768_x25519.getPublicKey(s)) };
  }
}

const dhkem = new DhkemX25519();
let suites: Map<Suite, CipherSuite> | undefined;

function cipherSuite(suite: Suite): CipherSuite {
  suites ??= new Map([
    [Suite.MLKEM768_X25519, new CipherSuite({ kem: new XWing(), kdf: new HkdfSha256Sync(), aead: new Chacha20Poly1305() })],
    [Suite.X25519, new CipherSuite({ kem: dhkem, kdf: new HkdfSha256Sync(), aead: new Chacha20Poly1305() })],
  ]);
  const s = suites.get(suite);
  if (s === undefined) throw e2eeError(E2eeErrorKind.UnknownSuite, `suite ${suite}`);
  return s;
}

// The prepared private keys of key pairs, by the key pair's KEM private key bytes
// (the Uint8Array a KeyPair holds): expanded on first use, dropped with the key pair.
const preparedPrivateKeys = new WeakMap<Uint8Array, Promise<CryptoKey>>();

function preparedPrivate(suite: Suite, privateKey: Uint8Array): Promise<CryptoKey> {
  let p = preparedPrivateKeys.get(privateKey);
  if (p === undefined) {
    p = cipherSuite(suite).kem.deserializePrivateKey(privateKey);
    p.catch(() => preparedPrivateKeys.delete(privateKey));
    preparedPrivateKeys.set(privateKey, p);
  }
  return p;
}

/**
 * HpkeTestOptions are for test vectors only: ekm fixes the KEM's randomness (the ikm of
 * the ephemeral key for X25519, 64 bytes of randomness for the hybrid KEM), aad is
 * the Seal's associated data (empty in every wrap of the wire format).
 */
export interface HpkeTestOptions {
  ekm?: Uint8Array;
  aad?: Uint8Array;
}

/** hpkeSeal wraps plaintext to the KEM public key of suite: one base-mode Seal with info and empty aad. */
export async function hpkeSeal(suite: Suite, publicKey: Uint8Array, info: Uint8Array, plaintext: Uint8Array, test: HpkeTestOptions = {}): Promise<{ enc: Uint8Array; ciphertext: Uint8Array }> {
  const s = cipherSuite(suite);
  const recipientPublicKey = await s.kem.deserializePublicKey(publicKey);
  const ekm = test.ekm === undefined ? undefined : buffer(copyBytes(test.ekm));
  const { ct, enc } = await s.seal({ recipientPublicKey, info, ...(ekm === undefined ? {} : { ekm }) }, plaintext, test.aad);
  return { enc: new Uint8Array(enc), ciphertext: new Uint8Array(ct) };
}

/**
 * hpkeOpen opens a base-mode single-shot wrap with the KEM private key of suite; it
 * throws on any failure. The key's expansion is kept for the next call with the same
 * privateKey object (a KeyPair's kemPrivateKey).
 */
export async function hpkeOpen(suite: Suite, privateKey: Uint8Array, enc: Uint8Array, info: Uint8Array, ciphertext: Uint8Array, aad: Uint8Array = empty): Promise<Uint8Array> {
  const s = cipherSuite(suite);
  if (privateKey.length !== params(suite).privateKeyLength) throw new Error(`private key of ${privateKey.length} bytes`);
  const recipientKey = await preparedPrivate(suite, privateKey);
  return new Uint8Array(await s.open({ recipientKey, enc, info }, ciphertext, aad));
}

/** kemPublicKey returns the serialised KEM public key of a serialised private key of suite. */
export function kemPublicKey(suite: Suite, privateKey: Uint8Array): Uint8Array {
  if (privateKey.length !== params(suite).privateKeyLength) {
    throw e2eeError(E2eeErrorKind.Malformed, `KEM private key of ${privateKey.length} bytes; want 32`);
  }
  try {
    return suite === Suite.X25519 ? x25519.getPublicKey(privateKey) : ml_kem768_x25519.getPublicKey(privateKey);
  } catch (err) {
    throw e2eeError(E2eeErrorKind.Malformed, `KEM private key: ${(err as Error).message}`, err);
  }
}

/** deriveKemPrivateKey is the suite KEM's DeriveKeyPair(ikm) (RFC 9180 §7.1.3, or section 3's for the hybrid KEM), serialised. */
export async function deriveKemPrivateKey(suite: Suite, ikm: Uint8Array): Promise<Uint8Array> {
  if (suite === Suite.MLKEM768_X25519) return xwingDeriveSeed(ikm);
  params(suite);
  return clampX25519(await dhkem.deriveSecret(ikm));
}

/** generateKemPrivateKey returns a fresh serialised KEM private key of suite. */
export function generateKemPrivateKey(suite: Suite): Uint8Array {
  params(suite);
  return suite === Suite.X25519 ? clampX25519(x25519.utils.randomSecretKey()) : ml_kem768_x25519.keygen().secretKey;
}

/** clampX25519 returns k clamped as RFC 9180's SerializePrivateKey writes an X25519 key. */
export function clampX25519(k: Uint8Array): Uint8Array {
  const out = copyBytes(k);
  out[0]! &= 248;
  out[31]! &= 127;
  out[31]! |= 64;
  return out;
}
