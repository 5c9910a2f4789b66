// The client's typed errors, the Go SDK's sentinel errors as kinds. An error of the
// client wraps what failed beneath it as its cause (an E2eeError of the crypto core, an
// RpcError of a service), and hasKind(err, kind) looks along the causes, as Go's
// errors.Is does: a membership chain whose statement is forged is an UmbraError of kind
// "membership chain" whose cause is an E2eeError of kind "bad signature", and both
// hasKind(err, "membership chain") and hasKind(err, "bad signature") hold.

import type { KeyChangeReason } from "./pins.js";

/** The kinds of UmbraError, as pkg/sdk's sentinel errors. */
export const UmbraErrorKind = {
  /** The call needs the user's keys and the keystore has none (register, or restore a backup). */
  NoPrivateKey: "no private key",
  /** register on a user who has keys or an active card. */
  AlreadyRegistered: "already registered",
  /** A recipient has no active card. */
  NoCard: "no active card",
  /** A card from the directory failed verification (self-signature, service signature, identity). */
  UntrustedCard: "card failed verification",
  /** A message signed with a card that was not the sender's active card when it says it was written. */
  CardNotValidThen: "sender card was not active then",
  /** A new card that no earlier card endorses needs a reset grant from the app backend. */
  ResetGrantRequired: "reset grant required",
  /** A contact's card does not chain to the one this client pinned: a KeyChangedError. */
  KeyChanged: "key changed",
  /** A card signed by a service key that does not chain to a pinned one. */
  UnknownServiceKey: "unknown service key",
  /** A rotation endorsement that is missing or does not verify. */
  BadEndorsement: "bad endorsement",
  /** acceptKeyChange found no key change to accept. */
  NoKeyChange: "no key change",
  /** The group's membership chain does not verify. */
  MembershipChain: "membership chain does not verify",
  /** An encrypted message for a group whose encryption mode is OFF. */
  EncryptionOff: "encryption off",
  /** The group needed a new epoch and none could be committed in a few attempts. */
  RotationFailed: "rotation failed",
  /** The backup service refused the auth key of the password or recovery key: a WrongPasswordError. */
  WrongPassword: "wrong backup password",
  /** The slot's attempts ran out and the service erased the backup. */
  BackupErased: "backup erased",
  /** The slot holds no backup. */
  NoBackup: "no backup",
  /** The backup changed between two steps; nothing was overwritten. */
  BackupConflict: "backup changed meanwhile",
  /** The service released a record, for the right auth key, that does not decrypt. */
  BackupTampered: "backup tampered",
  /** A restore into a keystore that already holds keys. */
  KeysPresent: "keys present",
  /** The stored backup holds keys this device lacks: restore here first. */
  BackupMissesKeys: "backup misses keys",
  /** The pin file or keystore in storage does not parse. */
  StorageDamaged: "storage damaged",
  /**
   * A key transparency checkpoint signed by no log key this client trusts (the key it
   * pinned on first use, or config.logKeys): a server that swapped its log key, or
   * another log. Nothing from that checkpoint is used.
   */
  UnknownLogKey: "checkpoint signed by an unknown key transparency log key",
  /**
   * A lookup the key transparency log does not prove: a card served with no proof or a
   * proof that does not verify, a card that is not the one the map names, a checkpoint
   * whose signature does not verify. Nothing is encrypted to such a card; the cause is
   * the KtError of the check that failed.
   */
  UnprovedCard: "card not proved by the key transparency log",
  /**
   * The server's checkpoint is not consistent with the one this client kept: the log
   * was rewritten or forked (a split view). A LogInconsistentError, with both signed
   * checkpoints as evidence.
   */
  LogInconsistent: "key transparency checkpoint inconsistent with the one this client kept",
  /**
   * The directory has a card (or a change of one) that no checkpoint held within
   * config.keyTransparencyWaitMs: it cannot be proved, so it is not used; try again later.
   */
  NotYetInLog: "card not yet in the key transparency log",
  /** Monitoring found, for the user's own identity, a card (or a revocation) this device did not make: an UnexpectedCardError. */
  UnexpectedCard: "unexpected card in the key transparency log",
} as const;

export type UmbraErrorKind = (typeof UmbraErrorKind)[keyof typeof UmbraErrorKind];

/** UmbraError is a failure of the client, of one kind, with what was wrong. */
export class UmbraError extends Error {
  readonly kind: UmbraErrorKind;
  constructor(kind: UmbraErrorKind, message: string, options?: { cause?: unknown }) {
    super(`umbra: ${kind}: ${message}`, options);
    this.name = "UmbraError";
    this.kind = kind;
  }

  /** The kinds this error is, besides its own (see WrongPasswordError). */
  get kinds(): readonly string[] {
    return [this.kind];
  }
}

/** umbraError is a shorthand for new UmbraError with an optional cause. */
export function umbraError(kind: UmbraErrorKind, message: string, cause?: unknown): UmbraError {
  return new UmbraError(kind, message, cause === undefined ? undefined : { cause });
}

