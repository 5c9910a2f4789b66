// Group messages (docs/wire-format.md, 11.4–11.5): each message under its own key and
// nonce, derived with HKDF from the epoch key, a fresh salt and the header hash; the
// sender's signature inside the encryption (pkg/e2ee group_message.go).
import { hkdf } from "@noble/hashes/hkdf.js";
import { sha256 } from "@noble/hashes/sha2.js";
import { Aead, DefaultAead, aeadOpen, checkAead } from "./aead.js";
import { labelled, randomBytes, sha, unixSeconds } from "./bytes.js";
import { CardIdSize, type Card } from "./card.js";
import { MaxPlaintextSize, checkSender, parseSealed, sealSigned, verifySigned } from "./envelope.js";
import { E2eeErrorKind, e2eeError } from "./errors.js";
import { GroupMessageHeaderSchema, type GroupMessageHeader } from "./gen/umbra/envelope/v1/envelope_pb.js";
import { groupIdentityProblem } from "./ident.js";
import type { KeyPair } from "./keys.js";
import { LabelGroupMessageKey, LabelGroupMessageSignature } from "./labels.js";
import { encode, parseStrict } from "./proto.js";

/** Sizes and limits of a GroupMessage. */
export const MaxGroupMessageHeaderSize = 1024;
export const MaxGroupMessageSize = MaxGroupMessageHeaderSize + MaxPlaintextSize + 1024;
const saltSize = 32;

/** GroupMessageInfo is what a GroupMessage's header says, read without any key. */
export interface GroupMessageInfo {
  readonly groupId: string;
  readonly epoch: bigint;
  readonly senderCardId: Uint8Array;
  readonly aead: Aead;
  readonly createdAtUnixSeconds: bigint;
  readonly headerHash: Uint8Array;
}

/** SealGroupMessageOptions are the choices of sealGroupMessage; salt is for test vectors only. */
export interface SealGroupMessageOptions {
  aead?: Aead;
  now?: Date;
  salt?: Uint8Array;
}

/** groupMessageKey derives a message's AEAD key and nonce: HKDF-SHA256(epoch key, salt, LABEL ‖ SHA-256(header), 44). */
export function groupMessageKey(epochKey: Uint8Array, salt: Uint8Array, headerHash: Uint8Array): { key: Uint8Array; nonce: Uint8Array } {
  const okm = hkdf(sha256, epochKey, salt, labelled(LabelGroupMessageKey, headerHash), 44);
  return { key: okm.subarray(0, 32), nonce: okm.subarray(32) };
}

/** sealGroupMessage encrypts plaintext for groupId under epochKey, the key of epoch, signed by sender (section 11.4). */
export function sealGroupMessage(sender: KeyPair, senderCardId: Uint8Array, groupId: string, epoch: bigint, epochKey: Uint8Array, plaintext: Uint8Array, opts: SealGroupMessageOptions = {}): Uint8Array {
  const aead = opts.aead ?? DefaultAead;
  const created = unixSeconds(opts.now ?? new Date());
  if (senderCardId.length !== CardIdSize) throw e2eeError(E2eeErrorKind.Malformed, `sender card id is ${senderCardId.length} bytes; want 32`);
  if (plaintext.length > MaxPlaintextSize) throw e2eeError(E2eeErrorKind.TooLarge, `plaintext is ${plaintext.length} bytes; at most ${MaxPlaintextSize}`);
  if (created <= 0n) throw e2eeError(E2eeErrorKind.Malformed, "creation time is not after the Unix epoch");
  if (epochKey.length !== 32) throw e2eeError(E2eeErrorKind.WrongEpoch, `epoch key is ${epochKey.length} bytes; want 32`);
  const problem = groupIdentityProblem(groupId);
  if (problem !== undefined) throw e2eeError(E2eeErrorKind.Malformed, `group id ${problem}`);
  if (epoch <= 0n) throw e2eeError(E2eeErrorKind.Malformed, "epoch 0 has no key; the first epoch is 1");
  checkAead(aead);
  const salt = opts.salt ?? randomBytes(saltSize);
  if (salt.length !== saltSize) throw e2eeError(E2eeErrorKind.Malformed, "salt of the wrong size");
  const header = encode(GroupMessageHeaderSchema, { version: 1, groupId, epoch, senderCardId, salt, aead, createdAtUnixSeconds: created });
  const headerHash = sha(header);
  const { key, nonce } = groupMessageKey(epochKey, salt, headerHash);
  const signature = sender.sign(labelled(LabelGroupMessageSignature, headerHash, plaintext));
  return sealSigned(aead, key, nonce, header, plaintext, signature);
}

