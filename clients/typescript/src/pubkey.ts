// The checks a card's public keys must pass beyond their length, and Ed25519
// signature verification as docs/wire-format.md section 3 specifies them ("Signatures",
// "Public keys"): the same rules as pkg/e2ee's pubkey.go, so a card or signature that
// one client accepts every other client accepts too.
import { ed25519 } from "@noble/curves/ed25519.js";
import { bytesToNumberLE } from "@noble/curves/utils.js";
import { sha512 } from "@noble/hashes/sha2.js";
import { concat, equalBytes, fromHex, toHex } from "./bytes.js";
import { ed25519Verify, ed25519VerifyPath, ed25519VerifyingKey, type Ed25519Key } from "./platform.js";
import { E2eeErrorKind, e2eeError } from "./errors.js";

/** The field prime p = 2^255 − 19 of Curve25519 and edwards25519. */
const P = (1n << 255n) - 19n;

/** The canonical u-coordinates of X25519 points of small order (curve and twist). */
const smallOrderX25519 = [
  "0000000000000000000000000000000000000000000000000000000000000000",
  "0100000000000000000000000000000000000000000000000000000000000000",
  "ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
  "e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800",
  "5f9c95bca3508c24b1d0b1559c83ef5b04445cc4581c8e86d8224eddd09f1157",
].map(fromHex);

/** The canonical encodings of the eight edwards25519 points whose order divides 8. */
const smallOrderEd25519 = [
  "0100000000000000000000000000000000000000000000000000000000000000",
  "ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
  "0000000000000000000000000000000000000000000000000000000000000000",
  "0000000000000000000000000000000000000000000000000000000000000080",
  "26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc05",
  "26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc85",
  "c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac037a",
  "c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac03fa",
].map(fromHex);

function listed(list: Uint8Array[], b: Uint8Array): boolean {
  return list.some((e) => equalBytes(e, b));
}

/** checkX25519PublicKey checks an X25519 public key: 32 bytes, a canonical u below p, not of small order. */
export function checkX25519PublicKey(what: string, u: Uint8Array): void {
  if (u.length !== 32) throw e2eeError(E2eeErrorKind.Malformed, `${what}: X25519 key of ${u.length} bytes; want 32`);
  if (bytesToNumberLE(u) >= P) {
    throw e2eeError(E2eeErrorKind.Malformed, `${what}: X25519 key is not a canonical u-coordinate (at least 2^255 - 19)`);
  }
  if (listed(smallOrderX25519, u)) throw e2eeError(E2eeErrorKind.Malformed, `${what}: X25519 key is a point of small order`);
}

const smallOrderProblem = "is a point of small order";

/** edwardsProblem says what keeps b from being a canonical edwards25519 point not of small order, or undefined. */
function edwardsProblem(b: Uint8Array): string | undefined {
  try {
    // fromBytes without ZIP-215 is RFC 8032's strict decoding: y below p, x = 0 with
    // the sign bit clear, and x² = (y² − 1)/(d·y² + 1) a square.
    ed25519.Point.fromBytes(b, false);
  } catch {
    const y = bytesToNumberLE(b) & ((1n << 255n) - 1n);
    return y >= P ? "is not canonical: y is at least 2^255 - 19" : "is not a canonical encoding of a point of the curve";
  }
  return listed(smallOrderEd25519, b) ? smallOrderProblem : undefined;
}

/** signingKeyPoint decodes a key that passes checkSigningPublicKey, or returns undefined. */
function signingKeyPoint(pub: Uint8Array): InstanceType<typeof ed25519.Point> | undefined {
  if (pub.length !== 32 || listed(smallOrderEd25519, pub)) return undefined;
  try {
    return ed25519.Point.fromBytes(pub, false);
  } catch {
    return undefined;
  }
}

/** checkSigningPublicKey checks an Ed25519 public key as a card's signing key must be (section 3, "Public keys"). */
export function checkSigningPublicKey(pub: Uint8Array, what = "Ed25519 key"): void {
  if (pub.length !== 32) throw e2eeError(E2eeErrorKind.Malformed, `${what} is ${pub.length} bytes; want 32`);
  const problem = edwardsProblem(pub);
  if (problem !== undefined) throw e2eeError(E2eeErrorKind.Malformed, `${what} ${problem}`);
}

/**
 * checkMlKemEncapsulationKey applies FIPS 203 §7.2's encapsulation key check to the
 * first 1,184 bytes of a hybrid KEM key: each of the 768 12-bit coefficients read from
 * the first 1,152 bytes is below q = 3329.
 */
export function checkMlKemEncapsulationKey(what: string, ek: Uint8Array): void {
  if (ek.length !== 1184) throw e2eeError(E2eeErrorKind.Malformed, `${what}: ML-KEM-768 key of ${ek.length} bytes; want 1184`);
  for (let i = 0; i < 1152; i += 3) {
    const b0 = ek[i]!, b1 = ek[i + 1]!, b2 = ek[i + 2]!;
    if ((b0 | ((b1 & 0x0f) << 8)) >= 3329 || ((b1 >>> 4) | (b2 << 4)) >= 3329) {
      throw e2eeError(E2eeErrorKind.Malformed, `${what}: ML-KEM-768 encapsulation key fails the modulus check`);
    }
  }
}

