// What a client needs to decide trust in cards itself (docs/wire-format.md, 5.4–5.6):
// safety numbers, and the card service's signed key rotations (pkg/e2ee trust.go).
import { sha512 } from "@noble/hashes/sha2.js";
import { copyBytes, labelled, str, u16, unixSeconds, utf8Bytes } from "./bytes.js";
import { E2eeErrorKind, e2eeError } from "./errors.js";
import { ServiceKeyRotationContentSchema } from "./gen/umbra/envelope/v1/envelope_pb.js";
import { LabelCardServiceKeyRotation, LabelSafetyNumber } from "./labels.js";
import { encode, parseStrict } from "./proto.js";
import { checkSigningPublicKey, sign, verifySignature } from "./pubkey.js";

/** The version and iteration count of the safety-number derivation. */
export const SafetyNumberVersion = 1;
export const SafetyNumberIterations = 5200;
/** MaxServiceKeyRotationSize bounds a ServiceKeyRotationContent. */
export const MaxServiceKeyRotationSize = 256;

/**
 * safetyNumber returns the safety number of two identities, each with the signing key
 * of its current card: 60 digits in 12 groups of 5, the same from either side.
 */
export function safetyNumber(identityA: string, keyA: Uint8Array, identityB: string, keyB: Uint8Array): string {
  let a = safetyNumberHalf(identityA, keyA);
  let b = safetyNumberHalf(identityB, keyB);
  if (identityA === identityB) throw e2eeError(E2eeErrorKind.Malformed, `a safety number is between two identities; both are ${identityA}`);
  if (b < a) [a, b] = [b, a];
  return (a + b).match(/.{5}/g)!.join(" ");
}

/**
 * safetyNumberHalf returns one side's 30 digits: h = SHA-512(LABEL("umbra/v1/safety-number")
 * ‖ u16(1) ‖ str(identity) ‖ key), then 5,200 times h = SHA-512(h ‖ key); six
 * big-endian 40-bit numbers from h, each mod 100000 as 5 digits.
 */
export function safetyNumberHalf(identity: string, key: Uint8Array): string {
  const id = utf8Bytes(identity);
  if (id.length === 0 || id.length > 0xffff) throw e2eeError(E2eeErrorKind.Malformed, `safety number: identity of ${id.length} bytes`);
  checkSigningPublicKey(key, "safety number signing key");
  let h = sha512(labelled(LabelSafetyNumber, u16(SafetyNumberVersion), str(id), key));
  const buf = new Uint8Array(64 + 32);
  buf.set(key, 64);
  for (let i = 0; i < SafetyNumberIterations; i++) {
    buf.set(h, 0);
    h = sha512(buf);
  }
  let out = "";
  for (let i = 0; i < 6; i++) {
    let n = 0n;
    for (let j = 0; j < 5; j++) n = (n << 8n) | BigInt(h[i * 5 + j]!);
    out += (n % 100000n).toString().padStart(5, "0");
  }
  return out;
}

/** ServiceKeyRotation is a statement of the card service that newKeyId replaced previousKeyId at createdAtUnixSeconds. */
export interface ServiceKeyRotation {
  /** The exact ServiceKeyRotationContent bytes; signature signs them (empty until verified). */
  readonly content: Uint8Array;
  readonly signature: Uint8Array;
  readonly previousKeyId: string;
  readonly newKeyId: string;
  readonly newPublicKey: Uint8Array;
  readonly createdAtUnixSeconds: bigint;
}

/** parseServiceKeyRotation reads a rotation statement without verifying its signature. */
export function parseServiceKeyRotation(content: Uint8Array): ServiceKeyRotation {
  if (content.length > MaxServiceKeyRotationSize) {
    throw e2eeError(E2eeErrorKind.TooLarge, `service key rotation is ${content.length} bytes; at most ${MaxServiceKeyRotationSize}`);
  }
  const m = parseStrict(ServiceKeyRotationContentSchema, content, "service key rotation");
  const prevLen = utf8Bytes(m.previousKeyId).length;
  const newLen = utf8Bytes(m.newKeyId).length;
  if (m.version !== 1) throw e2eeError(E2eeErrorKind.Malformed, `service key rotation version ${m.version}; this client reads version 1`);
  if (prevLen === 0 || newLen === 0 || prevLen > 64 || newLen > 64) {
    throw e2eeError(E2eeErrorKind.Malformed, "service key rotation key ids must be 1 to 64 bytes");
  }
  if (m.previousKeyId === m.newKeyId) throw e2eeError(E2eeErrorKind.Malformed, `service key rotation replaces key ${JSON.stringify(m.newKeyId)} by itself`);
  if (m.createdAtUnixSeconds <= 0n) throw e2eeError(E2eeErrorKind.Malformed, "service key rotation has no creation time");
  checkSigningPublicKey(m.newPublicKey, "service key rotation's new key");
  return {
    content: copyBytes(content),
    signature: new Uint8Array(0),
    previousKeyId: m.previousKeyId,
    newKeyId: m.newKeyId,
    newPublicKey: copyBytes(m.newPublicKey),
    createdAtUnixSeconds: m.createdAtUnixSeconds,
  };
}

/** verifyServiceKeyRotation checks a rotation statement against the key it says it replaces: previous, with id previousKeyId. */
export function verifyServiceKeyRotation(previousKeyId: string, previous: Uint8Array, content: Uint8Array, signature: Uint8Array): ServiceKeyRotation {
  const r = parseServiceKeyRotation(content);
  if (r.previousKeyId !== previousKeyId) {
    throw e2eeError(E2eeErrorKind.Malformed, `service key rotation replaces key ${JSON.stringify(r.previousKeyId)}, not ${JSON.stringify(previousKeyId)}`);
  }
  if (signature.length !== 64) throw e2eeError(E2eeErrorKind.Malformed, `service key rotation signature is ${signature.length} bytes; want 64`);
  if (previous.length !== 32 || !verifySignature(previous, labelled(LabelCardServiceKeyRotation, content), signature)) {
    throw e2eeError(E2eeErrorKind.BadSignature, `service key rotation to ${JSON.stringify(r.newKeyId)} does not verify with the previous key ${JSON.stringify(previousKeyId)}`);
  }
  return { ...r, signature: copyBytes(signature) };
}

/** signServiceKeyRotation is the card service's rotation statement, signed with the previous key's 32-byte seed (tests and tools). */
export function signServiceKeyRotation(previousSeed: Uint8Array, previousKeyId: string, newKeyId: string, newKey: Uint8Array, createdAt: Date): { content: Uint8Array; signature: Uint8Array } {
  const content = encode(ServiceKeyRotationContentSchema, {
    version: 1,
    previousKeyId,
    newKeyId,
    newPublicKey: newKey,
    createdAtUnixSeconds: unixSeconds(createdAt),
  });
  parseServiceKeyRotation(content);
  return { content, signature: sign(previousSeed, labelled(LabelCardServiceKeyRotation, content)) };
}
