// The log: an RFC 9162 Merkle tree of LogLeaf bytes (docs/wire-format.md 13.1). Leaf
// hash SHA-256(0x00 ‖ leaf), node hash SHA-256(0x01 ‖ left ‖ right). The inclusion and
// consistency proofs are verified by RFC 9162's algorithms (sections 2.1.3.2 and
// 2.1.4.2), written from the RFC: they accept exactly the proofs that
// transparency-dev/merkle's verifiers (what pkg/kt calls) accept.

import { sha256 } from "../platform.js";
import { equalBytes } from "../bytes.js";
import { HashSize, type Checkpoint } from "./checkpoint.js";
import { badProof, inconsistent, malformed } from "./errors.js";

/** MaxProofHashes bounds a log proof: a tree of 2^64 entries needs at most 2×64 hashes. */
export const MaxProofHashes = 128;

const leafPrefix = Uint8Array.of(0);
const nodePrefix = Uint8Array.of(1);

/** leafHash is the RFC 9162 hash of a log entry: SHA-256(0x00 ‖ leaf). */
export function leafHash(leaf: Uint8Array): Uint8Array {
  return sha256(leafPrefix, leaf);
}

/** nodeHash is the RFC 9162 hash of an inner node: SHA-256(0x01 ‖ left ‖ right). */
export function nodeHash(left: Uint8Array, right: Uint8Array): Uint8Array {
  return sha256(nodePrefix, left, right);
}

/** emptyLogRoot is the root of the empty log: SHA-256 of nothing. */
export const emptyLogRoot: Uint8Array = sha256(new Uint8Array(0));

function checkHashes(what: string, hashes: readonly Uint8Array[]): void {
  if (hashes.length > MaxProofHashes) throw malformed(`${what} of ${hashes.length} hashes, at most ${MaxProofHashes}`);
  hashes.forEach((h, i) => {
    if (h.length !== HashSize) throw malformed(`${what} hash ${i} of ${h.length} bytes, want ${HashSize}`);
  });
}

/**
 * packHashes concatenates 32-byte hashes into the packed form of a lookup proof's
 * fields (MapProof.sibling_hashes, LookupProof.inclusion_hashes; docs/wire-format.md
 * 13.4 and 13.6). kt.PackHashes.
 */
export function packHashes(hashes: readonly Uint8Array[]): Uint8Array {
  const out = new Uint8Array(hashes.length * HashSize);
  hashes.forEach((h, i) => {
    if (h.length !== HashSize) throw malformed(`hash ${i} of ${h.length} bytes, want ${HashSize}`);
    out.set(h, i * HashSize);
  });
  return out;
}

/**
 * unpackHashes splits a packed field of 32-byte hashes, of at most max hashes: a length
 * that is not a multiple of 32, or longer than max hashes, is Malformed. The hashes are
 * views of packed. kt.UnpackHashes.
 */
export function unpackHashes(what: string, packed: Uint8Array, max: number): Uint8Array[] {
  if (packed.length % HashSize !== 0) throw malformed(`${what} of ${packed.length} bytes, not a multiple of ${HashSize}`);
  const n = packed.length / HashSize;
  if (n > max) throw malformed(`${what} of ${n} hashes, at most ${max}`);
  const out: Uint8Array[] = [];
  for (let i = 0; i < n; i++) out.push(packed.subarray(i * HashSize, (i + 1) * HashSize));
  return out;
}

/** logDepth is the depth of the log tree of size entries: the most hashes an inclusion proof in it has. kt.LogDepth. */
export function logDepth(size: bigint): number {
  if (size <= 1n) return 0;
  return (size - 1n).toString(2).length;
}

/**
 * rootFromInclusionProof is RFC 9162 section 2.1.3.2: the root that the inclusion path
 * leads to from the hash of entry index of a tree of size entries, or undefined where
 * the algorithm fails (an index past the tree, a path of the wrong length).
 */
export function rootFromInclusionProof(index: bigint, size: bigint, hash: Uint8Array, path: readonly Uint8Array[]): Uint8Array | undefined {
  // 1. leaf_index must be below tree_size.
  if (index < 0n || index >= size) return undefined;
  // 2. fn = leaf_index, sn = tree_size - 1; 3. r = hash.
  let fn = index;
  let sn = size - 1n;
  let r = hash;
  // 4. For each p in the path:
  for (const p of path) {
    // a. The path is longer than the tree is deep.
    if (sn === 0n) return undefined;
    if ((fn & 1n) === 1n || fn === sn) {
      // b. r = HASH(0x01 ‖ p ‖ r); then, if LSB(fn) is not set, shift both right
      // until LSB(fn) is set or fn is 0.
      r = nodeHash(p, r);
      while ((fn & 1n) === 0n && fn !== 0n) {
        fn >>= 1n;
        sn >>= 1n;
      }
    } else {
      // Otherwise r = HASH(0x01 ‖ r ‖ p).
      r = nodeHash(r, p);
    }
    // c. Shift both right once.
    fn >>= 1n;
    sn >>= 1n;
  }
  // 5. sn must be 0: the path was not shorter than the tree is deep.
  return sn === 0n ? r : undefined;
}

