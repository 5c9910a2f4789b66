// Witness cosignatures (docs/wire-format.md 13.8): a C2SP tlog-cosignature/v1
// (Ed25519) signature line a witness appends to a signed checkpoint, by which it states
// that, at the time it carries, this checkpoint was the largest it had seen of the log
// and consistent with every earlier one it had seen.
//
//   — <witness name> base64(key ID (4 bytes) ‖ timestamp (8 bytes, big-endian) ‖ Ed25519 signature (64 bytes))
//
// The key ID is the first 4 bytes of SHA-256(name ‖ 0x0a ‖ 0x04 ‖ public key); the
// signature is over
//
//   cosignature/v1\n
//   time <timestamp, decimal>\n
//   <the checkpoint's whole body, with its final newline>
//
// pkg/kt's cosignature.go in TypeScript: the same cosignatures verify, the same are
// refused with the same kinds, and a WitnessPolicy ("at least k of these witnesses")
// accepts the same checkpoints.

import { concat, equalBytes, utf8Bytes } from "../bytes.js";
import { sha256 } from "../platform.js";
import { checkSigningPublicKey, verifySignatureAsync } from "../pubkey.js";
import { base64Decode, base64Encode } from "./base64.js";
import { parseCheckpoint, MaxCheckpointSize } from "./checkpoint.js";
import { KtError, KtErrorKind, malformed } from "./errors.js";
import { parseNote, validKeyName } from "./note.js";

/** The signed-note algorithm byte of C2SP tlog-cosignature/v1 Ed25519 keys. */
const algCosignatureV1 = 0x04;
/** A cosignature's bytes after its key ID: timestamp and signature. */
const cosignatureSize = 8 + 64;
const maxInt64 = (1n << 63n) - 1n;

/**
 * MaxCosignatureSkewMs is how far in the future a cosignature's time may be, by the
 * verifier's clock, and still count (kt.MaxCosignatureSkew): 5 minutes.
 */
export const MaxCosignatureSkewMs = 5 * 60 * 1000;

/** WitnessKey is a witness's public key: the name it signs as and its Ed25519 key. */
export interface WitnessKey {
  readonly name: string;
  /** The key ID of its signature lines: SHA-256(name ‖ 0x0a ‖ 0x04 ‖ public key)[:4], big-endian. */
  readonly hash: number;
  readonly publicKey: Uint8Array;
  /** The verifier key string, "<name>+<key ID>+<base64(0x04 ‖ public key)>". */
  readonly key: string;
}

/** cosignerKeyHash is a witness key's ID: the first 4 bytes of SHA-256(name ‖ 0x0a ‖ 0x04 ‖ public key), big-endian. */
export function cosignerKeyHash(name: string, publicKey: Uint8Array): number {
  const h = sha256(utf8Bytes(name), Uint8Array.of(0x0a, algCosignatureV1), publicKey);
  return ((h[0]! << 24) | (h[1]! << 16) | (h[2]! << 8) | h[3]!) >>> 0;
}

/** witnessKeyString is the verifier key string of a witness's Ed25519 public key named name. */
export function witnessKeyString(name: string, publicKey: Uint8Array): string {
  if (!validKeyName(name)) throw new Error(`kt: witness name ${JSON.stringify(name)} is not a valid key name`);
  const hash = cosignerKeyHash(name, publicKey);
  return `${name}+${hash.toString(16).padStart(8, "0")}+${base64Encode(concat(Uint8Array.of(algCosignatureV1), publicKey))}`;
}

/**
 * parseWitnessKey reads a witness's verifier key, as kt.ParseWitnessKey does, and
 * refuses an Ed25519 key that could not verify a signature (section 3). It throws an
 * Error, not a KtError: the key is configuration, not the server's answer. A log key
 * (algorithm 0x01) is not a witness key.
 */
export function parseWitnessKey(vkey: string): WitnessKey {
  const bad = (why: string): never => {
    throw new Error(`kt: witness key ${JSON.stringify(vkey)}: ${why}`);
  };
  const first = vkey.indexOf("+");
  const second = first < 0 ? -1 : vkey.indexOf("+", first + 1);
  if (second < 0) bad("not <name>+<key ID>+<key>");
  const [name, hash16, key64] = [vkey.slice(0, first), vkey.slice(first + 1, second), vkey.slice(second + 1)];
  if (!validKeyName(name)) bad("the name is not a valid key name: non-empty UTF-8 without spaces, newlines or '+'");
  if (!/^[0-9a-fA-F]{8}$/.test(hash16)) bad(`key ID ${JSON.stringify(hash16)} is not 8 hex digits`);
  const key = base64Decode(key64, true);
  if (key === undefined || key.length !== 33) bad("the key is not the base64 of 33 bytes");
  if (key![0] !== algCosignatureV1) {
    bad(`algorithm 0x${key![0]!.toString(16).padStart(2, "0")}, want 0x04 (cosignature/v1 Ed25519); a log key (0x01) is not a witness key`);
  }
  const publicKey = key!.slice(1);
  const hash = cosignerKeyHash(name, publicKey);
  if (parseInt(hash16, 16) !== hash) bad(`key ID ${hash16}, but name and key give ${hash.toString(16).padStart(8, "0")}`);
  try {
    checkSigningPublicKey(publicKey, "witness key");
  } catch (e) {
    bad(e instanceof Error ? e.message : String(e));
  }
  return { name, hash, publicKey, key: vkey };
}

