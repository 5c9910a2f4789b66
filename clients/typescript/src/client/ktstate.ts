// The key transparency state file (docs/wire-format.md 13.10): what this client knows
// of the card service's log, beside the keystore and the pins. It holds no secret: the
// log keys it pinned, the app its map keys are computed for, the largest checkpoint it
// verified, what its own monitoring last saw of the user's identity, and the cards
// this device revoked. It is the Go SDK's file (pkg/sdk's ktstate.go: JSON, byte
// strings in base64, times in RFC 3339), stored under the name "keystore.kt", so a
// folder that the Go CLI and this SDK share holds one state that both read. Fields
// this SDK does not know are kept as they are when it writes the file.

import { KT_STATE, type Storage } from "../storage/storage.js";
import { parseCheckpoint, type Checkpoint } from "../kt/checkpoint.js";
import { isKtError } from "../kt/errors.js";
import { UmbraErrorKind, umbraError } from "./errors.js";

export const ktStateVersion = 1;

/** A log key pinned on first use. */
export interface PinnedLogKey {
  verifierKey: string;
  source: string;
  pinnedAt: Date;
}

/** The user's map entry as the last monitoring check saw it. */
export interface OwnEntry {
  /** The map had an entry for the user. */
  present: boolean;
  /** The card it named; undefined when none. */
  cardId: Uint8Array | undefined;
  cardLogIndex: bigint;
  latestLogIndex: bigint;
  checkpointSize: bigint;
  checkedAt: Date;
}

export interface KtState {
  version: number;
  appId: string;
  logKeys: PinnedLogKey[];
  /** The signed note of the largest checkpoint verified; "" before the first. */
  checkpoint: string;
  own: OwnEntry | undefined;
  /** Cards this device revoked: its monitoring expects their revocations. */
  revokedHere: Uint8Array[];
  /** The file's other fields, kept as read. */
  rest: { [k: string]: unknown };
}

export function emptyKtState(): KtState {
  return { version: ktStateVersion, appId: "", logKeys: [], checkpoint: "", own: undefined, revokedHere: [], rest: {} };
}

/** KtStateError: a state file that does not parse. */
export class KtStateError extends Error {
  override readonly name = "KtStateError";
}

function b64(b: Uint8Array): string {
  let s = "";
  for (const x of b) s += String.fromCharCode(x);
  return btoa(s);
}

function unb64(s: unknown, what: string): Uint8Array {
  if (typeof s !== "string") throw new KtStateError(`${what} is not a base64 string`);
  let bin: string;
  try {
    bin = atob(s);
  } catch {
    throw new KtStateError(`${what} is not base64`);
  }
  return Uint8Array.from(bin, (c) => c.charCodeAt(0));
}

function time(s: unknown, what: string): Date {
  const d = typeof s === "string" ? new Date(s) : new Date(NaN);
  if (Number.isNaN(d.getTime())) throw new KtStateError(`${what} is not an RFC 3339 time`);
  return d;
}

function uint(v: unknown, what: string): bigint {
  if (v === undefined || v === null) return 0n;
  if (typeof v !== "number" || !Number.isSafeInteger(v) || v < 0) throw new KtStateError(`${what} is not a whole number`);
  return BigInt(v);
}

function str(v: unknown, what: string): string {
  if (v === undefined || v === null) return "";
  if (typeof v !== "string") throw new KtStateError(`${what} is not a string`);
  return v;
}

function obj(v: unknown, what: string): { [k: string]: unknown } {
  if (v === null || typeof v !== "object" || Array.isArray(v)) throw new KtStateError(`${what} is not an object`);
  return v as { [k: string]: unknown };
}

const known = new Set(["version", "app_id", "log_keys", "checkpoint", "own", "revoked_here"]);