/**
 * hasKind reports whether err, or an error it wraps (its cause, and so on), is of kind:
 * an UmbraError's, an E2eeError's or a KeyBackupError's kind.
 */
export function hasKind(err: unknown, kind: string): boolean {
  for (let e: unknown = err, depth = 0; e instanceof Error && depth < 16; e = e.cause, depth++) {
    const kinds = (e as { kinds?: unknown }).kinds;
    if (Array.isArray(kinds) && kinds.includes(kind)) return true;
    if ((e as { kind?: unknown }).kind === kind) return true;
  }
  return false;
}

/** The card fingerprint: the first 12 bytes of a card id in groups of four hex digits. */
export function fingerprint(id: Uint8Array): string {
  let h = "";
  for (const b of id.subarray(0, 12)) h += b.toString(16).padStart(2, "0");
  return h.match(/.{1,4}/g)?.join(" ") ?? "";
}

/** Says a key change's reason in a sentence. */
export function explainReason(r: KeyChangeReason): string {
  switch (r) {
    case "reset":
      return "the new card is a reset: no earlier key of theirs vouches for it (a reset under a grant from the app backend, or a card the server made up)";
    case "not endorsed":
      return "the new card is not endorsed by the previous key";
    case "bad endorsement":
      return "the new card's endorsement does not verify with the previous key";
    case "rollback":
      return "the directory serves an older card of theirs as the current one";
  }
  return "the new card does not chain to the pinned one by endorsements";
}

/**
 * KeyChangedError is a key change of a contact: the card the directory serves (or that
 * signed a message) does not chain to the one this client pinned. Its kind is
 * "key changed"; its cause, when something failed in the chain, is that failure.
 */
export class KeyChangedError extends UmbraError {
  readonly identity: string;
  readonly oldCardId: Uint8Array;
  readonly newCardId: Uint8Array;
  readonly oldFingerprint: string;
  readonly newFingerprint: string;
  readonly reason: KeyChangeReason;
  /** The user had verified the contact's safety number: refused whatever the policy. */
  readonly verified: boolean;

  constructor(identity: string, oldCardId: Uint8Array, newCardId: Uint8Array, reason: KeyChangeReason, verified: boolean, cause?: unknown) {
    const oldFp = fingerprint(oldCardId);
    const newFp = fingerprint(newCardId);
    let msg = `${identity}'s key changed: pinned ${oldFp}, now ${newFp}: ${explainReason(reason)}`;
    if (cause instanceof Error) msg += ` (${cause.message})`;
    if (verified) msg += "; the contact was verified";
    super(UmbraErrorKind.KeyChanged, msg, cause === undefined ? undefined : { cause });
    this.name = "KeyChangedError";
    this.identity = identity;
    this.oldCardId = oldCardId;
    this.newCardId = newCardId;
    this.oldFingerprint = oldFp;
    this.newFingerprint = newFp;
    this.reason = reason;
    this.verified = verified;
  }
}

/** The backup slots: 1 = password, 2 = recovery key. */
export type BackupSlotName = "password" | "recovery";

/** WrongPasswordError is a refused password or recovery key; its kinds include "backup erased" when it cost the backup. */
export class WrongPasswordError extends UmbraError {
  readonly slot: BackupSlotName;
  /** Wrong guesses left before the backup is erased. */
  readonly remaining: number;
  /** This failure erased the backup. */
  readonly erased: boolean;

  constructor(slot: BackupSlotName, remaining: number, erased: boolean, cause?: unknown) {
    const what = slot === "recovery" ? "recovery key" : "password";
    const msg = erased
      ? `wrong backup ${what} and no attempt left: the backup was erased; back up again`
      : `wrong backup ${what}: ${remaining} attempt${remaining === 1 ? "" : "s"} remain${remaining === 1 ? "s" : ""} before the backup is erased`;
    super(UmbraErrorKind.WrongPassword, msg, cause === undefined ? undefined : { cause });
    this.name = "WrongPasswordError";
    this.slot = slot;
    this.remaining = remaining;
    this.erased = erased;
  }

  override get kinds(): readonly string[] {
    return this.erased ? [UmbraErrorKind.WrongPassword, UmbraErrorKind.BackupErased] : [UmbraErrorKind.WrongPassword];
  }
}

/**
 * LogInconsistentError is a checkpoint inconsistent with the one this client kept. kept
 * and served are both signed by the log key: together they prove that the log showed
 * two histories, evidence to give to the operator's auditors or witnesses. Its cause is
 * the KtError of the failed check.
 */
export class LogInconsistentError extends UmbraError {
  /** The signed checkpoint this client kept. */
  readonly kept: Uint8Array;
  /** The signed checkpoint the server served. */
  readonly served: Uint8Array;

  constructor(kept: Uint8Array, served: Uint8Array, cause: unknown) {
    super(UmbraErrorKind.LogInconsistent, cause instanceof Error ? cause.message : String(cause), { cause });
    this.name = "LogInconsistentError";
    this.kept = kept;
    this.served = served;
  }
}
