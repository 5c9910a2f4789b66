// Checkpoints (docs/wire-format.md 13.5): a C2SP tlog-checkpoint of the log with one
// extension line that commits to the map at the same moment, signed as a C2SP signed
// note by the log key, whose name is the log's origin:
//
//   <origin>
//   <log size, decimal, no leading zeros>
//   <log root, standard base64>
//   umbra-map <map root, standard base64>
//
// pkg/kt's checkpoint.go in TypeScript: the same bodies and notes are accepted, and the
// same refused with the same kinds.

import { equalBytes } from "../bytes.js";
import { base64Decode, base64Encode } from "./base64.js";
import { KtError, KtErrorKind, malformed } from "./errors.js";
import { openNote, parseVerifierKey, type NoteSignature, type NoteVerifier } from "./note.js";

/** HashSize is the size of every hash of the log and the map: SHA-256. */
export const HashSize = 32;
/** MapExtension starts the checkpoint's map root line. */
export const MapExtension = "umbra-map ";
/** MaxCheckpointSize bounds a signed checkpoint: the body is under 200 bytes, each signature line under 200 more. */
export const MaxCheckpointSize = 16 << 10;

const maxUint64 = (1n << 64n) - 1n;

/** Checkpoint is a checkpoint's body: what the log key signs. */
export interface Checkpoint {
  /** The log's name, and the name of its log key. */
  readonly origin: string;
  /** The number of log entries. */
  readonly size: bigint;
  /** The root of the tree of those entries. */
  readonly logRoot: Uint8Array;
  /** The root of the map after exactly those entries. */
  readonly mapRoot: Uint8Array;
}

/** An opened checkpoint: its body, the signed note it came from, and its signatures. */
export interface SignedCheckpoint extends Checkpoint {
  /** The signed note, exactly as received. */
  readonly signed: Uint8Array;
  /** The verified signatures (the log key's, and any other known key's). */
  readonly sigs: readonly NoteSignature[];
  /** Signatures by keys the verifier does not know (a witness's cosignature, say). */
  readonly unverifiedSigs: readonly NoteSignature[];
}

/** checkpointText is a checkpoint's body as a note's text. */
export function checkpointText(c: Checkpoint): string {
  return `${c.origin}\n${c.size}\n${base64Encode(c.logRoot)}\n${MapExtension}${base64Encode(c.mapRoot)}\n`;
}

function decodeHash(s: string, what: string): Uint8Array {
  const b = base64Decode(s, true);
  if (b === undefined || b.length !== HashSize || base64Encode(b) !== s) {
    throw malformed(`${what}: ${JSON.stringify(s)} is not the standard base64 of ${HashSize} bytes`);
  }
  return b;
}

/** parseCheckpoint parses a checkpoint's body (a note's text); anything else is Malformed. */
export function parseCheckpoint(text: string): Checkpoint {
  const lines = text.split("\n");
  if (lines.length !== 5 || lines[4] !== "") {
    throw malformed(`checkpoint body of ${lines.length - 1} lines, want 4, each ending in a newline`);
  }
  const [origin, sizeLine, logRootLine, mapLine] = lines as [string, string, string, string];
  if (origin === "") throw malformed("checkpoint origin line is empty");
  if (!/^(0|[1-9][0-9]*)$/.test(sizeLine) || BigInt(sizeLine) > maxUint64) {
    throw malformed(`checkpoint size ${JSON.stringify(sizeLine)} is not a decimal number without leading zeros`);
  }
  const logRoot = decodeHash(logRootLine, "checkpoint log root");
  if (!mapLine.startsWith(MapExtension)) {
    throw malformed(`checkpoint fourth line ${JSON.stringify(mapLine)} does not start with ${JSON.stringify(MapExtension)}`);
  }
  const mapRoot = decodeHash(mapLine.slice(MapExtension.length), "checkpoint map root");
  return { origin, size: BigInt(sizeLine), logRoot, mapRoot };
}

/**
 * openCheckpoint verifies a signed checkpoint against the log keys the client knows
 * (verifier key strings, or parsed) and returns its body. It must carry a valid
 * signature by the known key named by its origin; every signature by a known key must
 * verify; other signatures (a witness's cosignature) are returned unverified.
 * kt.OpenCheckpoint.
 */
export async function openCheckpoint(signed: Uint8Array, ...logKeys: (string | NoteVerifier)[]): Promise<SignedCheckpoint> {
  if (signed.length > MaxCheckpointSize) throw malformed(`signed checkpoint of ${signed.length} bytes, at most ${MaxCheckpointSize}`);
  const verifiers = logKeys.map((k) => (typeof k === "string" ? parseVerifierKey(k) : k));
  const note = await openNote(signed, verifiers);
  const c = parseCheckpoint(note.text);
  if (!note.sigs.some((s) => s.name === c.origin)) {
    throw new KtError(KtErrorKind.UnknownLogKey, `the checkpoint of origin ${JSON.stringify(c.origin)} is not signed by a known key of that name`);
  }
  return { ...c, signed: signed.slice(), sigs: note.sigs, unverifiedSigs: note.unverifiedSigs };
}

/** sameCheckpoint reports whether two checkpoints have one body. */
export function sameCheckpoint(a: Checkpoint, b: Checkpoint): boolean {
  return a.origin === b.origin && a.size === b.size && equalBytes(a.logRoot, b.logRoot) && equalBytes(a.mapRoot, b.mapRoot);
}
