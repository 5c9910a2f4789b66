// The pin file: what this client trusts (docs/wire-format.md §5.4–5.7), the card
// service's keys and, per contact, the chain of cards it accepted. It holds public keys
// and card ids only. It is stored as the Go SDK's pin file is written (JSON, byte
// strings in base64, times in RFC 3339), under the name "keystore.trust", so a folder
// that the Go CLI and this SDK share holds one pin file that both read.

import { TRUST, type Storage } from "../storage/storage.js";
import { UmbraErrorKind, umbraError } from "./errors.js";

export const pinFileVersion = 1;
/** The most cards a contact's pinned chain keeps; the oldest go first. */
export const maxPinnedCards = 256;

/** How a pinned card or service key came to be trusted. */
export const PinSource = {
  /** the first card (or service keys) seen */
  FirstUse: "first-use",
  /** chained by endorsements (or rotation statements) this client verified */
  Endorsed: "endorsed",
  /** a key change the user accepted */
  Accepted: "accepted",
  /** a key change taken under the "warn" policy */
  Warned: "warned",
  /** a service key the app ships with */
  Config: "config",
} as const;

/** Why a contact's card did not chain to the pinned one (§5.4). */
export type KeyChangeReason = "reset" | "not endorsed" | "bad endorsement" | "does not chain" | "rollback";

export interface PinnedServiceKey {
  keyId: string;
  publicKey: Uint8Array;
  source: string;
  /** When a rotation retired the key, once known. */
  retiredAt?: Date | undefined;
  pinnedAt: Date;
}

export interface PinnedCardEntry {
  cardId: Uint8Array;
  signingKey: Uint8Array;
  how: string;
  at: Date;
}

/** A key change the client refused, kept until the user accepts it. */
export interface PendingChangeEntry {
  cardId: Uint8Array;
  signingKey: Uint8Array;
  reason: KeyChangeReason;
  detail?: string | undefined;
  at: Date;
}

export interface ContactPinEntry {
  /** Every card of the contact this client accepted, oldest first; the last is the head. */
  chain: PinnedCardEntry[];
  verified: boolean;
  verifiedAt?: Date | undefined;
  pending?: PendingChangeEntry | undefined;
}

export interface PinFile {
  version: number;
  serviceKeys: PinnedServiceKey[];
  contacts: Map<string, ContactPinEntry>;
}

/** A card service key an app ships with: GetServiceKey's key id and Ed25519 public key. */
export interface ServiceKeyPin {
  readonly keyId: string;
  readonly publicKey: Uint8Array;
}

export function emptyPinFile(): PinFile {
  return { version: pinFileVersion, serviceKeys: [], contacts: new Map() };
}

export function head(p: ContactPinEntry): PinnedCardEntry {
  return p.chain[p.chain.length - 1]!;
}

export function holds(p: ContactPinEntry, id: Uint8Array): boolean {
  return p.chain.some((c) => sameBytes(c.cardId, id));
}

/** Appends cards to the chain, dropping the oldest past maxPinnedCards. */
export function push(p: ContactPinEntry, ...cards: PinnedCardEntry[]): void {
  p.chain.push(...cards);
  if (p.chain.length > maxPinnedCards) {
    p.chain.splice(0, p.chain.length - maxPinnedCards);
  }
}

export function serviceKeyOf(f: PinFile, id: string): PinnedServiceKey | undefined {
  return f.serviceKeys.find((k) => k.keyId === id);
}

