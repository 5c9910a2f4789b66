// Group epochs (docs/wire-format.md, 11.1–11.3): an epoch key wrapped with HPKE to the
// current card of every member, committed to by a signed EpochCommitContent (pkg/e2ee
// group_epoch.go).
import { compareBytes, copyBytes, equalBytes, labelled, randomBytes, sha, str, toHex, u16, u32, u64, unixSeconds } from "./bytes.js";
import { CardIdSize, type Card } from "./card.js";
import { checkRecipients, wrapKey, type KeyLookup } from "./envelope.js";
import { E2eeErrorKind, e2eeError } from "./errors.js";
import { EpochCommitContentSchema, type SignedEpochCommit, type WrappedEpochKey } from "./gen/umbra/envelope/v1/envelope_pb.js";
import { hpkeOpen, params } from "./hpke.js";
import { groupIdentityProblem } from "./ident.js";
import type { KeyPair } from "./keys.js";
import { LabelEpochCommitSignature, LabelEpochKeyCommitment, LabelEpochKeyWrap, LabelEpochRecipients } from "./labels.js";
import { encode, parseStrict } from "./proto.js";
import { verifySignature } from "./pubkey.js";

export type { SignedEpochCommit, WrappedEpochKey };

/** Sizes and limits of epochs. */
export const EpochKeySize = 32;
export const MaxEpochCommitContentSize = 1024;
export const MaxEpochRecipients = 10000;
const wrappedEpochKeySize = EpochKeySize + 16;

/** WrappedKey is a wrap of an epoch key to one card (the fields of WrappedEpochKey). */
export interface WrappedKey {
  readonly recipientCardId: Uint8Array;
  readonly enc: Uint8Array;
  readonly ciphertext: Uint8Array;
}

/** SignedCommit is the exact content bytes of an epoch commit and their signature (the fields of SignedEpochCommit). */
export interface SignedCommit {
  readonly content: Uint8Array;
  readonly signature: Uint8Array;
}

/** MembershipHead names a statement of a group's membership chain: the head an epoch commit was made for. */
export interface MembershipHead {
  readonly sequence: bigint;
  readonly hash: Uint8Array;
}

/** newEpochKey returns a fresh random epoch key. */
export function newEpochKey(): Uint8Array {
  return randomBytes(EpochKeySize);
}

/** epochKeyCommitment is SHA-256(LABEL("umbra/v1/epoch-key-commitment") ‖ str(groupId) ‖ u64(epoch) ‖ key). */
export function epochKeyCommitment(groupId: string, epoch: bigint, key: Uint8Array): Uint8Array {
  return sha(labelled(LabelEpochKeyCommitment, str(groupId), u64(epoch), key));
}

/** epochKeyWrapInfo is the HPKE info of a wrapped epoch key (100 bytes for a group identity). */
export function epochKeyWrapInfo(groupId: string, epoch: bigint, recipientCardId: Uint8Array): Uint8Array {
  return labelled(LabelEpochKeyWrap, str(groupId), u64(epoch), recipientCardId);
}

function checkEpochArgs(groupId: string, epoch: bigint, key?: Uint8Array): void {
  const problem = groupIdentityProblem(groupId);
  if (problem !== undefined) throw e2eeError(E2eeErrorKind.Malformed, `group id ${problem}`);
  if (epoch <= 0n) throw e2eeError(E2eeErrorKind.Malformed, "epoch 0 has no key; the first epoch is 1");
  if (epoch > 0xffffffffffffffffn) throw e2eeError(E2eeErrorKind.Malformed, "epoch beyond 2^64 - 1");
  if (key !== undefined && key.length !== EpochKeySize) throw e2eeError(E2eeErrorKind.Malformed, `epoch key is ${key.length} bytes; want 32`);
}

