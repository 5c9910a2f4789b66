// Canonical protobuf encoding (docs/wire-format.md, section 2): every structure has
// exactly one encoding, so one hash and one valid signature payload. A parser accepts
// bytes only if they parse, carry no unknown field at any depth, and encode back to
// themselves byte for byte; the same check as pkg/e2ee's UnmarshalStrict.
import { create, fromBinary, toBinary, type DescMessage, type MessageInitShape, type MessageShape } from "@bufbuild/protobuf";
import { E2eeErrorKind, e2eeError } from "./errors.js";
import { equalBytes } from "./bytes.js";

/** encode returns the canonical encoding of a message built from init. */
export function encode<Desc extends DescMessage>(schema: Desc, init: MessageInitShape<Desc>): Uint8Array {
  return toBinary(schema, create(schema, init));
}

/** parseStrict parses b as a canonical message of schema, or throws an E2eeError (Malformed). */
export function parseStrict<Desc extends DescMessage>(schema: Desc, b: Uint8Array, what: string): MessageShape<Desc> {
  let m: MessageShape<Desc>;
  try {
    m = fromBinary(schema, b, { readUnknownFields: true });
  } catch (err) {
    throw e2eeError(E2eeErrorKind.Malformed, `${what} does not parse (truncated or corrupt): ${(err as Error).message}`, err);
  }
  if (hasUnknown(schema, m)) {
    throw e2eeError(E2eeErrorKind.Malformed, `${what} has fields this version does not know`);
  }
  if (!equalBytes(toBinary(schema, m), b)) {
    throw e2eeError(E2eeErrorKind.Malformed, `${what} is not in canonical encoding`);
  }
  return m;
}

/** hasUnknown reports whether m or any message inside it holds unknown fields. */
function hasUnknown(schema: DescMessage, m: unknown): boolean {
  const msg = m as Record<string, unknown> & { $unknown?: unknown[] };
  if (msg.$unknown !== undefined && msg.$unknown.length > 0) return true;
  for (const f of schema.fields) {
    const v = msg[f.localName];
    if (f.fieldKind === "message" && v !== undefined) {
      if (hasUnknown(f.message, v)) return true;
    } else if (f.fieldKind === "list" && f.listKind === "message") {
      for (const e of v as unknown[]) if (hasUnknown(f.message, e)) return true;
    }
  }
  return false;
}

/**
 * parseBytesPair parses b as a message of two bytes fields numbered 1 and 2 (Envelope,
 * SignedPayload, GroupMessage, KeystoreFile) with the rules of parseStrict: canonical
 * encoding only, no unknown field. It returns the fields as views of b, so a large body
 * is not copied; a missing field is undefined.
 */
export function parseBytesPair(what: string, b: Uint8Array): [Uint8Array | undefined, Uint8Array | undefined] {
  const fields: [Uint8Array | undefined, Uint8Array | undefined] = [undefined, undefined];
  let next = 1;
  let pos = 0;
  while (pos < b.length) {
    const tag = b[pos]!;
    const num = tag >>> 3;
    if ((tag & 0x80) !== 0 || num < next || num > 2 || (tag & 7) !== 2) {
      throw e2eeError(E2eeErrorKind.Malformed, `${what} has an unknown, repeated or misplaced field (tag 0x${tag.toString(16)})`);
    }
    pos++;
    const [len, n] = readVarint(b, pos, what);
    pos += n;
    if (len === 0 || n !== varintSize(len)) {
      throw e2eeError(E2eeErrorKind.Malformed, `${what} is not in canonical encoding`);
    }
    if (len > b.length - pos) {
      throw e2eeError(E2eeErrorKind.Malformed, `${what} does not parse (truncated or corrupt)`);
    }
    fields[num - 1] = b.subarray(pos, pos + len);
    pos += len;
    next = num + 1;
  }
  return fields;
}

/** readVarint reads a varint of at most 2^53 - 1 at b[pos], returning it and its length. */
function readVarint(b: Uint8Array, pos: number, what: string): [number, number] {
  let v = 0;
  let mul = 1;
  for (let i = 0; i < 8; i++) {
    if (pos + i >= b.length) throw e2eeError(E2eeErrorKind.Malformed, `${what} does not parse (truncated or corrupt)`);
    const c = b[pos + i]!;
    v += (c & 0x7f) * mul;
    if ((c & 0x80) === 0) return [v, i + 1];
    mul *= 128;
  }
  throw e2eeError(E2eeErrorKind.Malformed, `${what} does not parse: a length over 2^56`);
}

/** varintSize is the length of the minimal varint encoding of n. */
export function varintSize(n: number): number {
  let size = 1;
  while (n >= 128) {
    n = Math.floor(n / 128);
    size++;
  }
  return size;
}

/** appendBytesField writes tag ‖ varint(len(v)) ‖ v for field num (at most 15) into out at off, and returns the new offset; nothing for an empty v. */
export function putBytesField(out: Uint8Array, off: number, num: number, v: Uint8Array): number {
  if (v.length === 0) return off;
  off = putTagLength(out, off, num, v.length);
  out.set(v, off);
  return off + v.length;
}

/** putTagLength writes a length-delimited tag for field num and the varint len at off. */
export function putTagLength(out: Uint8Array, off: number, num: number, len: number): number {
  out[off++] = (num << 3) | 2;
  while (len >= 128) {
    out[off++] = (len % 128) | 0x80;
    len = Math.floor(len / 128);
  }
  out[off++] = len;
  return off;
}

/** bytesFieldSize is the encoded size of a non-empty bytes field of length len (0 if len is 0). */
export function bytesFieldSize(len: number): number {
  return len === 0 ? 0 : 1 + varintSize(len) + len;
}