/** parseKtState parses a state file's bytes; throws a KtStateError that says what is wrong. */
export function parseKtState(bytes: Uint8Array): KtState {
  let json: unknown;
  try {
    json = JSON.parse(new TextDecoder("utf-8", { fatal: true }).decode(bytes));
  } catch (e) {
    throw new KtStateError(`not JSON: ${e instanceof Error ? e.message : String(e)}`);
  }
  const o = obj(json, "the file");
  if (o["version"] !== ktStateVersion) {
    throw new KtStateError(`version ${JSON.stringify(o["version"])}; this SDK reads version ${ktStateVersion}`);
  }
  const s = emptyKtState();
  s.appId = str(o["app_id"], "app_id");
  const keys = o["log_keys"];
  if (keys !== undefined && keys !== null) {
    if (!Array.isArray(keys)) throw new KtStateError("log_keys is not a list");
    s.logKeys = keys.map((v, i) => {
      const k = obj(v, `log_keys[${i}]`);
      return { verifierKey: str(k["verifier_key"], `log_keys[${i}].verifier_key`), source: str(k["source"], `log_keys[${i}].source`), pinnedAt: time(k["pinned_at"], `log_keys[${i}].pinned_at`) };
    });
  }
  s.checkpoint = str(o["checkpoint"], "checkpoint");
  if (o["own"] !== undefined && o["own"] !== null) {
    const w = obj(o["own"], "own");
    s.own = {
      present: w["present"] === true,
      cardId: w["card_id"] === undefined || w["card_id"] === null ? undefined : unb64(w["card_id"], "own.card_id"),
      cardLogIndex: uint(w["card_log_index"], "own.card_log_index"),
      latestLogIndex: uint(w["latest_log_index"], "own.latest_log_index"),
      checkpointSize: uint(w["checkpoint_size"], "own.checkpoint_size"),
      checkedAt: time(w["checked_at"], "own.checked_at"),
    };
  }
  const revoked = o["revoked_here"];
  if (revoked !== undefined && revoked !== null) {
    if (!Array.isArray(revoked)) throw new KtStateError("revoked_here is not a list");
    s.revokedHere = revoked.map((v, i) => unb64(v, `revoked_here[${i}]`));
  }
  for (const [k, v] of Object.entries(o)) if (!known.has(k)) s.rest[k] = v;
  return s;
}

/** encodeKtState encodes the state as the Go SDK does (indented JSON and a final newline), with the fields it does not know. */
export function encodeKtState(s: KtState): Uint8Array {
  const out: { [k: string]: unknown } = { version: s.version };
  if (s.appId !== "") out["app_id"] = s.appId;
  if (s.logKeys.length > 0) out["log_keys"] = s.logKeys.map((k) => ({ verifier_key: k.verifierKey, source: k.source, pinned_at: k.pinnedAt.toISOString() }));
  if (s.checkpoint !== "") out["checkpoint"] = s.checkpoint;
  if (s.own) {
    out["own"] = {
      present: s.own.present,
      ...(s.own.cardId && s.own.cardId.length > 0 ? { card_id: b64(s.own.cardId) } : {}),
      card_log_index: Number(s.own.cardLogIndex),
      latest_log_index: Number(s.own.latestLogIndex),
      checkpoint_size: Number(s.own.checkpointSize),
      checked_at: s.own.checkedAt.toISOString(),
    };
  }
  if (s.revokedHere.length > 0) out["revoked_here"] = s.revokedHere.map(b64);
  Object.assign(out, s.rest);
  return new TextEncoder().encode(JSON.stringify(out, null, 2) + "\n");
}

/**
 * keptCheckpoint parses the kept checkpoint's body. Its signature was verified when it
 * was kept; it is not verified again, so that a log key the app stops shipping does not
 * make the file unreadable.
 */
export function keptCheckpoint(s: KtState): Checkpoint | undefined {
  if (s.checkpoint === "") return undefined;
  const end = s.checkpoint.indexOf("\n\n");
  if (end < 0) throw umbraError(UmbraErrorKind.StorageDamaged, "the key transparency state's checkpoint is damaged: no signature");
  try {
    return parseCheckpoint(s.checkpoint.slice(0, end + 1));
  } catch (e) {
    if (!isKtError(e)) throw e;
    throw umbraError(UmbraErrorKind.StorageDamaged, `the key transparency state's checkpoint is damaged: ${e.message}`, e);
  }
}

/**
 * KtStateStore reads and writes the state in storage. Changes go through update, one
 * at a time, each starting from the state as stored (so what another tab or process
 * kept meanwhile is seen), and written back only if fn says so.
 */
export class KtStateStore {
  readonly #storage: Storage;
  #queue: Promise<unknown> = Promise.resolve();

  constructor(storage: Storage) {
    this.#storage = storage;
  }

  /** The state as stored; an empty state when there is none. */
  async read(): Promise<KtState> {
    const b = await this.#storage.get(KT_STATE);
    if (!b) return emptyKtState();
    try {
      return parseKtState(b);
    } catch (e) {
      throw umbraError(
        UmbraErrorKind.StorageDamaged,
        `the key transparency state is damaged (${e instanceof Error ? e.message : String(e)}): it holds the log key and the checkpoint this device trusts; restore it, or remove it to trust the log's key and checkpoint on first use again`,
        e,
      );
    }
  }

  /** Changes the state with fn, starting from the stored state, and saves it if fn returns true. */
  update(fn: (s: KtState) => boolean | Promise<boolean>): Promise<void> {
    const run = this.#queue.then(async () => {
      const s = await this.read();
      if (await fn(s)) await this.#storage.put(KT_STATE, encodeKtState(s));
    });
    this.#queue = run.catch(() => {});
    return run;
  }
}
