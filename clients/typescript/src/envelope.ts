// Multi-recipient envelopes (docs/wire-format.md, section 6): one random content key,
// wrapped with HPKE to each recipient card; one body, the AEAD ciphertext of the
// sender's signed payload with the exact header as associated data (pkg/e2ee envelope.go).
import { Aead, DefaultAead, aeadOpen, aeadSeal, checkAead } from "./aead.js";
import { equalBytes, labelled, randomBytes, sha, toHex, unixSeconds } from "./bytes.js";
import { CardIdSize, type Card } from "./card.js";
import { E2eeError, E2eeErrorKind, e2eeError } from "./errors.js";
import { EnvelopeHeaderSchema, type EnvelopeHeader } from "./gen/umbra/envelope/v1/envelope_pb.js";
import { Suite, hpkeOpen, hpkeSeal, params } from "./hpke.js";
import type { KeyPair } from "./keys.js";
import { LabelEnvelopeKeyWrap, LabelEnvelopeSignature } from "./labels.js";
import { bytesFieldSize, encode, parseBytesPair, parseStrict, putBytesField, putTagLength } from "./proto.js";
import { verifySignature, verifySignatureAsync } from "./pubkey.js";

/** Sizes and limits of an Envelope (section 6.1). */
export const MaxRecipients = 1000;
export const MaxEnvelopeHeaderSize = 2 << 20;
export const MaxPlaintextSize = 64 << 20;
export const MaxEnvelopeSize = MaxEnvelopeHeaderSize + MaxPlaintextSize + 1024;
const contentKeySize = 32;
const nonceSize = 12;
const tagSize = 16;
const wrappedKeySize = contentKeySize + tagSize;

/** KeyLookup returns the key pair of one of our cards by card id (current or superseded), or undefined. */
export type KeyLookup = (cardId: Uint8Array) => KeyPair | undefined;

/** EnvelopeInfo is what an envelope's header says, read without any key. */
export interface EnvelopeInfo {
  readonly senderCardId: Uint8Array;
  readonly recipientCardIds: Uint8Array[];
  readonly recipientSuites: Suite[];
  readonly aead: Aead;
  readonly createdAtUnixSeconds: bigint;
  /** SHA-256 of the exact header bytes, which the signature covers. */
  readonly headerHash: Uint8Array;
}

/** EncryptOptions are Encrypt's choices; the defaults are ChaCha20-Poly1305 and now. */
export interface EncryptOptions {
  aead?: Aead;
  now?: Date;
  /** contentKey and nonce, for test vectors only: fresh random ones otherwise. */
  contentKey?: Uint8Array;
  nonce?: Uint8Array;
}

/** keyWrapInfo is the HPKE info of an envelope's recipient stanza (91 bytes). */
export function keyWrapInfo(senderCardId: Uint8Array, recipientCardId: Uint8Array): Uint8Array {
  return labelled(LabelEnvelopeKeyWrap, senderCardId, recipientCardId);
}

/**
 * checkRecipients refuses recipients that are not distinct cards one can encrypt to,
 * and, with a sender, a card with the sender's card id but another signing key.
 */
export function checkRecipients(recipients: readonly Card[], sender?: KeyPair, senderCardId?: Uint8Array): void {
  const seen = new Set<string>();
  recipients.forEach((r, i) => {
    if (r.id.length !== CardIdSize) throw e2eeError(E2eeErrorKind.Malformed, `recipient ${i}: card id is ${r.id.length} bytes; want 32`);
    const p = params(r.suite);
    if (r.kemPublicKey.length !== p.publicKeyLength) throw e2eeError(E2eeErrorKind.Malformed, `recipient ${i}: card has no KEM key of its suite`);
    const id = toHex(r.id);
    if (seen.has(id)) throw e2eeError(E2eeErrorKind.Malformed, `recipient card ${id} appears twice`);
    seen.add(id);
    if (sender && senderCardId && equalBytes(r.id, senderCardId) && !equalBytes(r.signingKey, sender.signingPublicKey)) {
      throw e2eeError(E2eeErrorKind.WrongSender, "the sender card id names a recipient card with another signing key than the sender's");
    }
  });
}