/** cosignedMessage is what a witness signs for a checkpoint body text at a time. */
export function cosignedMessage(text: string, timestamp: bigint): Uint8Array {
  return utf8Bytes(`cosignature/v1\ntime ${timestamp}\n${text}`);
}

function readUint64(b: Uint8Array): bigint {
  let v = 0n;
  for (let i = 0; i < 8; i++) v = (v << 8n) | BigInt(b[i]!);
  return v;
}

/**
 * verifyCosignature checks witness's cosignature on signed (a signed checkpoint) and
 * returns its time in seconds since 1970. A note without a signature line of the
 * witness (its name and key ID) is NotWitnessed; one whose first such line does not
 * verify (not 72 bytes, a time past 2^63 − 1, a bad signature), or that is not a
 * checkpoint, BadCosignature; a note that does not parse, Malformed. It does not check
 * the log's signature: openCheckpoint does. kt.VerifyCosignature.
 */
export async function verifyCosignature(signed: Uint8Array, witness: WitnessKey): Promise<bigint> {
  if (signed.length > MaxCheckpointSize) throw malformed(`signed checkpoint of ${signed.length} bytes, at most ${MaxCheckpointSize}`);
  const note = parseNote(signed);
  const line = note.lines.find((l) => l.name === witness.name && l.hash === witness.hash);
  if (!line) throw new KtError(KtErrorKind.NotWitnessed, `no cosignature by witness ${witness.name}`);
  const badCosignature = () => new KtError(KtErrorKind.BadCosignature, `the cosignature of witness ${witness.name} does not verify`);
  if (line.sig.length !== cosignatureSize) throw badCosignature();
  const ts = readUint64(line.sig);
  if (ts > maxInt64) throw badCosignature();
  if (!(await verifySignatureAsync(witness.publicKey, cosignedMessage(note.text, ts), line.sig.subarray(8)))) throw badCosignature();
  try {
    parseCheckpoint(note.text);
  } catch (e) {
    throw new KtError(KtErrorKind.BadCosignature, `witness ${witness.name} cosigned a note that is not a checkpoint: ${e instanceof Error ? e.message : String(e)}`, { cause: e });
  }
  return ts;
}

/** Cosignature is a verified cosignature: by whom, and when (seconds since 1970). */
export interface Cosignature {
  readonly witness: WitnessKey;
  readonly time: bigint;
}

/**
 * NotWitnessedError is a checkpoint without its quorum of valid cosignatures
 * (kt.NotWitnessedError): a KtError of kind NotWitnessed, with the cosignatures that
 * counted and, for each witness whose did not, why (a KtError of kind NotWitnessed or
 * BadCosignature, or what failed on the way to the witness).
 */
export class NotWitnessedError extends KtError {
  readonly quorum: number;
  readonly valid: readonly Cosignature[];
  readonly missing: ReadonlyMap<string, Error>;
  constructor(quorum: number, valid: readonly Cosignature[], missing: ReadonlyMap<string, Error>) {
    let msg = `${valid.length} valid cosignatures of the ${quorum} required`;
    for (const [name, err] of missing) msg += `; ${name}: ${err.message}`;
    super(KtErrorKind.NotWitnessed, msg);
    this.name = "NotWitnessedError";
    this.quorum = quorum;
    this.valid = valid;
    this.missing = missing;
  }
}

/**
 * WitnessPolicy is a client's rule for checkpoints: it accepts one only with valid
 * cosignatures from at least quorum of the witnesses it names (kt.WitnessPolicy).
 */
export class WitnessPolicy {
  readonly quorum: number;
  readonly witnesses: readonly WitnessKey[];

