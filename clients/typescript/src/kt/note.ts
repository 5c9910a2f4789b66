// C2SP signed notes (c2sp.org/signed-note) with Ed25519 keys, read as
// golang.org/x/mod/sumdb/note's Open reads them, since the card service writes its
// checkpoints with it: the same notes are accepted and refused, with pkg/kt's kinds.
//
//   <text, ending in a newline>
//   <blank line>
//   — <key name> <base64(key hash (4 bytes) ‖ signature)>
//   ...
//
// A verifier key is "<name>+<key hash, 8 hex digits>+<base64(0x01 ‖ Ed25519 public
// key)>"; the key hash is the first 4 bytes, big-endian, of
// SHA-256(name ‖ 0x0a ‖ 0x01 ‖ public key). Signatures are Ed25519 over the text's
// bytes, verified by the rules of docs/wire-format.md section 3 (pubkey.ts).

import { concat, equalBytes, utf8Bytes } from "../bytes.js";
import { sha256 } from "../platform.js";
import { checkSigningPublicKey, verifySignatureAsync } from "../pubkey.js";
import { base64Decode, base64Encode } from "./base64.js";
import { KtError, KtErrorKind, malformed } from "./errors.js";

/** The signed-note algorithm byte of Ed25519 keys. */
const algEd25519 = 1;
/** Open reads at most this many signature lines. */
const maxSignatures = 100;

/** A signed-note verifier: one Ed25519 key and its name. */
export interface NoteVerifier {
  readonly name: string;
  /** The key hash: the first 4 bytes of SHA-256(name ‖ 0x0a ‖ 0x01 ‖ public key), big-endian. */
  readonly hash: number;
  readonly publicKey: Uint8Array;
  /** The verifier key string it was read from. */
  readonly key: string;
}

/** One signature line of a note. */
export interface NoteSignature {
  readonly name: string;
  readonly hash: number;
  readonly base64: string;
}

/** An opened note: its text, the signatures of known keys (all verified) and the others. */
export interface OpenedNote {
  readonly text: string;
  readonly sigs: readonly NoteSignature[];
  readonly unverifiedSigs: readonly NoteSignature[];
}

// unicode.IsSpace: ASCII's white space, U+0085, U+00A0 and Unicode's White_Space.
const space = /[\t\n\v\f\r \u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]/;
const loneSurrogate = /[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]/;

/** validKeyName is the signed-note rule for key names: non-empty UTF-8 without spaces or '+'. */
export function validKeyName(name: string): boolean {
  return name !== "" && !loneSurrogate.test(name) && !space.test(name) && !name.includes("+");
}

/** keyHash is a signed-note key hash of name and key (the algorithm byte and the public key). */
export function keyHash(name: string, key: Uint8Array): number {
  const h = sha256(utf8Bytes(name), Uint8Array.of(0x0a), key);
  return ((h[0]! << 24) | (h[1]! << 16) | (h[2]! << 8) | h[3]!) >>> 0;
}

function chop(s: string, sep: string): [string, string] {
  const i = s.indexOf(sep);
  return i < 0 ? [s, ""] : [s.slice(0, i), s.slice(i + sep.length)];
}

/**
 * parseVerifierKey reads a verifier key string, as note.NewVerifier does, and refuses
 * an Ed25519 key that could not verify a signature (section 3, "Public keys"). It
 * throws an Error (not a KtError: the key is configuration, not the server's answer).
 */
export function parseVerifierKey(vkey: string): NoteVerifier {
  const [name, rest] = chop(vkey, "+");
  const [hash16, key64] = chop(rest, "+");
  const key = base64Decode(key64);
  if (hash16.length !== 8 || !/^[0-9a-fA-F]{8}$/.test(hash16) || key === undefined || !validKeyName(name) || key.length === 0) {
    throw new Error(`kt: log key ${JSON.stringify(vkey)}: malformed verifier key`);
  }
  const hash = parseInt(hash16, 16);
  if (hash !== keyHash(name, key)) throw new Error(`kt: log key ${JSON.stringify(vkey)}: invalid verifier hash`);
  if (key[0] !== algEd25519) throw new Error(`kt: log key ${JSON.stringify(vkey)}: unknown verifier algorithm`);
  const pub = key.slice(1);
  if (pub.length !== 32) throw new Error(`kt: log key ${JSON.stringify(vkey)}: malformed verifier key`);
  try {
    checkSigningPublicKey(pub, "log key");
  } catch (e) {
    throw new Error(`kt: log key ${JSON.stringify(vkey)}: ${e instanceof Error ? e.message : String(e)}`, { cause: e });
  }
  return { name, hash, publicKey: pub, key: vkey };
}

/** verifierKey is the verifier key string of an Ed25519 public key named name. */
export function verifierKey(name: string, publicKey: Uint8Array): string {
  if (!validKeyName(name)) throw new Error(`kt: ${JSON.stringify(name)} is not a valid key name`);
  const key = concat(Uint8Array.of(algEd25519), publicKey);
  return `${name}+${keyHash(name, key).toString(16).padStart(8, "0")}+${base64Encode(key)}`;
}

