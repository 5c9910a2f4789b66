// Cards (docs/wire-format.md, section 5): the exact content bytes of a CardContent,
// its self-signature, the card service's counter-signature and rotation endorsements.
import { E2eeErrorKind, e2eeError } from "./errors.js";
import { copyBytes, equalBytes, labelled, sha, unixSeconds } from "./bytes.js";
import { CardContentSchema, RotationEndorsementContentSchema } from "./gen/umbra/envelope/v1/envelope_pb.js";
import { Suite, params } from "./hpke.js";
import { userIdentityProblem } from "./ident.js";
import type { KeyPair } from "./keys.js";
import { LabelCardRotationEndorsement, LabelCardSelfSignature, LabelCardServiceSignature } from "./labels.js";
import { encode, parseStrict } from "./proto.js";
import { checkMlKemEncapsulationKey, checkSigningPublicKey, checkX25519PublicKey, sign, verifySignature, verifySignatureAsync } from "./pubkey.js";

/** Size limits of the signed card structures. */
export const MaxCardContentSize = 4096;
export const MaxEndorsementSize = 256;
/** CardIdSize is the size of a card id: a SHA-256. */
export const CardIdSize = 32;

/** Card is a card whose content parsed and whose self-signature verified. */
export interface Card {
  /** SHA-256 of content. */
  readonly id: Uint8Array;
  /** The exact CardContent bytes; selfSignature signs them. */
  readonly content: Uint8Array;
  readonly selfSignature: Uint8Array;
  readonly identity: string;
  readonly signingKey: Uint8Array;
  readonly suite: Suite;
  readonly kemPublicKey: Uint8Array;
  readonly createdAtUnixSeconds: bigint;
  /** The id of the card this one replaces, or undefined for none. */
  readonly previousCardId: Uint8Array | undefined;
}

/** cardId returns the id of a card with these content bytes. */
export function cardId(content: Uint8Array): Uint8Array {
  return sha(content);
}

/**
 * newCard encodes the content of a card of identity for kp and signs it. previous is the
 * id of the card it replaces, or undefined for a first card.
 */
export function newCard(kp: KeyPair, identity: string, createdAt: Date, previous?: Uint8Array): { content: Uint8Array; selfSignature: Uint8Array } {
  const content = encode(CardContentSchema, {
    version: 1,
    identity,
    signingPublicKey: kp.signingPublicKey,
    suite: kp.suite,
    kemPublicKey: kp.kemPublicKey,
    createdAtUnixSeconds: unixSeconds(createdAt),
    previousCardId: previous ?? new Uint8Array(0),
  });
  parseCardContent(content); // the caller gave a bad identity or previous id
  return { content, selfSignature: kp.sign(labelled(LabelCardSelfSignature, content)) };
}

/**
 * parseCard checks everything a card says about itself, in the order of section 5.1:
 * size, canonical encoding, version, identity, key sizes and checks, a known suite, and
 * the self-signature over the exact content bytes.
 */
export function parseCard(content: Uint8Array, selfSignature: Uint8Array): Card {
  const c = parseCardContent(content);
  if (selfSignature.length !== 64) {
    throw e2eeError(E2eeErrorKind.Malformed, `card self-signature is ${selfSignature.length} bytes; want 64`);
  }
  if (!verifySignature(c.signingKey, labelled(LabelCardSelfSignature, content), selfSignature)) {
    throw e2eeError(E2eeErrorKind.BadSignature, "card self-signature does not verify");
  }
  return { ...c, selfSignature: copyBytes(selfSignature) };
}

/** parseCardAsync is parseCard with verifySignatureAsync: the same checks and answers, faster. */
export async function parseCardAsync(content: Uint8Array, selfSignature: Uint8Array): Promise<Card> {
  const c = parseCardContent(content);
  if (selfSignature.length !== 64) {
    throw e2eeError(E2eeErrorKind.Malformed, `card self-signature is ${selfSignature.length} bytes; want 64`);
  }
  if (!(await verifySignatureAsync(c.signingKey, labelled(LabelCardSelfSignature, content), selfSignature))) {
    throw e2eeError(E2eeErrorKind.BadSignature, "card self-signature does not verify");
  }
  return { ...c, selfSignature: copyBytes(selfSignature) };
}

