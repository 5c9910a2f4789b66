// The log's entries and the map's values (docs/wire-format.md 13.1, 13.2): canonical
// LogLeaf and MapValue bytes, parsed and checked as pkg/kt's formats.go does.

import { create, toBinary } from "@bufbuild/protobuf";
import { LogEventKind, LogLeafSchema, MapValueSchema, type LogLeaf, type MapValue } from "../gen/umbra/kt/v1/kt_pb.js";
import { parseStrict } from "../proto.js";
import { HashSize } from "./checkpoint.js";
import { malformed } from "./errors.js";

/** KtVersion is the version of LogLeaf and MapValue this SDK reads and writes. */
export const KtVersion = 1;
/** MaxLeafSize bounds a LogLeaf's (and a MapValue's) encoding. */
export const MaxLeafSize = 256;

function parse<T extends LogLeaf | MapValue>(schema: typeof LogLeafSchema | typeof MapValueSchema, what: string, b: Uint8Array): T {
  if (b.length > MaxLeafSize) throw malformed(`${what} of ${b.length} bytes, at most ${MaxLeafSize}`);
  try {
    return parseStrict(schema, b, what) as T;
  } catch (e) {
    throw malformed(e instanceof Error ? e.message.replace(/^e2ee: malformed: /, "") : String(e), e);
  }
}

/** parseLeaf parses and checks a log entry's exact bytes. kt.ParseLeaf. */
export function parseLeaf(b: Uint8Array): LogLeaf {
  const l = parse<LogLeaf>(LogLeafSchema, "log leaf", b);
  checkLeaf(l);
  return l;
}

/** encodeLeaf returns a leaf's canonical bytes, after checking it as parseLeaf would. */
export function encodeLeaf(l: LogLeaf): Uint8Array {
  checkLeaf(l);
  return toBinary(LogLeafSchema, l);
}

function checkLeaf(l: LogLeaf): void {
  if (l.version !== KtVersion) throw malformed(`log leaf version ${l.version}, want ${KtVersion}`);
  if (l.mapKey.length !== HashSize) throw malformed(`log leaf map_key of ${l.mapKey.length} bytes, want ${HashSize}`);
  if (l.cardId.length !== HashSize) throw malformed(`log leaf card_id of ${l.cardId.length} bytes, want ${HashSize}`);
  if (l.occurredAtUnixNanos <= 0n) throw malformed(`log leaf occurred_at_unix_nanos ${l.occurredAtUnixNanos}, want > 0`);
  switch (l.kind) {
    case LogEventKind.ENDORSED_ROTATION:
      if (l.previousCardId.length !== HashSize) {
        throw malformed(`endorsed rotation leaf previous_card_id of ${l.previousCardId.length} bytes, want ${HashSize}`);
      }
      break;
    case LogEventKind.PUBLICATION:
    case LogEventKind.RESET:
    case LogEventKind.REVOCATION:
      if (l.previousCardId.length !== 0) {
        throw malformed(`${LogEventKind[l.kind]} leaf with a previous_card_id: only an endorsed rotation names one`);
      }
      break;
    default:
      throw malformed(`log leaf kind ${l.kind} is not a known event`);
  }
}

/** parseMapValue parses and checks a map value's exact bytes. kt.ParseMapValue. */
export function parseMapValue(b: Uint8Array): MapValue {
  const v = parse<MapValue>(MapValueSchema, "map value", b);
  checkMapValue(v);
  return v;
}

/** encodeMapValue returns a map value's canonical bytes, after checking it as parseMapValue would. */
export function encodeMapValue(v: MapValue): Uint8Array {
  checkMapValue(v);
  return toBinary(MapValueSchema, v);
}

function checkMapValue(v: MapValue): void {
  if (v.version !== KtVersion) throw malformed(`map value version ${v.version}, want ${KtVersion}`);
  if (v.cardId.length !== 0 && v.cardId.length !== HashSize) throw malformed(`map value card_id of ${v.cardId.length} bytes, want ${HashSize} or none`);
  if (v.cardId.length === 0 && v.cardLogIndex !== 0n) throw malformed(`map value without a card has card_log_index ${v.cardLogIndex}, want none`);
  if (v.cardLogIndex > v.latestLogIndex) throw malformed(`map value card_log_index ${v.cardLogIndex} after latest_log_index ${v.latestLogIndex}`);
}

/**
 * nextMapValue is the map rule (13.2): the value of an identity's entry after the event
 * leaf at log index, given its value before (undefined if the map has no entry for it).
 * kt.NextMapValue.
 */
export function nextMapValue(prev: MapValue | undefined, leaf: LogLeaf, index: bigint): MapValue {
  const next = create(MapValueSchema, { version: KtVersion, latestLogIndex: index });
  if (leaf.kind !== LogEventKind.REVOCATION) {
    next.cardId = leaf.cardId;
    next.cardLogIndex = index;
    return next;
  }
  if (prev && !(prev.cardId.length === leaf.cardId.length && prev.cardId.every((b, i) => b === leaf.cardId[i]))) {
    next.cardId = prev.cardId;
    next.cardLogIndex = prev.cardLogIndex;
  }
  return next;
}
