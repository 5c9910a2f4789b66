// Reference constructions for the key transparency tests, written from their
// definitions and independent of src/kt's verifiers: RFC 9162's Merkle tree hash, its
// inclusion paths and consistency proofs (sections 2.1.1, 2.1.3.1, 2.1.4.1); the map's
// recursive hash of docs/wire-format.md 13.3 with the proofs of 13.4; and a signed-note
// signer (c2sp.org/signed-note) for checkpoints.

import { create } from "@bufbuild/protobuf";
import { concat, utf8Bytes } from "../src/bytes.js";
import { MapProofSchema, type MapProof } from "../src/gen/umbra/kt/v1/kt_pb.js";
import { base64Encode } from "../src/kt/base64.js";
import { keyHash } from "../src/kt/note.js";
import { sha256 } from "../src/platform.js";
import { sign, signingPublicKey } from "../src/pubkey.js";

const H = (...parts: Uint8Array[]) => sha256(...parts);

/** The largest power of 2 smaller than n (n > 1). */
function split(n: number): number {
  let k = 1;
  while (k * 2 < n) k *= 2;
  return k;
}

/** MTH: RFC 9162 2.1.1. */
export function mth(leaves: readonly Uint8Array[]): Uint8Array {
  if (leaves.length === 0) return H(new Uint8Array(0));
  if (leaves.length === 1) return H(Uint8Array.of(0), leaves[0]!);
  const k = split(leaves.length);
  return H(Uint8Array.of(1), mth(leaves.slice(0, k)), mth(leaves.slice(k)));
}

/** PATH(m, D): RFC 9162 2.1.3.1, the inclusion path of entry m. */
export function path(m: number, leaves: readonly Uint8Array[]): Uint8Array[] {
  const n = leaves.length;
  if (n === 1) return [];
  const k = split(n);
  if (m < k) return [...path(m, leaves.slice(0, k)), mth(leaves.slice(k))];
  return [...path(m - k, leaves.slice(k)), mth(leaves.slice(0, k))];
}

/** PROOF(m, D): RFC 9162 2.1.4.1, the consistency proof from the first m entries. */
export function proof(m: number, leaves: readonly Uint8Array[]): Uint8Array[] {
  return subproof(m, leaves, true);
}

function subproof(m: number, leaves: readonly Uint8Array[], b: boolean): Uint8Array[] {
  const n = leaves.length;
  if (m === n) return b ? [] : [mth(leaves)];
  const k = split(n);
  if (m <= k) return [...subproof(m, leaves.slice(0, k), b), mth(leaves.slice(k))];
  return [...subproof(m - k, leaves.slice(k), false), mth(leaves.slice(0, k))];
}

const emptyHash = H(Uint8Array.of(2));

function bit(key: Uint8Array, i: number): number {
  return (key[i >> 3]! >> (7 - (i & 7))) & 1;
}

export interface MapEntry {
  readonly key: Uint8Array;
  readonly valueHash: Uint8Array;
}

/** The map's hash of a subtree holding entries at depth d (13.3). */
export function mapHash(entries: readonly MapEntry[], d = 0): Uint8Array {
  if (entries.length === 0) return emptyHash;
  if (entries.length === 1) return H(Uint8Array.of(0), entries[0]!.key, entries[0]!.valueHash);
  return H(
    Uint8Array.of(1),
    mapHash(entries.filter((e) => bit(e.key, d) === 0), d + 1),
    mapHash(entries.filter((e) => bit(e.key, d) === 1), d + 1),
  );
}

/** The map proof of key (13.4), and the entry found there. */
export function mapProof(entries: readonly MapEntry[], key: Uint8Array): MapProof {
  const siblings: Uint8Array[] = [];
  const bitmap = new Uint8Array(32);
  let here = entries;
  for (let d = 0; ; d++) {
    if (here.length <= 1) {
      const siblingHashes = new Uint8Array(siblings.length * 32);
      siblings.forEach((s, i) => siblingHashes.set(s, i * 32));
      const p = create(MapProofSchema, { depth: d, bitmap: bitmap.slice(0, (d + 7) >> 3), siblingHashes });
      const e = here[0];
      if (e && !e.key.every((b, i) => b === key[i])) {
        p.otherKey = e.key;
        p.otherValueHash = e.valueHash;
      }
      return p;
    }
    const b = bit(key, d);
    const other = here.filter((e) => bit(e.key, d) !== b);
    if (other.length > 0) {
      bitmap[d >> 3]! |= 0x80 >> (d & 7);
      siblings.push(mapHash(other, d + 1));
    }
    here = here.filter((e) => bit(e.key, d) === b);
  }
}

/** A signed-note signer: an Ed25519 seed and a key name. */
export interface NoteSigner {
  readonly name: string;
  readonly seed: Uint8Array;
}

/** The verifier key of a signer. */
export function signerKey(s: NoteSigner): string {
  const key = concat(Uint8Array.of(1), signingPublicKey(s.seed));
  return `${s.name}+${keyHash(s.name, key).toString(16).padStart(8, "0")}+${base64Encode(key)}`;
}

/** signNote signs text (ending in a newline) with each signer, in order. */
export function signNote(text: string, ...signers: NoteSigner[]): Uint8Array {
  let out = text + "\n";
  for (const s of signers) {
    const key = concat(Uint8Array.of(1), signingPublicKey(s.seed));
    const h = keyHash(s.name, key);
    const sig = sign(s.seed, utf8Bytes(text));
    const hb = Uint8Array.of(h >>> 24, (h >>> 16) & 0xff, (h >>> 8) & 0xff, h & 0xff);
    out += `\u2014 ${s.name} ${base64Encode(concat(hb, sig))}\n`;
  }
  return utf8Bytes(out);
}
