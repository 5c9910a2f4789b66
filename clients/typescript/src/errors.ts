// Typed errors. Every failure of the cryptographic core is an E2eeError (pkg/e2ee's
// kinds) or a KeyBackupError (pkg/keybackup's kinds) whose `kind` says what went wrong,
// with a message that says why; test with `err instanceof E2eeError && err.kind === ...`
// or with isE2eeError(err, kind).

/** The kinds of E2eeError, as pkg/e2ee's sentinel errors. */
export const E2eeErrorKind = {
  /** Bytes that do not parse, are truncated, are not canonical, carry unknown fields, or break a size or shape rule. */
  Malformed: "malformed",
  /** A suite, AEAD or keystore protection this version does not know. */
  UnknownSuite: "unknown suite",
  /** A signature that does not verify. */
  BadSignature: "bad signature",
  /** A message with no stanza for any card whose key we hold. */
  NotRecipient: "not a recipient",
  /** A message, commit or statement signed by a card that is not the expected one. */
  WrongSender: "wrong sender",
  /** A ciphertext that does not authenticate under the key it should. */
  Decrypt: "decryption failed",
  /** Input over a size limit. */
  TooLarge: "too large",
  /** A keystore passphrase that is wrong, missing, or given for a keystore that has none. */
  Passphrase: "wrong passphrase",
  /** A key wrapped to a card that is not ours, or a signer that is not a member. */
  NotMember: "not a member",
  /** A commit or message of another epoch than expected, or whose key we do not hold. */
  WrongEpoch: "wrong epoch",
  /** A commit, message or statement of another group than expected. */
  WrongGroup: "wrong group",
  /** A membership statement that does not follow the head of the chain it is applied to. */
  BrokenChain: "broken membership chain",
  /** A membership statement whose signer may not make its change. */
  NotAuthorized: "signer not authorized",
  /** A membership statement whose change does not fit the membership it follows. */
  InvalidChange: "invalid membership change",
  /** A membership statement of a kind this version does not know. */
  UnknownKind: "unknown statement kind",
} as const;

export type E2eeErrorKind = (typeof E2eeErrorKind)[keyof typeof E2eeErrorKind];

/** E2eeError is a failure of one kind, with what was wrong. */
export class E2eeError extends Error {
  readonly kind: E2eeErrorKind;
  constructor(kind: E2eeErrorKind, message: string, options?: { cause?: unknown }) {
    super(`e2ee: ${kind}: ${message}`, options);
    this.name = "E2eeError";
    this.kind = kind;
  }
}

/** isE2eeError reports whether err is an E2eeError, of kind if one is given. */
export function isE2eeError(err: unknown, kind?: E2eeErrorKind): err is E2eeError {
  return err instanceof E2eeError && (kind === undefined || err.kind === kind);
}

/** The kinds of KeyBackupError, as pkg/keybackup's sentinel errors. */
export const KeyBackupErrorKind = {
  /** An input that breaks a rule of the format (a size, a bound, an unknown slot or AEAD, a malformed element). */
  Invalid: "invalid input",
  /** The service's evaluation has no valid DLEQ proof for the public key it named. */
  BadProof: "OPRF proof does not verify",
  /** A backup ciphertext that does not authenticate under the derived key. */
  Decrypt: "backup does not decrypt",
  /** A recovery key that does not parse, or whose check group does not match. */
  RecoveryKey: "invalid recovery key",
  /** A password record whose Argon2id parameters are cheaper than the floor. */
  WeakParams: "Argon2id parameters too weak",
} as const;

export type KeyBackupErrorKind = (typeof KeyBackupErrorKind)[keyof typeof KeyBackupErrorKind];

/** KeyBackupError is a failure of a key backup step, of one kind. */
export class KeyBackupError extends Error {
  readonly kind: KeyBackupErrorKind;
  constructor(kind: KeyBackupErrorKind, message: string, options?: { cause?: unknown }) {
    super(`keybackup: ${kind}: ${message}`, options);
    this.name = "KeyBackupError";
    this.kind = kind;
  }
}

/** isKeyBackupError reports whether err is a KeyBackupError, of kind if one is given. */
export function isKeyBackupError(err: unknown, kind?: KeyBackupErrorKind): err is KeyBackupError {
  return err instanceof KeyBackupError && (kind === undefined || err.kind === kind);
}

/** e2eeError is a shorthand for new E2eeError. */
export function e2eeError(kind: E2eeErrorKind, message: string, cause?: unknown): E2eeError {
  return new E2eeError(kind, message, cause === undefined ? undefined : { cause });
}