/** wrapEpochKey wraps key, the key of epoch of groupId, to recipient's card in its suite. */
export async function wrapEpochKey(groupId: string, epoch: bigint, key: Uint8Array, recipient: Card): Promise<WrappedKey> {
  checkEpochArgs(groupId, epoch, key);
  checkRecipients([recipient]);
  const { enc, ciphertext } = await wrapKey("epoch key", key, recipient, epochKeyWrapInfo(groupId, epoch, recipient.id));
  return { recipientCardId: recipient.id, enc, ciphertext };
}

/** wrapEpochKeys wraps key to every card of recipients (distinct), in their order. */
export async function wrapEpochKeys(groupId: string, epoch: bigint, key: Uint8Array, recipients: readonly Card[]): Promise<WrappedKey[]> {
  checkEpochArgs(groupId, epoch, key);
  if (recipients.length === 0) throw e2eeError(E2eeErrorKind.Malformed, "no recipients for the epoch key");
  if (recipients.length > MaxEpochRecipients) throw e2eeError(E2eeErrorKind.TooLarge, `${recipients.length} recipients for the epoch key; at most ${MaxEpochRecipients}`);
  checkRecipients(recipients);
  return Promise.all(
    recipients.map(async (r) => {
      const { enc, ciphertext } = await wrapKey("epoch key", key, r, epochKeyWrapInfo(groupId, epoch, r.id));
      return { recipientCardId: r.id, enc, ciphertext };
    }),
  );
}

function checkWrappedEpochKey(w: WrappedKey | undefined): asserts w is WrappedKey {
  if (w === undefined) throw e2eeError(E2eeErrorKind.Malformed, "no wrapped key");
  if (w.recipientCardId.length !== CardIdSize) throw e2eeError(E2eeErrorKind.Malformed, `wrapped key's card id is ${w.recipientCardId.length} bytes; want 32`);
  if (w.enc.length !== 1120 && w.enc.length !== 32) throw e2eeError(E2eeErrorKind.Malformed, `wrapped key's encapsulated key is ${w.enc.length} bytes; no suite has that size`);
  if (w.ciphertext.length !== wrappedEpochKeySize) throw e2eeError(E2eeErrorKind.Malformed, `wrapped key's ciphertext is ${w.ciphertext.length} bytes; want 48`);
}

/**
 * wrappedKeysDigest is the digest of a commit's wrapped keys that its content signs:
 * SHA-256(LABEL("umbra/v1/epoch-recipients") ‖ u32(n) ‖ entry_1 ‖ … ‖ entry_n) over the
 * keys in ascending order of card id, entry_i = card id ‖ SHA-256(u16(len(enc)) ‖ enc ‖ ciphertext).
 */
export function wrappedKeysDigest(keys: readonly WrappedKey[]): Uint8Array {
  if (keys.length > MaxEpochRecipients) throw e2eeError(E2eeErrorKind.TooLarge, `${keys.length} wrapped keys; at most ${MaxEpochRecipients}`);
  keys.forEach((w) => checkWrappedEpochKey(w));
  const sorted = [...keys].sort((a, b) => compareBytes(a.recipientCardId, b.recipientCardId));
  const buf = new Uint8Array(labelled(LabelEpochRecipients).length + 4 + sorted.length * 64);
  let off = 0;
  const put = (b: Uint8Array) => {
    buf.set(b, off);
    off += b.length;
  };
  put(labelled(LabelEpochRecipients, u32(sorted.length)));
  sorted.forEach((w, i) => {
    if (i > 0 && equalBytes(w.recipientCardId, sorted[i - 1]!.recipientCardId)) {
      throw e2eeError(E2eeErrorKind.Malformed, `two wrapped keys for card ${toHex(w.recipientCardId)}`);
    }
    put(w.recipientCardId);
    put(sha(u16(w.enc.length), w.enc, w.ciphertext));
  });
  return sha(buf);
}