/** wrapKey wraps key to card r with HPKE in r's suite and info. */
export async function wrapKey(what: string, key: Uint8Array, r: Card, info: Uint8Array): Promise<{ enc: Uint8Array; ciphertext: Uint8Array }> {
  try {
    return await hpkeSeal(r.suite, r.kemPublicKey, info, key);
  } catch (err) {
    if (err instanceof E2eeError) throw err;
    throw e2eeError(E2eeErrorKind.Malformed, `wrap the ${what} to card ${toHex(r.id)}: ${(err as Error).message}`, err);
  }
}

/**
 * encrypt encrypts plaintext for recipients (1 to 1,000 distinct cards of any suites;
 * include the sender's own card so its other devices can read it), signed by sender,
 * whose card id is senderCardId. It returns the encoded Envelope (section 6.2).
 */
export async function encrypt(sender: KeyPair, senderCardId: Uint8Array, recipients: readonly Card[], plaintext: Uint8Array, opts: EncryptOptions = {}): Promise<Uint8Array> {
  const aead = opts.aead ?? DefaultAead;
  const created = unixSeconds(opts.now ?? new Date());
  if (senderCardId.length !== CardIdSize) throw e2eeError(E2eeErrorKind.Malformed, `sender card id is ${senderCardId.length} bytes; want 32`);
  if (recipients.length === 0) throw e2eeError(E2eeErrorKind.Malformed, "no recipients");
  if (recipients.length > MaxRecipients) throw e2eeError(E2eeErrorKind.TooLarge, `${recipients.length} recipients; at most ${MaxRecipients}`);
  if (plaintext.length > MaxPlaintextSize) throw e2eeError(E2eeErrorKind.TooLarge, `plaintext is ${plaintext.length} bytes; at most ${MaxPlaintextSize}`);
  if (created <= 0n) throw e2eeError(E2eeErrorKind.Malformed, "creation time is not after the Unix epoch");
  checkAead(aead);
  checkRecipients(recipients, sender, senderCardId);
  const contentKey = opts.contentKey ?? randomBytes(contentKeySize);
  const nonce = opts.nonce ?? randomBytes(nonceSize);
  if (contentKey.length !== contentKeySize || nonce.length !== nonceSize) throw e2eeError(E2eeErrorKind.Malformed, "content key or nonce of the wrong size");

  const stanzas = await Promise.all(
    recipients.map(async (r) => {
      const { enc, ciphertext } = await wrapKey("content key", contentKey, r, keyWrapInfo(senderCardId, r.id));
      return { recipientCardId: r.id, suite: r.suite, enc, wrappedKey: ciphertext };
    }),
  );
  const header = encode(EnvelopeHeaderSchema, {
    version: 1,
    senderCardId,
    recipients: stanzas,
    aead,
    nonce,
    createdAtUnixSeconds: created,
  });
  const signature = await sender.signAsync(labelled(LabelEnvelopeSignature, sha(header), plaintext));
  return sealSigned(aead, contentKey, nonce, header, plaintext, signature);
}

/**
 * sealSigned encodes a message of header and body (an Envelope or a GroupMessage) whose
 * body is SignedPayload{plaintext, signature} sealed under key and nonce with the
 * header as associated data; the plaintext is copied once and the body sealed straight
 * into the output.
 */
export function sealSigned(aead: Aead, key: Uint8Array, nonce: Uint8Array, header: Uint8Array, plaintext: Uint8Array, signature: Uint8Array): Uint8Array {
  const payload = new Uint8Array(bytesFieldSize(plaintext.length) + bytesFieldSize(signature.length));
  putBytesField(payload, putBytesField(payload, 0, 1, plaintext), 2, signature);
  const bodyLen = payload.length + tagSize;
  const out = new Uint8Array(bytesFieldSize(header.length) + bytesFieldSize(bodyLen));
  const off = putTagLength(out, putBytesField(out, 0, 1, header), 2, bodyLen);
  aeadSeal(aead, key, nonce, payload, header, out.subarray(off));
  return out;
}