interface ParsedGroupMessage {
  header: Uint8Array;
  headerHash: Uint8Array;
  body: Uint8Array;
  h: GroupMessageHeader;
}

function parseGroupMessage(data: Uint8Array): ParsedGroupMessage {
  const { header, body, h } = parseSealed("group message", data, MaxGroupMessageSize, MaxGroupMessageHeaderSize, (b) => parseStrict(GroupMessageHeaderSchema, b, "group message header"));
  if (h.version !== 1) throw e2eeError(E2eeErrorKind.Malformed, `group message version ${h.version}; this client reads version 1`);
  if (h.epoch === 0n) throw e2eeError(E2eeErrorKind.Malformed, "group message has no epoch");
  if (h.senderCardId.length !== CardIdSize) throw e2eeError(E2eeErrorKind.Malformed, `group message sender card id is ${h.senderCardId.length} bytes; want 32`);
  if (h.salt.length !== saltSize) throw e2eeError(E2eeErrorKind.Malformed, `group message salt is ${h.salt.length} bytes; want 32`);
  if (h.createdAtUnixSeconds <= 0n) throw e2eeError(E2eeErrorKind.Malformed, "group message has no creation time");
  const problem = groupIdentityProblem(h.groupId);
  if (problem !== undefined) throw e2eeError(E2eeErrorKind.Malformed, `group message group id ${problem}`);
  checkAead(h.aead);
  return { header, headerHash: sha(header), body, h };
}

/** inspectGroupMessage parses data and checks its header with no key (section 11.5 steps 1–4). It authenticates nothing. */
export function inspectGroupMessage(data: Uint8Array): GroupMessageInfo {
  const m = parseGroupMessage(data);
  return { groupId: m.h.groupId, epoch: m.h.epoch, senderCardId: m.h.senderCardId, aead: m.h.aead, createdAtUnixSeconds: m.h.createdAtUnixSeconds, headerHash: m.headerHash };
}

/** EpochKeyLookup returns our key of an epoch, or undefined if we have none. */
export type EpochKeyLookup = (epoch: bigint) => Uint8Array | undefined;

/**
 * openGroupMessage opens a GroupMessage of groupId sent by the card sender (section 11.5):
 * encoding and limits, the group (WrongGroup), the sender card (WrongSender), our key of
 * its epoch (WrongEpoch), the body (Decrypt) and the signature (BadSignature).
 */
export function openGroupMessage(data: Uint8Array, groupId: string, epochKey: EpochKeyLookup, sender: Card | undefined): Uint8Array {
  const m = parseGroupMessage(data);
  if (m.h.groupId !== groupId) throw e2eeError(E2eeErrorKind.WrongGroup, `the message is of group ${m.h.groupId}, not ${groupId}`);
  checkSender(m.h.senderCardId, sender);
  const ek = epochKey(m.h.epoch);
  if (ek === undefined || ek.length !== 32) throw e2eeError(E2eeErrorKind.WrongEpoch, `no key of epoch ${m.h.epoch} of group ${groupId}`);
  const { key, nonce } = groupMessageKey(ek, m.h.salt, m.headerHash);
  const payload = aeadOpen(m.h.aead, key, nonce, m.body, m.header);
  if (payload === undefined) throw e2eeError(E2eeErrorKind.Decrypt, `group message body does not authenticate under the key of epoch ${m.h.epoch}`);
  return verifySigned("group message", LabelGroupMessageSignature, payload, m.headerHash, sender);
}