/** Epoch is a new epoch as its committer creates it: the key, its wraps and the signed commit. */
export interface Epoch {
  readonly groupId: string;
  readonly number: bigint;
  /** The epoch key. It never leaves the client but wrapped. */
  readonly key: Uint8Array;
  /** The wraps of key, in the order of the recipients given. */
  readonly wrappedKeys: WrappedKey[];
  readonly commit: SignedCommit;
  /** SHA-256 of the commit's content: the next epoch's previous_commit_hash. */
  readonly commitHash: Uint8Array;
}

/**
 * newEpoch creates epoch number of groupId (section 11.2): a fresh key, wrapped to every
 * card of recipients (the current cards of all members the verified membership chain
 * yields at head, the committer's included), and the commit signed by signer.
 * previousCommitHash is the current epoch's commit hash, undefined for epoch 1.
 */
export async function newEpoch(signer: KeyPair, signerCardId: Uint8Array, groupId: string, number: bigint, previousCommitHash: Uint8Array | undefined, head: MembershipHead, recipients: readonly Card[], now: Date = new Date(), key?: Uint8Array): Promise<Epoch> {
  checkEpochArgs(groupId, number);
  const epochKey = key ?? newEpochKey();
  const wrappedKeys = await wrapEpochKeys(groupId, number, epochKey, recipients);
  const content = epochCommitContent(signerCardId, groupId, number, epochKey, wrappedKeys, previousCommitHash, head, now);
  const commit = { content, signature: await signer.signAsync(labelled(LabelEpochCommitSignature, content)) };
  return { groupId, number, key: epochKey, wrappedKeys, commit, commitHash: sha(commit.content) };
}

function checkMembershipHead(sequence: bigint, hash: Uint8Array): void {
  if (sequence === 0n) throw e2eeError(E2eeErrorKind.Malformed, "epoch commit names no membership head (sequence 0)");
  if (hash.length !== 32) throw e2eeError(E2eeErrorKind.Malformed, `epoch commit's membership head hash is ${hash.length} bytes; want 32`);
}

function checkPreviousCommitHash(epoch: bigint, h: Uint8Array | undefined): void {
  const n = h?.length ?? 0;
  if (epoch === 1n && n !== 0) throw e2eeError(E2eeErrorKind.Malformed, "epoch 1 has a previous commit hash");
  if (epoch > 1n && n !== 32) throw e2eeError(E2eeErrorKind.Malformed, `previous commit hash of epoch ${epoch} is ${n} bytes; want 32`);
}

/** signEpochCommit encodes and signs the EpochCommitContent of epoch of groupId whose key is key and whose wraps are wrapped. */
export function signEpochCommit(signer: KeyPair, signerCardId: Uint8Array, groupId: string, epoch: bigint, key: Uint8Array, wrapped: readonly WrappedKey[], previousCommitHash: Uint8Array | undefined, head: MembershipHead, now: Date): SignedCommit {
  const content = epochCommitContent(signerCardId, groupId, epoch, key, wrapped, previousCommitHash, head, now);
  return { content, signature: signer.sign(labelled(LabelEpochCommitSignature, content)) };
}

function epochCommitContent(signerCardId: Uint8Array, groupId: string, epoch: bigint, key: Uint8Array, wrapped: readonly WrappedKey[], previousCommitHash: Uint8Array | undefined, head: MembershipHead, now: Date): Uint8Array {
  const created = unixSeconds(now);
  if (signerCardId.length !== CardIdSize) throw e2eeError(E2eeErrorKind.Malformed, `signer card id is ${signerCardId.length} bytes; want 32`);
  if (created <= 0n) throw e2eeError(E2eeErrorKind.Malformed, "commit time is not after the Unix epoch");
  if (wrapped.length === 0) throw e2eeError(E2eeErrorKind.Malformed, "a commit without wrapped keys");
  checkMembershipHead(head.sequence, head.hash);
  checkEpochArgs(groupId, epoch, key);
  checkPreviousCommitHash(epoch, previousCommitHash);
  return encode(EpochCommitContentSchema, {
    version: 1,
    groupId,
    epoch,
    signerCardId,
    keyCommitment: epochKeyCommitment(groupId, epoch, key),
    wrappedKeysDigest: wrappedKeysDigest(wrapped),
    wrappedKeyCount: wrapped.length,
    previousCommitHash: previousCommitHash ?? new Uint8Array(0),
    createdAtUnixSeconds: created,
    membershipSequence: head.sequence,
    membershipHash: head.hash,
  });
}