/** parseSealed splits data (an Envelope or GroupMessage), checks the sizes, and parses the header. */
export function parseSealed<T>(what: string, data: Uint8Array, maxSize: number, maxHeaderSize: number, parseHeader: (header: Uint8Array) => T): { header: Uint8Array; body: Uint8Array; h: T } {
  if (data.length > maxSize) throw e2eeError(E2eeErrorKind.TooLarge, `${what} is ${data.length} bytes; at most ${maxSize}`);
  const [header = new Uint8Array(0), body = new Uint8Array(0)] = parseBytesPair(what, data);
  if (header.length > maxHeaderSize) throw e2eeError(E2eeErrorKind.TooLarge, `${what} header is ${header.length} bytes; at most ${maxHeaderSize}`);
  if (body.length < tagSize) throw e2eeError(E2eeErrorKind.Malformed, `${what} body is ${body.length} bytes; shorter than an AEAD tag`);
  return { header, body, h: parseHeader(header) };
}

interface ParsedEnvelope {
  header: Uint8Array;
  headerHash: Uint8Array;
  body: Uint8Array;
  h: EnvelopeHeader;
}

function parseEnvelope(data: Uint8Array): ParsedEnvelope {
  const { header, body, h } = parseSealed("envelope", data, MaxEnvelopeSize, MaxEnvelopeHeaderSize, (b) => parseStrict(EnvelopeHeaderSchema, b, "envelope header"));
  const n = h.recipients.length;
  if (h.version !== 1) throw e2eeError(E2eeErrorKind.Malformed, `envelope version ${h.version}; this client reads version 1`);
  if (h.senderCardId.length !== CardIdSize) throw e2eeError(E2eeErrorKind.Malformed, `envelope sender card id is ${h.senderCardId.length} bytes; want 32`);
  if (n === 0) throw e2eeError(E2eeErrorKind.Malformed, "envelope has no recipients");
  if (n > MaxRecipients) throw e2eeError(E2eeErrorKind.TooLarge, `envelope has ${n} recipients; at most ${MaxRecipients}`);
  if (h.nonce.length !== nonceSize) throw e2eeError(E2eeErrorKind.Malformed, `envelope nonce is ${h.nonce.length} bytes; want 12`);
  if (h.createdAtUnixSeconds <= 0n) throw e2eeError(E2eeErrorKind.Malformed, "envelope has no creation time");
  checkAead(h.aead);
  const seen = new Set<string>();
  h.recipients.forEach((s, i) => {
    if (s.recipientCardId.length !== CardIdSize) throw e2eeError(E2eeErrorKind.Malformed, `stanza ${i}: card id is ${s.recipientCardId.length} bytes; want 32`);
    const id = toHex(s.recipientCardId);
    if (seen.has(id)) throw e2eeError(E2eeErrorKind.Malformed, `stanza ${i}: card ${id} has two stanzas`);
    seen.add(id);
    let p;
    try {
      p = params(s.suite);
    } catch (err) {
      throw e2eeError(E2eeErrorKind.UnknownSuite, `stanza ${i}: suite ${s.suite}`, err);
    }
    if (s.enc.length !== p.encLength) throw e2eeError(E2eeErrorKind.Malformed, `stanza ${i}: encapsulated key is ${s.enc.length} bytes; suite ${Suite[s.suite]} wants ${p.encLength}`);
    if (s.wrappedKey.length !== wrappedKeySize) throw e2eeError(E2eeErrorKind.Malformed, `stanza ${i}: wrapped key is ${s.wrappedKey.length} bytes; want 48`);
  });
  return { header, headerHash: sha(header), body, h };
}

/** inspectEnvelope parses data and checks its header with no key (section 6.3 steps 1–7). It authenticates nothing. */
export function inspectEnvelope(data: Uint8Array): EnvelopeInfo {
  const e = parseEnvelope(data);
  return {
    senderCardId: e.h.senderCardId,
    recipientCardIds: e.h.recipients.map((s) => s.recipientCardId),
    recipientSuites: e.h.recipients.map((s) => s.suite),
    aead: e.h.aead,
    createdAtUnixSeconds: e.h.createdAtUnixSeconds,
    headerHash: e.headerHash,
  };
}