const L = 2n ** 252n + 27742317777372353535851937790883648493n;

/** The encodings that put the sign bit on x = 0 (y = 1 and y = −1): not canonical. */
const signedZeroX = [
  "0100000000000000000000000000000000000000000000000000000000000080",
  "ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff",
].map(fromHex);

/**
 * signatureRefused applies rules 1 to 3 of section 3, "Signatures": it reports whether
 * sig cannot verify for its length, its S (not below L) or its R (a point of small
 * order, or an encoding that is not canonical, which the byte comparison of rule 5
 * never matches).
 */
function signatureRefused(pub: Uint8Array, sig: Uint8Array): boolean {
  if (pub.length !== 32 || sig.length !== 64) return true;
  const r = sig.subarray(0, 32);
  if (listed(smallOrderEd25519, r) || listed(signedZeroX, r)) return true;
  if ((bytesToNumberLE(r) & ((1n << 255n) - 1n)) >= P) return true;
  return bytesToNumberLE(sig.subarray(32)) >= L;
}

/**
 * verifySignature is Ed25519 verification (RFC 8032, pure) by the rules of section 3,
 * "Signatures": a 64-byte signature whose S is below L, whose R is not a point of
 * small order, and for which the encoding of [S]B − [k]A equals R byte for byte (the
 * cofactorless equation, as Go's crypto/ed25519 and libsodium; noble's verify checks
 * the cofactored one, which accepts more). The key must pass checkSigningPublicKey
 * (every caller's key has, when its card was parsed); one that does not never verifies.
 * verifySignatureAsync gives the same answers, faster.
 */
export function verifySignature(pub: Uint8Array, message: Uint8Array, sig: Uint8Array): boolean {
  if (signatureRefused(pub, sig)) return false;
  const A = signingKeyPoint(pub);
  if (A === undefined) return false;
  const r = sig.subarray(0, 32);
  const s = bytesToNumberLE(sig.subarray(32));
  const k = bytesToNumberLE(sha512(concat(r, pub, message))) % L;
  const sB = s === 0n ? ed25519.Point.ZERO : ed25519.Point.BASE.multiplyUnsafe(s);
  const kA = k === 0n ? ed25519.Point.ZERO : A.multiplyUnsafe(k);
  return equalBytes(sB.subtract(kA).toBytes(), r);
}

// The platform's verifier takes an imported key; importing one, and checking it as
// "Public keys" says, costs about as much as a verification, and the same keys (a
// contact's card, the card service's key) verify many signatures. So the last keys
// used are kept, per path: their check's outcome and their imported key.
const maxVerifyingKeys = 1024;
const verifyingKeys = new Map<string, Promise<Ed25519Key | undefined>>();

function verifyingKey(path: "node" | "webcrypto", pub: Uint8Array): Promise<Ed25519Key | undefined> {
  const id = path + toHex(pub);
  let key = verifyingKeys.get(id);
  if (key !== undefined) {
    verifyingKeys.delete(id); // to the end: the most recently used
  } else {
    key = signingKeyPoint(pub) === undefined ? Promise.resolve(undefined) : ed25519VerifyingKey(path, pub);
    if (verifyingKeys.size >= maxVerifyingKeys) verifyingKeys.delete(verifyingKeys.keys().next().value!);
  }
  verifyingKeys.set(id, key);
  return key;
}

/**
 * verifySignatureAsync is verifySignature, on the platform's crypto where it passed its
 * self-test (platform.ts: Node's crypto module or WebCrypto): rules 1 to 3 and the
 * key's checks are applied here first, so the platform only computes the cofactorless
 * equation of rule 5, which its self-test showed it computes as the rule does.
 */
export async function verifySignatureAsync(pub: Uint8Array, message: Uint8Array, sig: Uint8Array): Promise<boolean> {
  if (signatureRefused(pub, sig)) return false;
  const path = await ed25519VerifyPath();
  if (path === "noble") return verifySignature(pub, message, sig);
  let key: Ed25519Key | undefined;
  try {
    key = await verifyingKey(path, pub);
  } catch {
    verifyingKeys.delete(path + toHex(pub));
    return verifySignature(pub, message, sig);
  }
  return key !== undefined && (await ed25519Verify(key, message, sig));
}

/** sign is Ed25519 (RFC 8032, pure, deterministic) with the 32-byte seed. */
export function sign(seed: Uint8Array, message: Uint8Array): Uint8Array {
  return ed25519.sign(message, seed);
}

/** signingPublicKey returns the Ed25519 public key of a 32-byte seed. */
export function signingPublicKey(seed: Uint8Array): Uint8Array {
  return ed25519.getPublicKey(seed);
}