/** EpochCommit is an epoch commit whose content parsed. */
export interface EpochCommit {
  readonly content: Uint8Array;
  readonly signature: Uint8Array;
  /** SHA-256(content). */
  readonly hash: Uint8Array;
  readonly groupId: string;
  readonly epoch: bigint;
  readonly signerCardId: Uint8Array;
  readonly keyCommitment: Uint8Array;
  readonly wrappedKeysDigest: Uint8Array;
  readonly wrappedKeyCount: number;
  readonly previousCommitHash: Uint8Array | undefined;
  readonly createdAtUnixSeconds: bigint;
  /** The head of the membership chain the commit was made for. */
  readonly membership: MembershipHead;
}

/** parseEpochCommit checks the shape of a signed commit (section 11.3, steps 1–2); it does not verify the signature. */
export function parseEpochCommit(signed: SignedCommit): EpochCommit {
  const { content, signature } = signed;
  if (content.length > MaxEpochCommitContentSize) throw e2eeError(E2eeErrorKind.TooLarge, `epoch commit is ${content.length} bytes; at most ${MaxEpochCommitContentSize}`);
  const m = parseStrict(EpochCommitContentSchema, content, "epoch commit");
  if (m.version !== 1) throw e2eeError(E2eeErrorKind.Malformed, `epoch commit version ${m.version}; this client reads version 1`);
  if (m.signerCardId.length !== 32) throw e2eeError(E2eeErrorKind.Malformed, `epoch commit signer card id is ${m.signerCardId.length} bytes; want 32`);
  if (m.keyCommitment.length !== 32) throw e2eeError(E2eeErrorKind.Malformed, `epoch commit key commitment is ${m.keyCommitment.length} bytes; want 32`);
  if (m.wrappedKeysDigest.length !== 32) throw e2eeError(E2eeErrorKind.Malformed, `epoch commit wrapped keys digest is ${m.wrappedKeysDigest.length} bytes; want 32`);
  if (m.wrappedKeyCount === 0) throw e2eeError(E2eeErrorKind.Malformed, "epoch commit wraps the key to nobody");
  if (m.wrappedKeyCount > MaxEpochRecipients) throw e2eeError(E2eeErrorKind.TooLarge, `epoch commit has ${m.wrappedKeyCount} wrapped keys; at most ${MaxEpochRecipients}`);
  if (m.createdAtUnixSeconds <= 0n) throw e2eeError(E2eeErrorKind.Malformed, "epoch commit has no creation time");
  if (signature.length !== 64) throw e2eeError(E2eeErrorKind.Malformed, `epoch commit signature is ${signature.length} bytes; want 64`);
  checkEpochArgs(m.groupId, m.epoch);
  checkPreviousCommitHash(m.epoch, m.previousCommitHash);
  checkMembershipHead(m.membershipSequence, m.membershipHash);
  const c = copyBytes(content);
  return {
    content: c,
    signature: copyBytes(signature),
    hash: sha(c),
    groupId: m.groupId,
    epoch: m.epoch,
    signerCardId: copyBytes(m.signerCardId),
    keyCommitment: copyBytes(m.keyCommitment),
    wrappedKeysDigest: copyBytes(m.wrappedKeysDigest),
    wrappedKeyCount: m.wrappedKeyCount,
    previousCommitHash: m.previousCommitHash.length === 0 ? undefined : copyBytes(m.previousCommitHash),
    createdAtUnixSeconds: m.createdAtUnixSeconds,
    membership: { sequence: m.membershipSequence, hash: copyBytes(m.membershipHash) },
  };
}