const strictUtf8 = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true });
const sigPrefix = "\u2014 ";

/** One signature line of a note, with its decoded bytes (key hash, then signature). */
export interface NoteLine extends NoteSignature {
  /** The signature's bytes after the 4-byte key hash. */
  readonly sig: Uint8Array;
}

/** A parsed note whose signatures are not verified: its text (as bytes too) and its signature lines, in order. */
export interface ParsedNote {
  readonly text: string;
  readonly textBytes: Uint8Array;
  readonly lines: readonly NoteLine[];
}

/**
 * parseNote reads a signed note's text and signature lines without verifying any, with
 * note.Open's rules for the format: anything that is not a note is Malformed.
 */
export function parseNote(msg: Uint8Array): ParsedNote {
  try {
    strictUtf8.decode(msg);
  } catch {
    throw malformed("signed checkpoint: malformed note: not UTF-8");
  }
  for (const b of msg) {
    if (b < 0x20 && b !== 0x0a) throw malformed("signed checkpoint: malformed note: a control character");
  }
  // The signature block follows the last blank line.
  let split = -1;
  for (let i = msg.length - 2; i >= 0; i--) {
    if (msg[i] === 0x0a && msg[i + 1] === 0x0a) {
      split = i;
      break;
    }
  }
  if (split < 0) throw malformed("signed checkpoint: malformed note: no signature block");
  const textBytes = msg.subarray(0, split + 1);
  const sigBytes = msg.subarray(split + 2);
  if (sigBytes.length === 0 || sigBytes[sigBytes.length - 1] !== 0x0a) throw malformed("signed checkpoint: malformed note: no signature line");
  const text = strictUtf8.decode(textBytes);
  const raw = strictUtf8.decode(sigBytes).split("\n");
  raw.pop(); // after the last newline
  if (raw.length > maxSignatures) throw malformed(`signed checkpoint: malformed note: more than ${maxSignatures} signatures`);
  const lines: NoteLine[] = [];
  for (const full of raw) {
    if (!full.startsWith(sigPrefix)) throw malformed("signed checkpoint: malformed note: a signature line does not start with an em dash and a space");
    const line = full.slice(sigPrefix.length);
    const [name, b64] = chop(line, " ");
    const sig = base64Decode(b64);
    if (sig === undefined || !validKeyName(name) || b64 === "" || sig.length < 5) throw malformed("signed checkpoint: malformed note: a signature line");
    const hash = ((sig[0]! << 24) | (sig[1]! << 16) | (sig[2]! << 8) | sig[3]!) >>> 0;
    lines.push({ name, hash, base64: b64, sig: sig.subarray(4) });
  }
  return { text, textBytes, lines };
}

/**
 * openNote opens a signed note as note.Open does, against the known verifiers: every
 * signature line by a known key must verify (else BadSignature), at least one must be
 * by a known key (else UnknownLogKey), and anything that is not a note is Malformed.
 * Signature lines of unknown keys are returned unverified. Of several lines of one
 * known key, the first is the one verified. Several known keys may share a name (a log
 * key and its successor during a rotation): the note opens if any of them signed it,
 * and each that did must verify.
 */
export async function openNote(msg: Uint8Array, known: readonly NoteVerifier[]): Promise<OpenedNote> {
  const { text, textBytes, lines } = parseNote(msg);
  const sigs: NoteSignature[] = [];
  const unverified: NoteSignature[] = [];
  const seen = new Set<string>();
  const seenUnverified = new Set<string>();
  for (const { name, hash, base64: b64, sig } of lines) {
    const matching = known.filter((v) => v.name === name && v.hash === hash);
    if (matching.length === 0) {
      const line = `${name} ${b64}`;
      if (!seenUnverified.has(line)) {
        seenUnverified.add(line);
        unverified.push({ name, hash, base64: b64 });
      }
      continue;
    }
    if (matching.length > 1 && !matching.every((m) => sameVerifier(m, matching[0]!))) {
      throw malformed(`signed checkpoint: ambiguous key ${name}+${hash.toString(16).padStart(8, "0")}`);
    }
    const id = `${name}+${hash}`;
    if (seen.has(id)) continue;
    seen.add(id);
    if (!(await verifySignatureAsync(matching[0]!.publicKey, textBytes, sig))) {
      throw new KtError(KtErrorKind.BadSignature, `invalid signature for key ${name}+${hash.toString(16).padStart(8, "0")}`);
    }
    sigs.push({ name, hash, base64: b64 });
  }
  if (sigs.length === 0) {
    throw new KtError(KtErrorKind.UnknownLogKey, `the checkpoint is signed by none of the ${known.length} known log keys`);
  }
  return { text, sigs, unverifiedSigs: unverified };
}

/** sameVerifier reports whether two verifiers are one key under one name. */
export function sameVerifier(a: NoteVerifier, b: NoteVerifier): boolean {
  return a.name === b.name && a.hash === b.hash && equalBytes(a.publicKey, b.publicKey);
}