export function sameBytes(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

// ---- JSON, as the Go SDK writes it ----

function b64(b: Uint8Array): string {
  let s = "";
  for (const x of b) s += String.fromCharCode(x);
  return btoa(s);
}

function unb64(s: unknown, what: string): Uint8Array {
  if (typeof s !== "string") throw new PinFileError(`${what} is not a base64 string`);
  let bin: string;
  try {
    bin = atob(s);
  } catch {
    throw new PinFileError(`${what} is not base64`);
  }
  const out = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
  return out;
}

function time(s: unknown, what: string): Date {
  if (typeof s !== "string") throw new PinFileError(`${what} is not a time`);
  const d = new Date(s);
  if (Number.isNaN(d.getTime())) throw new PinFileError(`${what} is not an RFC 3339 time`);
  return d;
}

function optTime(s: unknown, what: string): Date | undefined {
  if (s === undefined || s === null) return undefined;
  const d = time(s, what);
  // Go's zero time, should a writer have left it in.
  return d.getTime() === -62135596800000 ? undefined : d;
}

function str(s: unknown, what: string): string {
  if (typeof s !== "string") throw new PinFileError(`${what} is not a string`);
  return s;
}

function obj(v: unknown, what: string): { [k: string]: unknown } {
  if (v === null || typeof v !== "object" || Array.isArray(v)) throw new PinFileError(`${what} is not an object`);
  return v as { [k: string]: unknown };
}

const reasons: readonly KeyChangeReason[] = ["reset", "not endorsed", "bad endorsement", "does not chain", "rollback"];

/** PinFileError: a pin file that does not parse. */
export class PinFileError extends Error {
  override readonly name = "PinFileError";
}

function card(v: unknown, what: string): PinnedCardEntry {
  const o = obj(v, what);
  return {
    cardId: unb64(o["card_id"], what + ".card_id"),
    signingKey: unb64(o["signing_key"], what + ".signing_key"),
    how: str(o["how"], what + ".how"),
    at: time(o["at"], what + ".at"),
  };
}

/** Parses a pin file's bytes; throws a PinFileError that says what is wrong. */
export function parsePinFile(bytes: Uint8Array): PinFile {
  let json: unknown;
  try {
    json = JSON.parse(new TextDecoder("utf-8", { fatal: true }).decode(bytes));
  } catch (e) {
    throw new PinFileError(`not JSON: ${e instanceof Error ? e.message : String(e)}`);
  }
  const o = obj(json, "the file");
  if (o["version"] !== pinFileVersion) {
    throw new PinFileError(`version ${JSON.stringify(o["version"])}; this SDK reads version ${pinFileVersion}`);
  }
  const f = emptyPinFile();
  const keys = o["service_keys"];
  if (keys !== undefined && keys !== null) {
    if (!Array.isArray(keys)) throw new PinFileError("service_keys is not a list");
    keys.forEach((v, i) => {
      const k = obj(v, `service_keys[${i}]`);
      f.serviceKeys.push({
        keyId: str(k["key_id"], `service_keys[${i}].key_id`),
        publicKey: unb64(k["public_key"], `service_keys[${i}].public_key`),
        source: str(k["source"], `service_keys[${i}].source`),
        retiredAt: optTime(k["retired_at"], `service_keys[${i}].retired_at`),
        pinnedAt: time(k["pinned_at"], `service_keys[${i}].pinned_at`),
      });
    });
  }
  const contacts = o["contacts"];
  if (contacts !== undefined && contacts !== null) {
    for (const [id, v] of Object.entries(obj(contacts, "contacts"))) {
      const c = obj(v, `contact ${id}`);
      if (!Array.isArray(c["chain"]) || c["chain"].length === 0) {
        throw new PinFileError(`contact ${id} has no pinned card`);
      }
      const pin: ContactPinEntry = {
        chain: c["chain"].map((e, i) => card(e, `contact ${id} chain[${i}]`)),
        verified: c["verified"] === true,
        verifiedAt: optTime(c["verified_at"], `contact ${id} verified_at`),
      };
      if (c["pending"] !== undefined && c["pending"] !== null) {
        const p = obj(c["pending"], `contact ${id} pending`);
        const reason = p["reason"];
        if (!reasons.includes(reason as KeyChangeReason)) {
          throw new PinFileError(`contact ${id} pending: reason ${JSON.stringify(reason)} is not one of ${reasons.join(", ")}`);
        }
        pin.pending = {
          cardId: unb64(p["card_id"], `contact ${id} pending.card_id`),
          signingKey: unb64(p["signing_key"], `contact ${id} pending.signing_key`),
          reason: reason as KeyChangeReason,
          detail: p["detail"] === undefined ? undefined : str(p["detail"], `contact ${id} pending.detail`),
          at: time(p["at"], `contact ${id} pending.at`),
        };
      }
      f.contacts.set(id, pin);
    }
  }
  return f;
}

/** Encodes a pin file as the Go SDK does (indented JSON and a final newline). */
export function encodePinFile(f: PinFile): Uint8Array {
  const out: { [k: string]: unknown } = { version: f.version };
  if (f.serviceKeys.length > 0) {
    out["service_keys"] = f.serviceKeys.map((k) => ({
      key_id: k.keyId,
      public_key: b64(k.publicKey),
      source: k.source,
      ...(k.retiredAt ? { retired_at: k.retiredAt.toISOString() } : {}),
      pinned_at: k.pinnedAt.toISOString(),
    }));
  }
  if (f.contacts.size > 0) {
    const contacts: { [k: string]: unknown } = {};
    for (const [id, p] of [...f.contacts].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))) {
      contacts[id] = {
        chain: p.chain.map((c) => ({ card_id: b64(c.cardId), signing_key: b64(c.signingKey), how: c.how, at: c.at.toISOString() })),
        ...(p.verified ? { verified: true } : {}),
        ...(p.verifiedAt ? { verified_at: p.verifiedAt.toISOString() } : {}),
        ...(p.pending
          ? {
              pending: {
                card_id: b64(p.pending.cardId),
                signing_key: b64(p.pending.signingKey),
                reason: p.pending.reason,
                ...(p.pending.detail ? { detail: p.pending.detail } : {}),
                at: p.pending.at.toISOString(),
              },
            }
          : {}),
      };
    }
    out["contacts"] = contacts;
  }
  return new TextEncoder().encode(JSON.stringify(out, null, 2) + "\n");
}

