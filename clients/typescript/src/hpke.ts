// HPKE (RFC 9180, base mode, single-shot) for the two suites of docs/wire-format.md
// section 3. The key schedule, the AEAD and DHKEM(X25519, HKDF-SHA256) come from the
// @hpke packages; the hybrid KEM MLKEM768-X25519 ("X-Wing", KEM id 0x647A) is
// @noble/post-quantum's ml_kem768_x25519, adapted here to @hpke/core's KEM interface
// (its key schedule uses the shared secret as it is: no ExtractAndExpand).
import { CipherSuite, HkdfSha256, type KemInterface } from "@hpke/core";
import { Chacha20Poly1305 } from "@hpke/chacha20poly1305";
import { DhkemX25519HkdfSha256 } from "@hpke/dhkem-x25519";
import { KemId, XCryptoKey } from "@hpke/common";
import { ml_kem768_x25519 } from "@noble/post-quantum/hybrid.js";
import { x25519 } from "@noble/curves/ed25519.js";
import { shake256 } from "@noble/hashes/sha3.js";
import { concat, copyBytes, u16, utf8Bytes } from "./bytes.js";
import { Suite } from "./gen/umbra/envelope/v1/envelope_pb.js";
import { E2eeErrorKind, e2eeError } from "./errors.js";

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

const xwingName = "MLKEM768-X25519";
const kemUsages: KeyUsage[] = ["deriveBits"];

function bytesOf(k: ArrayBufferLike | ArrayBufferView): Uint8Array {
  return ArrayBuffer.isView(k) ? new Uint8Array(k.buffer, k.byteOffset, k.byteLength) : new Uint8Array(k);
}

function keyBytes(k: CryptoKey | CryptoKeyPair): Uint8Array {
  const key = "privateKey" in k ? k.privateKey : k;
  if (!(key instanceof XCryptoKey) || key.algorithm.name !== xwingName) throw new Error("not an MLKEM768-X25519 key");
  return key.key;
}

function buffer(b: Uint8Array): ArrayBuffer {
  return b.byteOffset === 0 && b.byteLength === b.buffer.byteLength && b.buffer instanceof ArrayBuffer
    ? b.buffer
    : (copyBytes(b).buffer as ArrayBuffer);
}

/** The DeriveKeyPair suffix of MLKEM768-X25519: "HPKE-v1" ‖ suite_id ‖ u16(13) ‖ "DeriveKeyPair" ‖ u16(32). */
const xwingDeriveSuffix = concat(utf8Bytes("HPKE-v1"), utf8Bytes("KEM"), u16(0x647a), u16(13), utf8Bytes("DeriveKeyPair"), u16(32));

/** xwingDeriveSeed is MLKEM768-X25519's DeriveKeyPair(ikm): the 32-byte private key. */
export function xwingDeriveSeed(ikm: Uint8Array): Uint8Array {
  return shake256(concat(ikm, xwingDeriveSuffix), { dkLen: 32 });
}

/** XWing is MLKEM768-X25519 (draft-ietf-hpke-pq-03) over @noble/post-quantum, as an @hpke/core KEM. */
class XWing implements KemInterface {
  readonly id = KemId.XWing;
  readonly secretSize = 32;
  readonly encSize = 1120;
  readonly publicKeySize = 1216;
  readonly privateKeySize = 32;