/**
 * verifyConsistencyProof is RFC 9162 section 2.1.4.2 for 0 < first < second: whether
 * the path proves that the tree of first entries with root firstRoot is a prefix of
 * the tree of second entries with root secondRoot.
 */
export function verifyConsistencyProof(first: bigint, second: bigint, path: readonly Uint8Array[], firstRoot: Uint8Array, secondRoot: Uint8Array): boolean {
  if (first <= 0n || first >= second) return false;
  // 1. An empty path fails.
  if (path.length === 0) return false;
  // 2. If first is an exact power of 2, prepend first_hash to the path.
  const p = (first & (first - 1n)) === 0n ? [firstRoot, ...path] : [...path];
  // 3. fn = first - 1, sn = second - 1.
  let fn = first - 1n;
  let sn = second - 1n;
  // 4. If LSB(fn) is set, shift both right until LSB(fn) is not set.
  while ((fn & 1n) === 1n) {
    fn >>= 1n;
    sn >>= 1n;
  }
  // 5. fr = sr = the first value of the path.
  let fr = p[0]!;
  let sr = p[0]!;
  // 6. For each subsequent value c:
  for (const c of p.slice(1)) {
    // a. The path is longer than the tree is deep.
    if (sn === 0n) return false;
    if ((fn & 1n) === 1n || fn === sn) {
      // b. fr = HASH(0x01 ‖ c ‖ fr), sr = HASH(0x01 ‖ c ‖ sr); then, if LSB(fn) is not
      // set, shift both right until LSB(fn) is set or fn is 0.
      fr = nodeHash(c, fr);
      sr = nodeHash(c, sr);
      while ((fn & 1n) === 0n && fn !== 0n) {
        fn >>= 1n;
        sn >>= 1n;
      }
    } else {
      // Otherwise sr = HASH(0x01 ‖ sr ‖ c).
      sr = nodeHash(sr, c);
    }
    // c. Shift both right once.
    fn >>= 1n;
    sn >>= 1n;
  }
  // 7. fr is first_hash, sr is second_hash, and sn is 0.
  return sn === 0n && equalBytes(fr, firstRoot) && equalBytes(sr, secondRoot);
}

/**
 * verifyInclusion checks that leaf (exact LogLeaf bytes) is entry index of the log
 * that checkpoint cp commits to. kt.VerifyInclusion.
 */
export function verifyInclusion(cp: Checkpoint, index: bigint, leaf: Uint8Array, inclusion: readonly Uint8Array[]): void {
  checkHashes("inclusion proof", inclusion);
  if (index >= cp.size) throw badProof(`log entry ${index} is not in a checkpoint of ${cp.size} entries`);
  const root = rootFromInclusionProof(index, cp.size, leafHash(leaf), inclusion);
  if (root === undefined || !equalBytes(root, cp.logRoot)) {
    throw badProof(`log entry ${index} in the checkpoint of ${cp.size} entries: the inclusion proof does not lead to the log root`);
  }
}

/**
 * verifyConsistency checks that checkpoint newer extends checkpoint older of the same
 * log: same origin, a size no smaller, and, when the sizes differ, a consistency proof
 * from one root to the other. Two checkpoints of one size with different roots (a
 * split view), a smaller size (a rollback) and a proof that fails are Inconsistent.
 * kt.VerifyConsistency.
 */
export function verifyConsistency(older: Checkpoint, newer: Checkpoint, consistency: readonly Uint8Array[]): void {
  if (older.origin !== newer.origin) {
    throw inconsistent(`checkpoints of two logs, ${JSON.stringify(older.origin)} and ${JSON.stringify(newer.origin)}`);
  }
  checkHashes("consistency proof", consistency);
  if (newer.size < older.size) throw inconsistent(`the log went from ${older.size} entries back to ${newer.size}`);
  if (newer.size === older.size) {
    if (!equalBytes(older.logRoot, newer.logRoot) || !equalBytes(older.mapRoot, newer.mapRoot)) {
      throw inconsistent(`two checkpoints of ${older.size} entries with different roots (a fork of the log)`);
    }
    if (consistency.length !== 0) {
      throw malformed(`consistency proof between checkpoints of one size has ${consistency.length} hashes, want none`);
    }
    return;
  }
  if (older.size === 0n) {
    // Every log extends the empty one.
    if (consistency.length !== 0) throw inconsistent(`the log of 0 entries is not a prefix of the log of ${newer.size}: a proof of ${consistency.length} hashes, want none`);
    return;
  }
  if (!verifyConsistencyProof(older.size, newer.size, consistency, older.logRoot, newer.logRoot)) {
    throw inconsistent(`the log of ${older.size} entries is not a prefix of the log of ${newer.size}`);
  }
}
