// Key transparency's typed errors, pkg/kt's kinds one for one. Every failure of a
// check in this folder is a KtError whose kind says which: test with
// isKtError(err, kind), or hasKind(err, kind) through an error of the client that
// wraps it.

/** The kinds of KtError: their strings are pkg/kt's sentinel errors' messages. */
export const KtErrorKind = {
  /** Not in the format at all: a checkpoint, leaf, map value or proof that does not parse, is not canonical, or has the wrong sizes (kt.ErrMalformed). */
  Malformed: "kt: malformed",
  /** A checkpoint whose signature by a known log key does not verify (kt.ErrBadSignature). */
  BadSignature: "kt: bad checkpoint signature",
  /** A checkpoint signed by no log key the verifier knows (kt.ErrUnknownLogKey). */
  UnknownLogKey: "kt: unknown log key",
  /**
   * Two checkpoints that cannot both be views of one append-only log: a consistency
   * proof that fails, the same size with two roots, or a size that went down
   * (kt.ErrInconsistent).
   */
  Inconsistent: "kt: inconsistent checkpoints",
  /** An inclusion or map proof that does not lead to the committed root, or a lookup whose parts disagree (kt.ErrBadProof). */
  BadProof: "kt: bad proof",
  /** A witness's cosignature line that does not verify, is from the future, or is on a note that is not a checkpoint (kt.ErrBadCosignature). */
  BadCosignature: "kt: bad cosignature",
  /** A checkpoint without the cosignatures the client's witness policy requires (kt.ErrNotWitnessed): a NotWitnessedError. */
  NotWitnessed: "kt: checkpoint not witnessed",
} as const;

export type KtErrorKind = (typeof KtErrorKind)[keyof typeof KtErrorKind];

/** KtError is a key transparency check that failed, of one kind, with what was wrong. */
export class KtError extends Error {
  readonly kind: KtErrorKind;
  constructor(kind: KtErrorKind, message: string, options?: { cause?: unknown }) {
    super(`${kind}: ${message}`, options);
    this.name = "KtError";
    this.kind = kind;
  }
}

/** isKtError reports whether err is a KtError, of kind if one is given. */
export function isKtError(err: unknown, kind?: KtErrorKind): err is KtError {
  return err instanceof KtError && (kind === undefined || err.kind === kind);
}

export function malformed(message: string, cause?: unknown): KtError {
  return new KtError(KtErrorKind.Malformed, message, cause === undefined ? undefined : { cause });
}

export function badProof(message: string): KtError {
  return new KtError(KtErrorKind.BadProof, message);
}

export function inconsistent(message: string): KtError {
  return new KtError(KtErrorKind.Inconsistent, message);
}