function clone(f: PinFile): PinFile {
  return parsePinFile(encodePinFile(f));
}

/**
 * PinStore keeps the pins in memory and in storage. Changes go through update, one at a
 * time, each starting from the file as stored (so what another tab or process pinned
 * meanwhile is kept) and written back whole.
 */
export class PinStore {
  readonly #storage: Storage;
  readonly #configured: readonly ServiceKeyPin[];
  readonly #now: () => Date;
  #pins: PinFile = emptyPinFile();
  #queue: Promise<unknown> = Promise.resolve();

  constructor(storage: Storage, configured: readonly ServiceKeyPin[], now: () => Date) {
    this.#storage = storage;
    this.#configured = configured;
    this.#now = now;
  }

  /** Reads the stored pins into memory, adding the configured service keys. */
  async load(): Promise<void> {
    this.#pins = await this.#read();
  }

  async #read(): Promise<PinFile> {
    const b = await this.#storage.get(TRUST);
    let f: PinFile;
    try {
      f = b ? parsePinFile(b) : emptyPinFile();
    } catch (e) {
      throw umbraError(
        UmbraErrorKind.StorageDamaged,
        `the pin file is damaged (${e instanceof Error ? e.message : String(e)}): it holds which keys this device trusts; restore it, or remove it to trust on first use again`,
        e,
      );
    }
    addConfiguredServiceKeys(f, this.#configured, this.#now());
    return f;
  }

  /** A copy of the pins as last read or written. */
  snapshot(): PinFile {
    return clone(this.#pins);
  }

  /** A copy of identity's pin, or undefined. */
  contact(identity: string): ContactPinEntry | undefined {
    const p = this.#pins.contacts.get(identity);
    if (!p) return undefined;
    return {
      chain: p.chain.map((c) => ({ ...c, cardId: c.cardId.slice(), signingKey: c.signingKey.slice() })),
      verified: p.verified,
      verifiedAt: p.verifiedAt,
      pending: p.pending && { ...p.pending, cardId: p.pending.cardId.slice(), signingKey: p.pending.signingKey.slice() },
    };
  }

  serviceKey(id: string): PinnedServiceKey | undefined {
    const k = serviceKeyOf(this.#pins, id);
    return k && { ...k, publicKey: k.publicKey.slice() };
  }

  /** Changes the pins with fn, starting from the stored file, and saves them. */
  update(fn: (f: PinFile) => void | Promise<void>): Promise<void> {
    const run = this.#queue.then(async () => {
      const f = await this.#read();
      await fn(f);
      await this.#storage.put(TRUST, encodePinFile(f));
      this.#pins = f;
    });
    this.#queue = run.catch(() => {});
    return run;
  }
}

/** Pins the service keys an app ships with. */
export function addConfiguredServiceKeys(f: PinFile, keys: readonly ServiceKeyPin[], now: Date): void {
  for (const k of keys) {
    if (k.keyId === "" || k.publicKey.length !== 32) {
      throw new Error(`umbra: serviceKeys: key ${JSON.stringify(k.keyId)} needs an id and a 32-byte Ed25519 public key`);
    }
    const have = serviceKeyOf(f, k.keyId);
    if (have) {
      if (!sameBytes(have.publicKey, k.publicKey)) {
        throw umbraError(UmbraErrorKind.UnknownServiceKey, `serviceKeys names key ${JSON.stringify(k.keyId)} with another public key than the one pinned in the pin file`);
      }
      continue;
    }
    f.serviceKeys.push({ keyId: k.keyId, publicKey: k.publicKey.slice(), source: PinSource.Config, pinnedAt: now });
  }
}