  async serializePublicKey(key: CryptoKey): Promise<ArrayBuffer> {
    return buffer(keyBytes(key));
  }
  async deserializePublicKey(key: ArrayBufferLike | ArrayBufferView): Promise<CryptoKey> {
    const b = bytesOf(key);
    if (b.length !== this.publicKeySize) throw new Error(`public key of ${b.length} bytes`);
    return new XCryptoKey(xwingName, copyBytes(b), "public");
  }
  async serializePrivateKey(key: CryptoKey): Promise<ArrayBuffer> {
    return buffer(keyBytes(key));
  }
  async deserializePrivateKey(key: ArrayBufferLike | ArrayBufferView): Promise<CryptoKey> {
    const b = bytesOf(key);
    if (b.length !== this.privateKeySize) throw new Error(`private key of ${b.length} bytes`);
    return new XCryptoKey(xwingName, copyBytes(b), "private", kemUsages);
  }
  async importKey(format: "raw" | "jwk", key: ArrayBuffer | JsonWebKey, isPublic = true): Promise<CryptoKey> {
    if (format !== "raw" || !(key instanceof ArrayBuffer || ArrayBuffer.isView(key))) throw new Error("raw keys only");
    return isPublic ? this.deserializePublicKey(key) : this.deserializePrivateKey(key);
  }
  async generateKeyPair(): Promise<CryptoKeyPair> {
    const { secretKey, publicKey } = ml_kem768_x25519.keygen();
    return { privateKey: await this.deserializePrivateKey(secretKey), publicKey: await this.deserializePublicKey(publicKey) };
  }
  async deriveKeyPair(ikm: ArrayBufferLike | ArrayBufferView): Promise<CryptoKeyPair> {
    const seed = xwingDeriveSeed(bytesOf(ikm));
    return {
      privateKey: await this.deserializePrivateKey(seed),
      publicKey: await this.deserializePublicKey(ml_kem768_x25519.getPublicKey(seed)),
    };
  }
  async encap(params: { recipientPublicKey: CryptoKey }): Promise<{ sharedSecret: ArrayBuffer; enc: ArrayBuffer }> {
    const { sharedSecret, cipherText } = ml_kem768_x25519.encapsulate(keyBytes(params.recipientPublicKey));
    return { sharedSecret: buffer(sharedSecret), enc: buffer(cipherText) };
  }
  async decap(params: { recipientKey: CryptoKey | CryptoKeyPair; enc: ArrayBufferLike | ArrayBufferView }): Promise<ArrayBuffer> {
    const enc = bytesOf(params.enc);
    if (enc.length !== this.encSize) throw new Error(`enc of ${enc.length} bytes`);
    return buffer(ml_kem768_x25519.decapsulate(enc, keyBytes(params.recipientKey)));
  }
}

let suites: Map<Suite, CipherSuite> | undefined;

function cipherSuite(suite: Suite): CipherSuite {
  suites ??= new Map([
    [Suite.MLKEM768_X25519, new CipherSuite({ kem: new XWing(), kdf: new HkdfSha256(), aead: new Chacha20Poly1305() })],
    [Suite.X25519, new CipherSuite({ kem: new DhkemX25519HkdfSha256(), kdf: new HkdfSha256(), aead: new Chacha20Poly1305() })],
  ]);
  const s = suites.get(suite);
  if (s === undefined) throw e2eeError(E2eeErrorKind.UnknownSuite, `suite ${suite}`);
  return s;
}

/** hpkeSeal wraps plaintext to the KEM public key of suite: one base-mode Seal with info and empty aad. */
export async function hpkeSeal(suite: Suite, publicKey: Uint8Array, info: Uint8Array, plaintext: Uint8Array): Promise<{ enc: Uint8Array; ciphertext: Uint8Array }> {
  const s = cipherSuite(suite);
  const recipientPublicKey = await s.kem.deserializePublicKey(publicKey);
  const { ct, enc } = await s.seal({ recipientPublicKey, info }, plaintext);
  return { enc: new Uint8Array(enc), ciphertext: new Uint8Array(ct) };
}

/** hpkeOpen opens a base-mode single-shot wrap with the KEM private key of suite; it throws on any failure. */
export async function hpkeOpen(suite: Suite, privateKey: Uint8Array, enc: Uint8Array, info: Uint8Array, ciphertext: Uint8Array): Promise<Uint8Array> {
  const s = cipherSuite(suite);
  const recipientKey = await s.kem.deserializePrivateKey(privateKey);
  return new Uint8Array(await s.open({ recipientKey, enc, info }, ciphertext));
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
  const s = cipherSuite(suite);
  const kp = await s.kem.deriveKeyPair(ikm);
  return clampX25519(new Uint8Array(await s.kem.serializePrivateKey(kp.privateKey)));
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
