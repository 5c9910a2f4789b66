// Lookups (docs/wire-format.md 13.6): what a LookupProof proves about one identity at a
// checkpoint, verified in the order of the specification. kt.VerifyLookup.

import { equalBytes } from "../bytes.js";
import { LogEventKind, type LogLeaf, type LookupProof, type MapValue } from "../gen/umbra/kt/v1/kt_pb.js";
import type { Checkpoint } from "./checkpoint.js";
import { badProof, malformed } from "./errors.js";
import { parseLeaf, parseMapValue } from "./formats.js";
import { logDepth, unpackHashes, verifyInclusion } from "./log.js";
import { mapKey, verifyMapProof } from "./map.js";

/** Lookup is what a verified lookup proves about one identity at a checkpoint. */
export interface Lookup {
  readonly identity: string;
  /** The identity's map entry; undefined when the map has none (the identity never had a card event). */
  readonly value: MapValue | undefined;
  /**
   * The log entry proved: the publication of value's card, or, when value names none,
   * the identity's latest event (a revocation). Undefined when value is.
   */
  readonly leaf: LogLeaf | undefined;
  /** The log index of leaf. */
  readonly leafIndex: bigint | undefined;
  /** The identity's current card id at the checkpoint; undefined when it has none. */
  readonly cardId: Uint8Array | undefined;
}

/**
 * verifyLookup checks a lookup proof of identity of app against checkpoint cp: the map
 * proof of the identity's entry (or its absence) against cp's map root; and, for an
 * entry, that the log entry given is entry leaf_index of cp's log (inclusion proof), is
 * about the identity's map key, and is the event the entry says: the publication of the
 * entry's card, or the revocation that left it none.
 */
export function verifyLookup(cp: Checkpoint, app: string, identity: string, p: LookupProof | undefined): Lookup {
  if ((p?.identity ?? "") !== identity) throw badProof(`lookup proof for identity ${JSON.stringify(p?.identity ?? "")}, want ${JSON.stringify(identity)}`);
  const key = mapKey(app, identity);
  const mapValue = p?.mapValue ?? new Uint8Array(0);
  const leafBytes = p?.leaf ?? new Uint8Array(0);
  const inclusion = p?.inclusionHashes ?? new Uint8Array(0);
  const leafIndex = p?.leafIndex ?? 0n;
  if (mapValue.length === 0) {
    if (leafBytes.length !== 0 || inclusion.length !== 0 || leafIndex !== 0n) {
      throw malformed("lookup proof of an absent identity carries a log entry");
    }
    verifyMapProof(cp.mapRoot, key, undefined, p?.mapProof);
    return { identity, value: undefined, leaf: undefined, leafIndex: undefined, cardId: undefined };
  }
  const value = parseMapValue(mapValue);
  verifyMapProof(cp.mapRoot, key, mapValue, p?.mapProof);
  const leaf = parseLeaf(leafBytes);
  if (!equalBytes(leaf.mapKey, key)) throw badProof(`the log entry proved for ${identity} is about another map key`);
  if (value.latestLogIndex >= cp.size) {
    throw badProof(`the map entry of ${identity} names log entry ${value.latestLogIndex}, past the checkpoint's ${cp.size} entries`);
  }
  if (value.cardId.length > 0) {
    if (leafIndex !== value.cardLogIndex) {
      throw badProof(`the log entry proved for ${identity} is entry ${leafIndex}, but its card was published by entry ${value.cardLogIndex}`);
    }
    if (leaf.kind === LogEventKind.REVOCATION || !equalBytes(leaf.cardId, value.cardId)) {
      throw badProof(`log entry ${leafIndex} is not the publication of ${identity}'s current card`);
    }
  } else {
    if (leafIndex !== value.latestLogIndex) {
      throw badProof(`the log entry proved for ${identity} is entry ${leafIndex}, but its latest event is entry ${value.latestLogIndex}`);
    }
    if (leaf.kind !== LogEventKind.REVOCATION) {
      throw badProof(`the map says ${identity} has no card, but its latest event, entry ${leafIndex}, is a ${LogEventKind[leaf.kind]}`);
    }
  }
  verifyInclusion(cp, leafIndex, leafBytes, unpackHashes("inclusion proof", inclusion, logDepth(cp.size)));
  return { identity, value, leaf, leafIndex, cardId: value.cardId.length > 0 ? value.cardId : undefined };
}

/**
 * verifyCardPublication checks that the log of checkpoint cp shows card cardId of
 * identity of app published by entry index, its `log_index` (docs/wire-format.md
 * 13.9), from the entry's exact LogLeaf bytes and its inclusion proof (as
 * GetInclusionProof serves them), in order: the inclusion proof against cp; the leaf is
 * a canonical LogLeaf; its map key is the identity's, its card id cardId, and its kind
 * anything but REVOCATION. It returns the leaf. A card's log_index is the server's word
 * until this passes: a wrong one proves nothing (BadProof, or Malformed).
 */
export function verifyCardPublication(cp: Checkpoint, app: string, identity: string, cardId: Uint8Array, index: bigint, leafBytes: Uint8Array, inclusion: readonly Uint8Array[]): LogLeaf {
  verifyInclusion(cp, index, leafBytes, inclusion);
  const leaf = parseLeaf(leafBytes);
  if (!equalBytes(leaf.mapKey, mapKey(app, identity))) throw badProof(`log entry ${index} is about another map key than ${identity}'s`);
  if (!equalBytes(leaf.cardId, cardId)) throw badProof(`log entry ${index} is about another card than the one it is said to publish`);
  if (leaf.kind === LogEventKind.REVOCATION) throw badProof(`log entry ${index} is the revocation of the card, not its publication`);
  return leaf;
}