function parseCardContent(content: Uint8Array): Card {
  if (content.length > MaxCardContentSize) {
    throw e2eeError(E2eeErrorKind.TooLarge, `card content is ${content.length} bytes; at most ${MaxCardContentSize}`);
  }
  const m = parseStrict(CardContentSchema, content, "card content");
  if (m.version !== 1) throw e2eeError(E2eeErrorKind.Malformed, `card content version ${m.version}; this client reads version 1`);
  if (m.signingPublicKey.length !== 32) {
    throw e2eeError(E2eeErrorKind.Malformed, `card signing key is ${m.signingPublicKey.length} bytes; want 32`);
  }
  if (m.createdAtUnixSeconds <= 0n) throw e2eeError(E2eeErrorKind.Malformed, "card has no creation time");
  if (m.previousCardId.length !== 0 && m.previousCardId.length !== CardIdSize) {
    throw e2eeError(E2eeErrorKind.Malformed, `card previous_card_id is ${m.previousCardId.length} bytes; want 32 or none`);
  }
  const problem = userIdentityProblem(m.identity);
  if (problem !== undefined) throw e2eeError(E2eeErrorKind.Malformed, `card identity ${problem}`);
  checkSigningPublicKey(m.signingPublicKey, "card signing key");
  const p = params(m.suite);
  if (m.kemPublicKey.length !== p.publicKeyLength) {
    throw e2eeError(E2eeErrorKind.Malformed, `card KEM key is ${m.kemPublicKey.length} bytes; suite ${Suite[m.suite]} wants ${p.publicKeyLength}`);
  }
  if (m.suite === Suite.X25519) {
    checkX25519PublicKey("card KEM key", m.kemPublicKey);
  } else {
    checkMlKemEncapsulationKey("card KEM key, ML-KEM-768 half", m.kemPublicKey.subarray(0, 1184));
    checkX25519PublicKey("card KEM key, X25519 half", m.kemPublicKey.subarray(1184));
  }
  const copy = copyBytes(content);
  return {
    id: sha(copy),
    content: copy,
    selfSignature: new Uint8Array(0),
    identity: m.identity,
    signingKey: copyBytes(m.signingPublicKey),
    suite: m.suite,
    kemPublicKey: copyBytes(m.kemPublicKey),
    createdAtUnixSeconds: m.createdAtUnixSeconds,
    previousCardId: m.previousCardId.length === 0 ? undefined : copyBytes(m.previousCardId),
  };
}

/** endorse signs, with the key of the card being replaced, that next replaces it (section 5.2). */
export function endorse(previous: KeyPair, next: Card): { content: Uint8Array; signature: Uint8Array } {
  if (next.previousCardId === undefined || next.previousCardId.length !== CardIdSize) {
    throw e2eeError(E2eeErrorKind.Malformed, "the new card names no previous card to endorse it");
  }
  const content = encode(RotationEndorsementContentSchema, {
    version: 1,
    identity: next.identity,
    previousCardId: next.previousCardId,
    newCardId: next.id,
  });
  return { content, signature: previous.sign(labelled(LabelCardRotationEndorsement, content)) };
}

/** verifyEndorsement checks that previous's key endorsed next as its successor (section 5.2). */
export function verifyEndorsement(previous: Card, next: Card, content: Uint8Array, signature: Uint8Array): void {
  if (content.length > MaxEndorsementSize) {
    throw e2eeError(E2eeErrorKind.TooLarge, `endorsement is ${content.length} bytes; at most ${MaxEndorsementSize}`);
  }
  const m = parseStrict(RotationEndorsementContentSchema, content, "endorsement");
  if (m.version !== 1) throw e2eeError(E2eeErrorKind.Malformed, `endorsement version ${m.version}; this client reads version 1`);
  if (m.identity !== next.identity || previous.identity !== next.identity) {
    throw e2eeError(E2eeErrorKind.Malformed, `endorsement names identity ${JSON.stringify(m.identity)} for cards of ${previous.identity} and ${next.identity}`);
  }
  if (!equalBytes(m.previousCardId, previous.id) || next.previousCardId === undefined || !equalBytes(next.previousCardId, previous.id)) {
    throw e2eeError(E2eeErrorKind.Malformed, "endorsement does not name the previous card");
  }
  if (!equalBytes(m.newCardId, next.id)) throw e2eeError(E2eeErrorKind.Malformed, "endorsement does not name the new card");
  if (signature.length !== 64) throw e2eeError(E2eeErrorKind.Malformed, `endorsement signature is ${signature.length} bytes; want 64`);
  if (!verifySignature(previous.signingKey, labelled(LabelCardRotationEndorsement, content), signature)) {
    throw e2eeError(E2eeErrorKind.BadSignature, "endorsement signature does not verify with the previous card's key");
  }
}

/** serviceSign is the card service's counter-signature over a card id, with its 32-byte Ed25519 seed (tests and tools). */
export function serviceSign(serviceSeed: Uint8Array, id: Uint8Array): Uint8Array {
  return sign(serviceSeed, labelled(LabelCardServiceSignature, id));
}

/** verifyServiceSignature checks the card service's counter-signature over a card id with its key (BadSignature otherwise). */
export function verifyServiceSignature(serviceKey: Uint8Array, id: Uint8Array, signature: Uint8Array): void {
  if (serviceKey.length !== 32 || signature.length !== 64 || !verifySignature(serviceKey, labelled(LabelCardServiceSignature, id), signature)) {
    throw e2eeError(E2eeErrorKind.BadSignature, "card service signature does not verify");
  }
}

/** verifyServiceSignatureAsync is verifyServiceSignature with verifySignatureAsync. */
export async function verifyServiceSignatureAsync(serviceKey: Uint8Array, id: Uint8Array, signature: Uint8Array): Promise<void> {
  if (serviceKey.length !== 32 || signature.length !== 64 || !(await verifySignatureAsync(serviceKey, labelled(LabelCardServiceSignature, id), signature))) {
    throw e2eeError(E2eeErrorKind.BadSignature, "card service signature does not verify");
  }
}