  /**
   * The policy "at least quorum of these witnesses" (verifier key strings, or parsed).
   * The quorum must be from 1 to the number of witnesses, and no public key may be named
   * twice: a cosignature/v1 signature does not cover the witness's name, so one key
   * under two names would count one signature twice. Throws an Error otherwise.
   */
  constructor(quorum: number, witnessKeys: readonly (string | WitnessKey)[]) {
    if (!Number.isInteger(quorum) || quorum < 1 || quorum > witnessKeys.length) {
      throw new Error(`kt: witness quorum ${quorum} of ${witnessKeys.length} witnesses: want 1 to ${witnessKeys.length}`);
    }
    const keys = witnessKeys.map((k) => (typeof k === "string" ? parseWitnessKey(k) : k));
    for (let i = 0; i < keys.length; i++) {
      for (let j = 0; j < i; j++) {
        if (equalBytes(keys[i]!.publicKey, keys[j]!.publicKey)) {
          throw new Error(`kt: witnesses ${keys[j]!.name} and ${keys[i]!.name} have the same public key: each witness needs its own`);
        }
      }
    }
    this.quorum = quorum;
    this.witnesses = keys;
  }

  /**
   * check verifies the cosignatures of the policy's witnesses on signed (a signed
   * checkpoint) and returns those that count, or throws a NotWitnessedError when fewer
   * than the quorum do. A cosignature counts if it verifies and its time is at most
   * MaxCosignatureSkewMs after now. Lines of other keys are ignored. It does not verify
   * the log's signature: openCheckpoint does, and a client calls both.
   */
  async check(signed: Uint8Array, now: Date): Promise<Cosignature[]> {
    if (signed.length > MaxCheckpointSize) throw malformed(`signed checkpoint of ${signed.length} bytes, at most ${MaxCheckpointSize}`);
    const valid: Cosignature[] = [];
    const missing = new Map<string, Error>();
    const limit = BigInt(Math.floor((now.getTime() + MaxCosignatureSkewMs) / 1000));
    for (const w of this.witnesses) {
      let t: bigint;
      try {
        t = await verifyCosignature(signed, w);
      } catch (e) {
        if (e instanceof KtError && e.kind === KtErrorKind.Malformed) throw e;
        missing.set(w.name, e as Error);
        continue;
      }
      if (t > limit) {
        missing.set(w.name, new KtError(KtErrorKind.BadCosignature, `cosigned at ${new Date(Number(t) * 1000).toISOString()}, in the future`));
        continue;
      }
      valid.push({ witness: w, time: t });
    }
    if (valid.length < this.quorum) throw new NotWitnessedError(this.quorum, valid, missing);
    return valid;
  }
}

/**
 * mergeCosignatures returns signed with the signature lines of each of others that it
 * lacks appended, for each of others that is a note of the same body; notes of another
 * body are returned apart (a witness that answered with another checkpoint).
 * kt.MergeCosignatures.
 */
export function mergeCosignatures(signed: Uint8Array, ...others: Uint8Array[]): { merged: Uint8Array; differing: Uint8Array[] } {
  const parse = (b: Uint8Array) => {
    if (b.length > MaxCheckpointSize) throw malformed(`signed checkpoint of ${b.length} bytes, at most ${MaxCheckpointSize}`);
    return parseNote(b);
  };
  const base = parse(signed);
  const have = new Set(base.lines.map((l) => `${l.name} ${l.base64}`));
  let out = new TextDecoder().decode(signed);
  const differing: Uint8Array[] = [];
  for (const o of others) {
    const n = parse(o);
    if (n.text !== base.text) {
      differing.push(o);
      continue;
    }
    for (const l of n.lines) {
      const line = `${l.name} ${l.base64}`;
      if (!have.has(line)) {
        have.add(line);
        out += `\u2014 ${line}\n`;
      }
    }
  }
  const merged = utf8Bytes(out);
  if (merged.length > MaxCheckpointSize) throw malformed(`cosigned checkpoint of ${merged.length} bytes, at most ${MaxCheckpointSize}`);
  return { merged, differing };
}

/**
 * ForkError is proof that a log showed two histories (kt.ForkError): two checkpoints,
 * each signed by the log key, that cannot both be views of one append-only log. A
 * KtError of kind Inconsistent.
 */
export class ForkError extends KtError {
  readonly origin: string;
  /** The checkpoint the detector held (cosigned, for a witness): a signed note. */
  readonly held: Uint8Array;
  /** The one that contradicts it: a signed note. */
  readonly conflicting: Uint8Array;
  readonly heldSize: bigint;
  readonly conflictingSize: bigint;
  readonly reason: string;
  constructor(origin: string, held: Uint8Array, conflicting: Uint8Array, heldSize: bigint, conflictingSize: bigint, reason: string) {
    super(KtErrorKind.Inconsistent, `fork of log ${origin}: the checkpoints of ${heldSize} and ${conflictingSize} entries ${reason}`);
    this.name = "ForkError";
    this.origin = origin;
    this.held = held;
    this.conflicting = conflicting;
    this.heldSize = heldSize;
    this.conflictingSize = conflictingSize;
    this.reason = reason;
  }
}