/**
 * verifyEpochCommit parses signed and checks that it is the commit of epoch of groupId
 * (WrongGroup, WrongEpoch), that it names signer's card (WrongSender) and that signer's
 * key signed it (BadSignature) — section 11.3, steps 1–4. Whether the signer is a member
 * at the membership head the commit names is the caller's to check (NotMember).
 */
export function verifyEpochCommit(signed: SignedCommit, groupId: string, epoch: bigint, signer: Card | undefined): EpochCommit {
  const c = parseEpochCommit(signed);
  if (c.groupId !== groupId) throw e2eeError(E2eeErrorKind.WrongGroup, `the commit is of group ${c.groupId}, not ${groupId}`);
  if (c.epoch !== epoch) throw e2eeError(E2eeErrorKind.WrongEpoch, `the commit is of epoch ${c.epoch}, not ${epoch}`);
  if (signer === undefined || signer.signingKey.length !== 32) throw e2eeError(E2eeErrorKind.WrongSender, "no signer card to verify the commit with");
  if (!equalBytes(c.signerCardId, signer.id)) throw e2eeError(E2eeErrorKind.WrongSender, `the commit names signer card ${toHex(c.signerCardId)}, not ${toHex(signer.id)}`);
  if (!verifySignature(signer.signingKey, labelled(LabelEpochCommitSignature, c.content), c.signature)) {
    throw e2eeError(E2eeErrorKind.BadSignature, `epoch commit signature does not verify with card ${toHex(signer.id)}`);
  }
  return c;
}

/** checkWrappedKeys checks that keys are exactly the wraps the commit signs: their number and digest (BadSignature otherwise). */
export function checkWrappedKeys(c: EpochCommit, keys: readonly WrappedKey[]): void {
  if (keys.length !== c.wrappedKeyCount) throw e2eeError(E2eeErrorKind.BadSignature, `${keys.length} wrapped keys; the commit signs ${c.wrappedKeyCount}`);
  if (!equalBytes(wrappedKeysDigest(keys), c.wrappedKeysDigest)) throw e2eeError(E2eeErrorKind.BadSignature, "the wrapped keys are not those the commit signs");
}

/**
 * openEpochKey unwraps the epoch key of a verified commit from w, a wrap to one of our
 * cards (section 11.3, steps 6–7): Malformed for a wrap of the wrong shape or suite,
 * NotMember for a card we hold no key for, Decrypt if it does not open, BadSignature if
 * the key is not the one the commit's key commitment binds.
 */
export async function openEpochKey(c: EpochCommit, w: WrappedKey | undefined, keyFor: KeyLookup): Promise<Uint8Array> {
  checkWrappedEpochKey(w);
  const kp = keyFor(w.recipientCardId);
  if (kp === undefined) throw e2eeError(E2eeErrorKind.NotMember, `the epoch ${c.epoch} key is wrapped to card ${toHex(w.recipientCardId)}, which is not ours`);
  if (w.enc.length !== params(kp.suite).encLength) {
    throw e2eeError(E2eeErrorKind.Malformed, `the epoch key wrapped to our card ${toHex(w.recipientCardId)} is not of its suite`);
  }
  let key: Uint8Array;
  try {
    key = await hpkeOpen(kp.suite, kp.kemPrivateKey, w.enc, epochKeyWrapInfo(c.groupId, c.epoch, w.recipientCardId), w.ciphertext);
  } catch (err) {
    throw e2eeError(E2eeErrorKind.Decrypt, `the epoch ${c.epoch} key wrapped to card ${toHex(w.recipientCardId)} does not open`, err);
  }
  if (!equalBytes(epochKeyCommitment(c.groupId, c.epoch, key), c.keyCommitment)) {
    throw e2eeError(E2eeErrorKind.BadSignature, `the epoch ${c.epoch} key does not match the signed commit's key commitment`);
  }
  return key;
}
