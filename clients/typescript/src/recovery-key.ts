// Recovery keys (docs/wire-format.md, 10.6): 20 random bytes written as 36 characters
// of Crockford's base32 in nine groups of four, the last group a check (pkg/keybackup
// recovery.go).
import { sha256 } from "@noble/hashes/sha2.js";
import { constantTimeEqual, labelled, randomBytes } from "./bytes.js";
import { KeyBackupError, KeyBackupErrorKind } from "./errors.js";
import { LabelRecoveryKeyCheck } from "./labels.js";

const alphabet = "0123456789ABCDEFGHJKMNPQRSTVWXYZ";
export const RecoveryKeySize = 20;

/** base32 encodes b in RFC 4648 bit order with the recovery alphabet, no padding. */
function base32(b: Uint8Array): string {
  let out = "", bits = 0, acc = 0;
  for (const byte of b) {
    acc = (acc << 8) | byte;
    bits += 8;
    while (bits >= 5) {
      out += alphabet[(acc >>> (bits - 5)) & 31];
      bits -= 5;
    }
  }
  if (bits > 0) out += alphabet[(acc << (5 - bits)) & 31];
  return out;
}

function recoveryCheck(k: Uint8Array): string {
  return base32(sha256(labelled(LabelRecoveryKeyCheck, k)).subarray(0, 3)).slice(0, 4);
}

/** newRecoveryKey returns 20 random bytes: a recovery key's secret. */
export function newRecoveryKey(): Uint8Array {
  return randomBytes(RecoveryKeySize);
}

/** formatRecoveryKey writes k as the user sees it, like "208H-44RM-2MB1-E60S-38DH-R78Y-3WG2-28H3-P4ED". */
export function formatRecoveryKey(k: Uint8Array): string {
  if (k.length !== RecoveryKeySize) throw new KeyBackupError(KeyBackupErrorKind.RecoveryKey, `a recovery key is 20 bytes, not ${k.length}`);
  return (base32(k) + recoveryCheck(k)).match(/.{4}/g)!.join("-");
}

/**
 * parseRecoveryKey reads a recovery key as formatRecoveryKey writes it, tolerating lower
 * case, spaces, tabs, line breaks and dashes, reading O as 0 and I or L as 1. A wrong
 * length, a character outside the alphabet or a check group that does not match is
 * RecoveryKey.
 */
export function parseRecoveryKey(s: string): Uint8Array {
  const bad = (msg: string) => new KeyBackupError(KeyBackupErrorKind.RecoveryKey, msg);
  let chars = "";
  for (let r of s) {
    if (r === "-" || r === " " || r === "\t" || r === "\n" || r === "\r") continue;
    if (r >= "a" && r <= "z") r = r.toUpperCase();
    if (r === "O") r = "0";
    else if (r === "I" || r === "L") r = "1";
    if (!alphabet.includes(r)) throw bad(`${JSON.stringify(r)} is not a character of a recovery key`);
    chars += r;
  }
  if (chars.length !== 36) throw bad(`${chars.length} characters; a recovery key has 36 (nine groups of four)`);
  const k = new Uint8Array(RecoveryKeySize);
  let bits = 0, acc = 0, n = 0;
  for (const c of chars.slice(0, 32)) {
    acc = ((acc << 5) | alphabet.indexOf(c)) & 0xffff;
    bits += 5;
    if (bits >= 8) {
      k[n++] = (acc >>> (bits - 8)) & 0xff;
      bits -= 8;
    }
  }
  const enc = new TextEncoder();
  if (!constantTimeEqual(enc.encode(recoveryCheck(k)), enc.encode(chars.slice(32)))) {
    throw bad("the check group does not match: a character is mistyped");
  }
  return k;
}
