// The map (docs/wire-format.md 13.2–13.4): a sparse Merkle tree over the 256 bits of
// a map key, most significant bit of the first byte at the root, 0 to the left, in
// which a subtree that holds a single entry is that entry's leaf:
//
//   leaf:   SHA-256(0x00 ‖ key ‖ SHA-256(value))
//   node:   SHA-256(0x01 ‖ left ‖ right)
//   empty:  SHA-256(0x02)
//
// pkg/kt's map proof verification in TypeScript.

import { labelled, str } from "../bytes.js";
import { sha256 } from "../platform.js";
import { equalBytes } from "../bytes.js";
import type { MapProof } from "../gen/umbra/kt/v1/kt_pb.js";
import { HashSize } from "./checkpoint.js";
import { badProof, malformed } from "./errors.js";

/** The label of map keys: LABEL("umbra/v1/kt-map-key"). */
export const LabelKtMapKey = "umbra/v1/kt-map-key";
/** MaxMapDepth is the deepest a map path can go. */
export const MaxMapDepth = 256;

/** emptyMapHash is the hash of an empty subtree at any depth, and the root of the empty map: SHA-256(0x02). */
export const emptyMapHash: Uint8Array = sha256(Uint8Array.of(2));

/** mapKey is the map position of identity of app: SHA-256(LABEL("umbra/v1/kt-map-key") ‖ str(app) ‖ str(identity)). */
export function mapKey(app: string, identity: string): Uint8Array {
  return sha256(labelled(LabelKtMapKey, str(app), str(identity)));
}

/** valueHash is the hash of a map value's exact bytes: SHA-256(value). */
export function valueHash(value: Uint8Array): Uint8Array {
  return sha256(value);
}

/** mapLeafHash is the hash of the entry key → the value whose hash is vh. */
export function mapLeafHash(key: Uint8Array, vh: Uint8Array): Uint8Array {
  return sha256(Uint8Array.of(0), key, vh);
}

/** mapNodeHash is the hash of an inner node. */
export function mapNodeHash(left: Uint8Array, right: Uint8Array): Uint8Array {
  return sha256(Uint8Array.of(1), left, right);
}

/** bit is bit i of key, from the most significant bit of key[0]. */
function bit(key: Uint8Array, i: number): number {
  return (key[i >> 3]! >> (7 - (i & 7))) & 1;
}

function popcount(b: number): number {
  let n = 0;
  for (; b !== 0; b &= b - 1) n++;
  return n;
}

function hex(b: Uint8Array): string {
  let s = "";
  for (const x of b) s += x.toString(16).padStart(2, "0");
  return s;
}

/**
 * verifyMapProof checks proof against the map root: with value set (the exact MapValue
 * bytes), that the map holds key → value; with value undefined, that the map holds
 * nothing at key. A proof that is not well formed is Malformed; one that does not lead
 * to root is BadProof. kt.VerifyMapProof.
 */
export function verifyMapProof(root: Uint8Array, key: Uint8Array, value: Uint8Array | undefined, proof: MapProof | undefined): void {
  const depth = proof?.depth ?? 0;
  if (depth > MaxMapDepth) throw malformed(`map proof depth ${depth}, at most ${MaxMapDepth}`);
  const bitmap = proof?.bitmap ?? new Uint8Array(0);
  const want = (depth + 7) >> 3;
  if (bitmap.length !== want) throw malformed(`map proof bitmap of ${bitmap.length} bytes for depth ${depth}, want ${want}`);
  let set = 0;
  bitmap.forEach((b, i) => {
    if (i === bitmap.length - 1 && depth % 8 !== 0 && (b & (0xff >> depth % 8)) !== 0) {
      throw malformed(`map proof bitmap has bits set past depth ${depth}`);
    }
    set += popcount(b);
  });
  // The siblings are packed: their hashes concatenated (docs/wire-format.md 13.4).
  const siblings = proof?.siblingHashes ?? new Uint8Array(0);
  if (siblings.length % HashSize !== 0) throw malformed(`map proof sibling hashes of ${siblings.length} bytes, not a multiple of ${HashSize}`);
  // One hash per bit set in the bitmap: at most depth hashes, so a field longer than
  // depth × 32 bytes is refused here.
  if (siblings.length / HashSize !== set) throw malformed(`map proof has ${siblings.length / HashSize} siblings, its bitmap marks ${set}`);
  const otherKey = proof?.otherKey ?? new Uint8Array(0);
  const otherValue = proof?.otherValueHash ?? new Uint8Array(0);
  let h: Uint8Array;
  if (otherKey.length === 0 && otherValue.length === 0 && value !== undefined) {
    h = mapLeafHash(key, valueHash(value));
  } else if (otherKey.length === 0 && otherValue.length === 0) {
    h = emptyMapHash;
  } else if (value !== undefined) {
    throw malformed("map proof of a present entry names another key's entry");
  } else if (otherKey.length !== HashSize || otherValue.length !== HashSize) {
    throw malformed(`map proof other entry: key of ${otherKey.length} bytes and value hash of ${otherValue.length}, want ${HashSize} each`);
  } else {
    if (equalBytes(otherKey, key)) throw badProof("map proof of absence ends at the entry of the very key it says is absent");
    // The other entry sits where only keys that share its first depth bits can.
    for (let i = 0; i < depth; i++) {
      if (bit(otherKey, i) !== bit(key, i)) {
        throw badProof(`map proof of absence ends at depth ${depth} at the entry of key ${hex(otherKey)}, which is not on the path of key ${hex(key)}`);
      }
    }
    h = mapLeafHash(otherKey, otherValue);
  }
  let next = siblings.length;
  for (let d = depth - 1; d >= 0; d--) {
    let sibling = emptyMapHash;
    if ((bitmap[d >> 3]! & (0x80 >> (d & 7))) !== 0) {
      next -= HashSize;
      sibling = siblings.subarray(next, next + HashSize);
    }
    h = bit(key, d) === 0 ? mapNodeHash(h, sibling) : mapNodeHash(sibling, h);
  }
  if (!equalBytes(h, root)) {
    if (value !== undefined) throw badProof(`map proof of key ${hex(key)}: the entry does not lead to the map root`);
    throw badProof(`map proof of the absence of key ${hex(key)} does not lead to the map root`);
  }
}
