// Byte-string helpers for the wire format's notation (docs/wire-format.md, section 1).
import { bytesToHex, hexToBytes } from "@noble/hashes/utils.js";
import { sha256 } from "./platform.js";

const utf8 = new TextEncoder();

/** utf8Bytes returns the UTF-8 bytes of s. */
export function utf8Bytes(s: string): Uint8Array {
  return utf8.encode(s);
}

/** concat returns the concatenation of parts. */
export function concat(...parts: Uint8Array[]): Uint8Array {
  let n = 0;
  for (const p of parts) n += p.length;
  const out = new Uint8Array(n);
  let off = 0;
  for (const p of parts) {
    out.set(p, off);
    off += p.length;
  }
  return out;
}

/** equalBytes reports whether a and b hold the same bytes (not in constant time). */
export function equalBytes(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

/** constantTimeEqual reports whether a and b are equal, in time independent of their contents. */
export function constantTimeEqual(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  let diff = 0;
  for (let i = 0; i < a.length; i++) diff |= a[i]! ^ b[i]!;
  return diff === 0;
}

/** compareBytes orders a and b bytewise, as Go's bytes.Compare. */
export function compareBytes(a: Uint8Array, b: Uint8Array): number {
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; i++) if (a[i] !== b[i]) return a[i]! - b[i]!;
  return a.length - b.length;
}

/** u16, u32 and u64 encode n big-endian in 2, 4 or 8 bytes. */
export function u16(n: number): Uint8Array {
  if (!Number.isInteger(n) || n < 0 || n > 0xffff) throw new RangeError(`u16 out of range: ${n}`);
  return Uint8Array.of(n >>> 8, n & 0xff);
}
export function u32(n: number): Uint8Array {
  if (!Number.isInteger(n) || n < 0 || n > 0xffffffff) throw new RangeError(`u32 out of range: ${n}`);
  const out = new Uint8Array(4);
  new DataView(out.buffer).setUint32(0, n);
  return out;
}
export function u64(n: bigint): Uint8Array {
  if (n < 0n || n > 0xffffffffffffffffn) throw new RangeError(`u64 out of range: ${n}`);
  const out = new Uint8Array(8);
  new DataView(out.buffer).setBigUint64(0, n);
  return out;
}

/** str encodes the UTF-8 bytes of s as u16(len) ‖ bytes. */
export function str(s: string | Uint8Array): Uint8Array {
  const b = typeof s === "string" ? utf8.encode(s) : s;
  return concat(u16(b.length), b);
}

/** labelled returns LABEL(label) ‖ parts: the label's bytes, a zero byte, then the parts. */
export function labelled(label: string, ...parts: Uint8Array[]): Uint8Array {
  return concat(utf8.encode(label), new Uint8Array(1), ...parts);
}

/** sha returns SHA-256 of the concatenation of parts (on Node, Node's: platform.ts). */
export const sha = sha256;

/** toHex and fromHex convert lower-case hex. */
export const toHex = bytesToHex;
export const fromHex = hexToBytes;

/** randomBytes returns n bytes from the platform's cryptographic generator. */
export function randomBytes(n: number): Uint8Array {
  const out = new Uint8Array(n);
  // getRandomValues fills at most 65,536 bytes per call.
  for (let off = 0; off < n; off += 65536) {
    globalThis.crypto.getRandomValues(out.subarray(off, Math.min(n, off + 65536)));
  }
  return out;
}

/** unixSeconds returns the whole seconds since the Unix epoch of t, rounded down as Go's Time.Unix. */
export function unixSeconds(t: Date): bigint {
  const ms = t.getTime();
  if (!Number.isFinite(ms)) throw new RangeError("invalid date");
  return BigInt(Math.floor(ms / 1000));
}

/** copyBytes returns a copy of b as a plain Uint8Array (a Node Buffer's slice would share its memory). */
export function copyBytes(b: Uint8Array): Uint8Array {
  return Uint8Array.prototype.slice.call(b);
}