/** checkSender refuses a sender card that is missing or is not the card named. */
export function checkSender(named: Uint8Array, sender: Card | undefined): asserts sender is Card {
  if (sender === undefined || sender.signingKey.length !== 32) throw e2eeError(E2eeErrorKind.WrongSender, "no sender card to verify the message with");
  if (!equalBytes(named, sender.id)) throw e2eeError(E2eeErrorKind.WrongSender, `the message names sender card ${toHex(named)}, not ${toHex(sender.id)}`);
}

/**
 * decrypt opens an Envelope sent by the card sender (section 6.3): the encoding and
 * limits (TooLarge, Malformed, UnknownSuite), the sender card named (WrongSender), a
 * stanza for one of our cards (NotRecipient), the content key and body (Decrypt), and
 * the signature (BadSignature). Whose card sender is, and whether it was valid when the
 * message was written, is the caller's to check.
 */
export async function decrypt(data: Uint8Array, keyFor: KeyLookup, sender: Card | undefined): Promise<Uint8Array> {
  const e = parseEnvelope(data);
  checkSender(e.h.senderCardId, sender);
  let lastErr: E2eeError | undefined;
  let contentKey: Uint8Array | undefined;
  for (const s of e.h.recipients) {
    const kp = keyFor(s.recipientCardId);
    if (kp === undefined) continue;
    if (kp.suite !== s.suite) {
      lastErr = e2eeError(E2eeErrorKind.Malformed, `the stanza for our card ${toHex(s.recipientCardId)} is of suite ${Suite[s.suite]}; our key is of suite ${Suite[kp.suite]}`);
      continue;
    }
    try {
      contentKey = await hpkeOpen(kp.suite, kp.kemPrivateKey, s.enc, keyWrapInfo(e.h.senderCardId, s.recipientCardId), s.wrappedKey);
      break;
    } catch (err) {
      lastErr = e2eeError(E2eeErrorKind.Decrypt, `the content key wrapped to card ${toHex(s.recipientCardId)} does not open`, err);
    }
  }
  if (contentKey === undefined) {
    throw lastErr ?? e2eeError(E2eeErrorKind.NotRecipient, `none of the envelope's ${e.h.recipients.length} recipient cards is ours`);
  }
  const payload = aeadOpen(e.h.aead, contentKey, e.h.nonce, e.body, e.header);
  if (payload === undefined) throw e2eeError(E2eeErrorKind.Decrypt, "envelope body does not authenticate");
  return verifySignedAsync("envelope", LabelEnvelopeSignature, payload, e.headerHash, sender);
}

/** verifySigned parses an opened SignedPayload and verifies sender's signature under label over headerHash ‖ plaintext. */
export function verifySigned(what: string, label: string, payload: Uint8Array, headerHash: Uint8Array, sender: Card): Uint8Array {
  const { plaintext, signature, signed } = signedPayload(what, label, payload, headerHash);
  if (!verifySignature(sender.signingKey, signed, signature)) throw badSignature(what, sender);
  return plaintext;
}

/** verifySignedAsync is verifySigned with verifySignatureAsync. */
export async function verifySignedAsync(what: string, label: string, payload: Uint8Array, headerHash: Uint8Array, sender: Card): Promise<Uint8Array> {
  const { plaintext, signature, signed } = signedPayload(what, label, payload, headerHash);
  if (!(await verifySignatureAsync(sender.signingKey, signed, signature))) throw badSignature(what, sender);
  return plaintext;
}

function signedPayload(what: string, label: string, payload: Uint8Array, headerHash: Uint8Array): { plaintext: Uint8Array; signature: Uint8Array; signed: Uint8Array } {
  const [plaintext = new Uint8Array(0), signature = new Uint8Array(0)] = parseBytesPair("signed payload", payload);
  if (signature.length !== 64) throw e2eeError(E2eeErrorKind.Malformed, `${what} signature is ${signature.length} bytes; want 64`);
  return { plaintext, signature, signed: labelled(label, headerHash, plaintext) };
}

function badSignature(what: string, sender: Card): E2eeError {
  return e2eeError(E2eeErrorKind.BadSignature, `${what} signature does not verify with sender card ${toHex(sender.id)}`);
}

