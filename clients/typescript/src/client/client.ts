// UmbraClient is one user's view of Umbra, the TypeScript counterpart of the Go SDK's
// sdk.Client (pkg/sdk), through the REST gateway: the keystore, cards and their
// verification, trust in contacts' cards (pins, key changes, safety numbers), and the
// messaging, group and backup calls in the files beside this one.

import { timestampDate, type Timestamp } from "@bufbuild/protobuf/wkt";
import { equalBytes } from "../bytes.js";
import { cardId, endorse, newCard, parseCard, parseCardAsync, verifyEndorsement, verifyServiceSignatureAsync, type Card } from "../card.js";
import { E2eeErrorKind, e2eeError } from "../errors.js";
import {
  CardService,
  CardStatus,
  type Card as CardProto,
  PublishCardRequestSchema,
  type ServiceKey,
} from "../gen/umbra/card/v1/card_pb.js";
import { IdentityService } from "../gen/umbra/identity/v1/identity_pb.js";
import type { Suite } from "../hpke.js";
import { DefaultSuite, KeyPair } from "../keys.js";
import { checkSigningPublicKey } from "../pubkey.js";
import { parseServiceKeyRotation, safetyNumber, verifyServiceKeyRotation, type ServiceKeyRotation } from "../trust.js";
import type { MessageInitShape } from "@bufbuild/protobuf";
import { KEYSTORE, type Storage } from "../storage/storage.js";
import type { WitnessPolicy } from "../kt/cosignature.js";
import { witnessPolicy, type WitnessConfig } from "./witness.js";
import { checkLogKeys, keptSignedCheckpoint, proveLogged, provedCards, unproved, type ProvedCard } from "./kt.js";
import { KtStateStore } from "./ktstate.js";
import { monitor, type MonitorReport } from "./monitor.js";
import type { Checkpoint } from "../kt/checkpoint.js";
import { Code, hasCode } from "../transport/errors.js";
import { RestTransport, type RetryOptions } from "../transport/rest.js";
import type { TokenProvider } from "../transport/token.js";
import { KeyChangedError, UmbraErrorKind, fingerprint, hasKind, umbraError } from "./errors.js";
import { decrypt as decryptEnvelope, encrypt as encryptEnvelope, inspectEnvelope } from "../envelope.js";
import { Keystore, type Argon2idFunction } from "../keystore.js";
import { loadKeystore, saveKeystore } from "./keystore.js";
import { Group, GroupStates, allPages, observeGroupEvent, openGroupConversationMessage, type CreateGroupOptions } from "./groups.js";
import * as messaging from "./messaging.js";
import * as backup from "./backup.js";
import { BackupSlot } from "../backup-oprf.js";
import type { BackupInfo } from "../gen/umbra/backup/v1/backup_pb.js";
import { GroupService, type Group as GroupInfo, type Invitation, type JoinRequest } from "../gen/umbra/group/v1/group_pb.js";
import type { HistoryRequestSchema, HistoryResponse, Message, SendRequestSchema, SendResponse, SubscribeResponse } from "../gen/umbra/messaging/v1/messaging_pb.js";
import {
  PinSource,
  PinStore,
  head,
  holds,
  push,
  sameBytes,
  serviceKeyOf,
  type ContactPinEntry,
  type KeyChangeReason,
  type PinFile,
  type PinnedCardEntry,
  type PinnedServiceKey,
  type ServiceKeyPin,
} from "./pins.js";

/** What the client does when a contact's key changed (docs/wire-format.md §5.4). */
export type KeyChangePolicy =
  /** refuse the new card until the user accepts it (acceptKeyChange) after comparing safety numbers: the default */
  | "refuse"
  /** pin the new card and go on, reporting the change; a verified contact is refused all the same */
  | "warn";

/** How far a signed created_at may lie outside its signer card's lifetime (§6.3). */
export const DefaultClockSkewMs = 5 * 60_000;

export interface ClientConfig {
  /** The REST gateway, e.g. "http://127.0.0.1:8080". */
  readonly baseUrl: string;
  /** Returns access tokens for the user; the app backend mints them. Required. */
  readonly token: TokenProvider;
  /** Where the keystore and the pins are kept: MemoryStorage, FileStorage, IndexedDBStorage. */
  readonly storage: Storage;
  /** Encrypts the keystore at rest (UTF-8 for a string). Required unless noPassphrase. */
  readonly passphrase?: string | Uint8Array | undefined;
  /** Keep the keystore unencrypted: for tests, and storage the device protects otherwise. */
  readonly noPassphrase?: boolean | undefined;
  /** Suite of new key pairs; defaults to the hybrid ML-KEM-768 + X25519. */
  readonly suite?: Suite | undefined;
  /** Leave the user's own card out of encrypt's recipients (it is in by default, for their other devices). */
  readonly excludeSelf?: boolean | undefined;
  readonly clockSkewMs?: number | undefined;
  readonly now?: (() => Date) | undefined;
  /** "refuse" (the default) or "warn". */
  readonly keyChangePolicy?: KeyChangePolicy | undefined;
  /** Called for every key change the client meets, under either policy. */
  readonly onKeyChange?: ((change: KeyChangedError) => void) | undefined;
  /**
   * Card service keys the app ships with (every key GetServiceKey lists when the app is
   * built): the client then trusts no other key but through rotations signed by one of
   * them. Without them it pins the keys the service lists on first use.
   */
  readonly serviceKeys?: readonly ServiceKeyPin[] | undefined;
  readonly fetch?: typeof fetch | undefined;
  readonly retry?: RetryOptions | undefined;
  /**
   * Runs Argon2id for the keystore's passphrase and for key backups (the costly step of
   * opening or creating the keystore, and of a backup or restore: 64 MiB, a fraction of
   * a second). A browser app passes one that runs in a Web Worker so the page stays
   * responsive; by default it runs in the calling thread (hash-wasm).
   */
  readonly argon2id?: Argon2idFunction | undefined;
  /**
   * Key transparency (docs/key-transparency.md, "Clients"): every card lookup is proved
   * by the card service's log and map against a checkpoint consistent with the last one
   * this client kept; there is no setting that turns it off.
   *
   * logKeys are the card service's log keys the app ships with: signed-note verifier
   * keys, as GetLogKey and `umbra card log-key` give them. Without them the client pins
   * the key the service names on first use. Checkpoints signed by no trusted key are
   * refused (UnknownLogKey).
   */
  readonly logKeys?: readonly string[] | undefined;
  /**
   * Witnesses this client requires (docs/key-transparency.md, "Witnesses"): each a
   * witness's verifier key (`umbra witness keygen` prints it) and the URL of its HTTP
   * API. With them, every checkpoint a lookup is proved against must carry valid
   * cosignatures of witnessQuorum of them (undefined or 0: all); the client submits
   * each new checkpoint to them and keeps the cosigned one. A split view a witness
   * caught is a LogInconsistentError; too few cosignatures within
   * keyTransparencyWaitMs, a NotWitnessedError (KtErrorKind.NotWitnessed).
   */
  readonly witnesses?: readonly WitnessConfig[] | undefined;
  readonly witnessQuorum?: number | undefined;
  /**
   * How long a lookup waits for a checkpoint that holds a card published after the
   * latest one (DefaultKeyTransparencyWaitMs, 5 s, when unset).
   */
  readonly keyTransparencyWaitMs?: number | undefined;
  /**
   * If positive, the client checks its own identity in the log (monitor) when it opens
   * and then at this interval, until close.
   */
  readonly monitorIntervalMs?: number | undefined;
  /**
   * Called with what monitoring finds: each UnexpectedCardError, and a check of the
   * log that failed (LogInconsistent, UnprovedCard, UnknownLogKey). The client also
   * dispatches each as a "keytransparencyalert" CustomEvent.
   */
  readonly onKeyTransparencyAlert?: ((alert: Error) => void) | undefined;
}

/** A rotation endorsement: the exact RotationEndorsementContent bytes and the previous card's signature. */
export interface Endorsement {
  readonly content: Uint8Array;
  readonly signature: Uint8Array;
}

/**
 * VerifiedCard is a card from the directory that passed verification: its content
 * parsed, its self-signature and the card service's counter-signature verified, the
 * latter with a service key this client pinned (§5.6).
 */
export interface VerifiedCard extends Card {
  readonly status: CardStatus;
  readonly publishedAt: Date;
  readonly supersededBy: Uint8Array;
  readonly supersededAt: Date | undefined;
  readonly revokedAt: Date | undefined;
  /** The predecessor's endorsement as the server attached it; it proves nothing by itself: see endorsed. */
  readonly endorsement: Endorsement | undefined;
  /** This client verified, itself, that the previous card's key endorsed this card. */
  readonly endorsed: boolean;
  /** The card service's word that the card was published under a reset grant (a key change). */
  readonly keyReset: boolean;
  /** The first 12 bytes of the id in groups of four hex digits, for people to compare. */
  readonly fingerprint: string;
  /**
   * The key transparency log entry that published the card (docs/wire-format.md 13.9),
   * as the card service states it: the server's word until the entry is proved (0 from
   * SearchCards, which does not fill it).
   */
  readonly logIndex: bigint;
}

/** One card of a contact's pinned chain. */
export interface PinnedCard {
  readonly cardId: Uint8Array;
  readonly signingKey: Uint8Array;
  readonly fingerprint: string;
  /** "first-use", "endorsed", "accepted" or "warned". */
  readonly how: string;
  readonly at: Date;
}

/** A key change this client refused and the user has not accepted. */
export interface PendingKeyChange {
  readonly cardId: Uint8Array;
  readonly signingKey: Uint8Array;
  readonly fingerprint: string;
  readonly reason: KeyChangeReason;
  readonly detail: string | undefined;
  readonly at: Date;
  /** The safety number with the new key: the one to compare before accepting it. */
  readonly safetyNumber: string;
}

/** What this client trusts of a contact. */
export interface ContactTrust {
  readonly identity: string;
  /** The user's own current card, the other half of the safety number. */
  readonly myCardId: Uint8Array;
  /** The pinned chain, oldest first; the last card is the one the client encrypts to. */
  readonly chain: readonly PinnedCard[];
  readonly safetyNumber: string;
  readonly verified: boolean;
  readonly verifiedAt: Date | undefined;
  readonly pending: PendingKeyChange | undefined;
}

/** The longest chain of endorsements walked from a pinned card. */
const maxChainLinks = 1000;

function toDate(ts: Timestamp | undefined): Date | undefined {
  return ts ? timestampDate(ts) : undefined;
}

/**
 * UmbraClient is one user's view of Umbra. Open it with UmbraClient.open; it is an
 * EventTarget that dispatches a "keychange" event (a CustomEvent whose detail is the
 * KeyChangedError) for every key change it meets, as onKeyChange is called, and a
 * "keytransparencyalert" event (detail: an UnexpectedCardError, or the error of a check
 * of the log that failed) for every alert of monitoring, as onKeyTransparencyAlert is.
 */
export class UmbraClient extends EventTarget {
  /** @internal */ readonly cfg: Required<Pick<ClientConfig, "storage" | "clockSkewMs" | "now" | "keyChangePolicy" | "suite">> & ClientConfig;
  /** The REST transport, with the user's token on every call: for the calls this client does not wrap. */
  readonly transport: RestTransport;
  /** @internal */ ks: Keystore | undefined;
  /** @internal */ me = "";
  /** @internal */ appId = "";
  /** @internal */ readonly pins: PinStore;
  /** @internal */ readonly cardCache = new Map<string, VerifiedCard>();
  /** @internal The key transparency state (ktstate.ts). */
  readonly ktState: KtStateStore;
  /** @internal The witness policy of config.witnesses, if any (witness.ts). */
  readonly witnessPolicy: WitnessPolicy | undefined;
  readonly #passphrase: Uint8Array | undefined;
  #stopMonitoring: (() => void) | undefined;

  private constructor(cfg: ClientConfig, passphrase: Uint8Array | undefined) {
    super();
    this.cfg = {
      ...cfg,
      suite: cfg.suite ?? DefaultSuite,
      clockSkewMs: cfg.clockSkewMs ?? DefaultClockSkewMs,
      now: cfg.now ?? (() => new Date()),
      keyChangePolicy: cfg.keyChangePolicy ?? "refuse",
    };
    this.#passphrase = passphrase;
    this.transport = new RestTransport({ baseUrl: cfg.baseUrl, token: cfg.token, fetch: cfg.fetch, retry: cfg.retry, now: () => this.cfg.now().getTime() });
    this.pins = new PinStore(cfg.storage, cfg.serviceKeys ?? [], this.cfg.now);
    this.ktState = new KtStateStore(cfg.storage);
    this.witnessPolicy = cfg.witnesses && cfg.witnesses.length > 0 ? witnessPolicy(cfg.witnesses, cfg.witnessQuorum) : undefined;
  }

  /** Opens the client: the keystore if storage holds one, and the pins. */
  static async open(cfg: ClientConfig): Promise<UmbraClient> {
    if (typeof cfg.token !== "function") throw new Error("umbra: config.token (the token provider) is required");
    if (!cfg.storage) throw new Error("umbra: config.storage is required");
    checkLogKeys(cfg.logKeys ?? []);
    if (cfg.witnesses && cfg.witnesses.length > 0) witnessPolicy(cfg.witnesses, cfg.witnessQuorum);
    else if (cfg.witnessQuorum) throw new Error("umbra: config.witnessQuorum without config.witnesses");
    let pass: Uint8Array | undefined;
    if (cfg.noPassphrase) {
      if (cfg.passphrase !== undefined && cfg.passphrase.length > 0) {
        throw new Error("umbra: config.passphrase and config.noPassphrase exclude each other");
      }
    } else {
      if (cfg.passphrase === undefined || cfg.passphrase.length === 0) {
        throw new Error("umbra: a keystore passphrase is required (or set noPassphrase explicitly)");
      }
      pass = typeof cfg.passphrase === "string" ? new TextEncoder().encode(cfg.passphrase.normalize("NFC")) : cfg.passphrase.slice();
    }
    const c = new UmbraClient(cfg, pass);
    try {
      c.ks = await loadKeystore(cfg.storage, pass, c.cfg.now, cfg.argon2id);
    } catch (e) {
      throw umbraError(UmbraErrorKind.StorageDamaged, `open the keystore: ${e instanceof Error ? e.message : String(e)}`, e);
    }
    if (c.ks) c.me = c.ks.identity;
    await c.pins.load();
    await c.ktState.read(); // a damaged state file is reported now, as the pins are
    if (cfg.monitorIntervalMs !== undefined && cfg.monitorIntervalMs > 0) c.#stopMonitoring = c.startMonitoring(cfg.monitorIntervalMs);
    return c;
  }

  /** Stops the monitoring that config.monitorIntervalMs started, if any. */
  close(): void {
    this.#stopMonitoring?.();
    this.#stopMonitoring = undefined;
  }

  // ---- the user and the keystore ----

  /** Reports whether the keystore holds the user's current key. */
  get hasPrivateKey(): boolean {
    return this.ks?.current() !== undefined;
  }

  /** The user's identity, asking the identity service if the keystore does not know it yet. */
  async identity(signal?: AbortSignal): Promise<string> {
    if (this.me !== "") return this.me;
    await this.whoAmI(signal);
    return this.me;
  }

  /** @internal WhoAmI: the identity and app of the token. */
  async whoAmI(signal?: AbortSignal): Promise<{ identity: string; appId: string }> {
    const who = await this.transport.unary(IdentityService.method.whoAmI, {}, { signal });
    if (this.ks && this.ks.identity !== who.identity) {
      throw new Error(`umbra: the keystore holds ${this.ks.identity}'s keys, but the access token is ${who.identity}'s`);
    }
    this.me = who.identity;
    this.appId = who.appId;
    return { identity: who.identity, appId: who.appId };
  }

  /** @internal The keystore and its current key, or a NoPrivateKey error. */
  current(): { ks: Keystore; kp: KeyPair; cardId: Uint8Array } {
    const cur = this.ks?.current();
    if (!this.ks || !cur) throw umbraError(UmbraErrorKind.NoPrivateKey, "the keystore holds no key: register, or restore the keys from a backup");
    return { ks: this.ks, kp: cur.keyPair, cardId: cur.cardId };
  }

  /** @internal A new, empty keystore of identity, protected as configured (or holding bundle: a restore). */
  newKeystore(identity: string, bundle?: Uint8Array): Promise<Keystore> {
    return Keystore.create({
      identity,
      ...(this.#passphrase ? { passphrase: this.#passphrase } : { noPassphrase: true }),
      ...(bundle ? { keyBundle: bundle } : {}),
      ...(this.cfg.argon2id ? { stretchWith: this.cfg.argon2id } : {}),
      now: this.cfg.now,
    });
  }

  /** @internal Saves ks as the keystore and makes it the client's. */
  async saveKeystore(ks: Keystore): Promise<void> {
    await saveKeystore(this.cfg.storage, ks);
    this.ks = ks;
    this.me = ks.identity;
  }

  /** Deletes the local keystore. The published card stays: another device, or a restore, can still use it. */
  async cleanup(): Promise<void> {
    this.ks = undefined;
    await this.cfg.storage.delete(KEYSTORE);
  }

  // ---- publishing cards ----

  /**
   * Creates the user's keys, publishes their card and saves the keys. Refuses a user who
   * has keys here or an active card anywhere (AlreadyRegistered: restore a backup, or
   * resetKeys if every key is lost), and a user whose earlier cards were all revoked
   * (ResetGrantRequired).
   */
  async register(signal?: AbortSignal): Promise<VerifiedCard> {
    if (this.hasPrivateKey) throw umbraError(UmbraErrorKind.AlreadyRegistered, "the keystore already holds keys");
    return this.#registerFresh("", signal);
  }

  async #registerFresh(grant: string, signal?: AbortSignal): Promise<VerifiedCard> {
    const me = await this.identity(signal);
    const kp = KeyPair.generate(this.cfg.suite);
    const { content, selfSignature } = newCard(kp, me, this.cfg.now());
    // The key is stored before its card is public, so no card ever lacks its private key.
    const ks = await this.newKeystore(me);
    ks.setCurrent(kp, cardId(content));
    const before = await this.cfg.storage.get(KEYSTORE);
    if (before) throw umbraError(UmbraErrorKind.AlreadyRegistered, "storage already holds a keystore");
    await saveKeystore(this.cfg.storage, ks);
    let card: VerifiedCard;
    try {
      const resp = await this.transport.unary(CardService.method.publishCard, { content, selfSignature, resetGrant: grant }, { signal });
      card = await this.verify(resp.card, signal);
    } catch (e) {
      await this.cfg.storage.delete(KEYSTORE);
      throw publishError(e, me);
    }
    this.ks = ks;
    this.me = me;
    return card;
  }

  /**
   * The way back after every key is lost: new keys and a card no earlier card endorses,
   * published under grant, a one-time reset grant the app backend obtained
   * (IssueResetGrant). Contacts see a key change. Older keys on this device stay.
   */
  async resetKeys(grant: string, signal?: AbortSignal): Promise<VerifiedCard> {
    if (grant === "") throw umbraError(UmbraErrorKind.ResetGrantRequired, "resetKeys needs the grant");
    if (!this.hasPrivateKey) return this.#registerFresh(grant, signal);
    const { ks } = this.current();
    const kp = KeyPair.generate(this.cfg.suite);
    const { content, selfSignature } = newCard(kp, ks.identity, this.cfg.now());
    return this.#publishNewKeys(ks, kp, { content, selfSignature, resetGrant: grant }, signal);
  }

  /**
   * Replaces the user's keys: a new key pair and a card naming the current one as its
   * predecessor, endorsed by its key. The old private key stays for old messages.
   */
  async rotateKeys(signal?: AbortSignal): Promise<VerifiedCard> {
    const { ks, kp: old, cardId: oldId } = this.current();
    const kp = KeyPair.generate(this.cfg.suite);
    const { content, selfSignature } = newCard(kp, ks.identity, this.cfg.now(), oldId);
    const next = parseCard(content, selfSignature);
    const e = endorse(old, next);
    const card = await this.#publishNewKeys(ks, kp, { content, selfSignature, endorsement: { content: e.content, signature: e.signature } }, signal);
    // The endorsement is this client's own, checked against the key it signed with.
    const prev = { id: oldId, identity: ks.identity, signingKey: old.signingPublicKey } as Card;
    if (card.endorsement) {
      try {
        verifyEndorsement(prev, card, card.endorsement.content, card.endorsement.signature);
        return { ...card, endorsed: true };
      } catch {
        // not endorsed as sent: the server attached another endorsement
      }
    }
    return card;
  }

  /**
   * Publishes a card for fresh keys when the user has never had one (on a first start it
   * is register). With an active card it refuses (AlreadyRegistered: rotateKeys); after
   * the user's cards were revoked a new card is a reset (ResetGrantRequired).
   */
  async publishCard(signal?: AbortSignal): Promise<VerifiedCard> {
    if (!this.hasPrivateKey) return this.register(signal);
    const { ks } = this.current();
    const kp = KeyPair.generate(this.cfg.suite);
    const { content, selfSignature } = newCard(kp, ks.identity, this.cfg.now());
    try {
      return await this.#publishNewKeys(ks, kp, { content, selfSignature }, signal);
    } catch (e) {
      throw publishError(e, ks.identity);
    }
  }

  /** Makes kp current and publishes its card; the keystore goes back to what it was if publishing fails. */
  async #publishNewKeys(ks: Keystore, kp: KeyPair, req: MessageInitShape<typeof PublishCardRequestSchema>, signal?: AbortSignal): Promise<VerifiedCard> {
    // The new key is stored before its card is published; the file as it was is put
    // back if publishing fails.
    const saved = ks.toFile();
    ks.setCurrent(kp, cardId(req.content!));
    await this.saveKeystore(ks);
    let resp;
    try {
      resp = await this.transport.unary(CardService.method.publishCard, req, { signal });
    } catch (e) {
      await this.cfg.storage.put(KEYSTORE, saved);
      this.ks = await Keystore.open(saved, this.#passphrase, this.cfg.now, this.cfg.argon2id);
      throw e;
    }
    return this.verify(resp.card, signal);
  }

  /** Revokes the user's current card and keeps its keys, so messages sent to it still decrypt here. */
  async revokeCard(signal?: AbortSignal): Promise<void> {
    const { cardId: id } = this.current();
    // Recorded first, so that this device's monitoring expects the revocation even if
    // the reply is lost.
    await this.ktState.update((s) => {
      if (s.revokedHere.some((r) => sameBytes(r, id))) return false;
      s.revokedHere.push(id.slice());
      return true;
    });
    await this.transport.unary(CardService.method.revokeCard, { cardId: id }, { signal });
  }

  /** Revokes the current card and deletes the local keystore (E3Kit's unregister). */
  async unregister(signal?: AbortSignal): Promise<void> {
    await this.revokeCard(signal);
    await this.cleanup();
  }

  // ---- finding and verifying cards ----

  /** @internal Checks a card from the directory and caches it by id. */
  async verify(pc: CardProto | undefined, signal?: AbortSignal): Promise<VerifiedCard> {
    const card = await this.parseDirectoryCard(pc, signal);
    this.cardCache.set(hexId(card.id), card);
    return card;
  }

  /** @internal Checks a card: content and self-signature, the identity it is filed under, and its service signature. */
  async parseDirectoryCard(pc: CardProto | undefined, signal?: AbortSignal): Promise<VerifiedCard> {
    if (!pc) throw umbraError(UmbraErrorKind.UntrustedCard, "the directory's answer holds no card");
    let parsed: Card;
    try {
      parsed = await parseCardAsync(pc.content, pc.selfSignature);
    } catch (e) {
      throw umbraError(UmbraErrorKind.UntrustedCard, e instanceof Error ? e.message : String(e), e);
    }
    if (!equalBytes(parsed.id, pc.cardId)) throw umbraError(UmbraErrorKind.UntrustedCard, "card id does not match its content");
    if (pc.identity !== parsed.identity) {
      throw umbraError(UmbraErrorKind.UntrustedCard, `the directory files a card of ${parsed.identity} under ${pc.identity}`);
    }
    const key = await this.serviceKeyFor(pc.serviceKeyId, signal);
    try {
      await verifyServiceSignatureAsync(key.publicKey, parsed.id, pc.serviceSignature);
    } catch (e) {
      throw umbraError(UmbraErrorKind.UntrustedCard, e instanceof Error ? e.message : String(e), e);
    }
    const publishedAt = toDate(pc.publishedAt) ?? new Date(0);
    if (key.retiredAt && publishedAt.getTime() > key.retiredAt.getTime()) {
      throw umbraError(
        UmbraErrorKind.UntrustedCard,
        `the card is dated ${publishedAt.toISOString()}, after its service key ${pc.serviceKeyId} was retired at ${key.retiredAt.toISOString()}`,
      );
    }
    return {
      ...parsed,
      status: pc.status,
      publishedAt,
      supersededBy: pc.supersededBy,
      supersededAt: toDate(pc.supersededAt),
      revokedAt: toDate(pc.revokedAt),
      endorsement: pc.endorsement ? { content: pc.endorsement.content, signature: pc.endorsement.signature } : undefined,
      endorsed: false,
      keyReset: pc.keyReset,
      fingerprint: fingerprint(parsed.id),
      logIndex: pc.logIndex,
    };
  }

  /**
   * The card service's key kid: pinned, or chained to a pinned key through rotations
   * signed by the key each replaced (§5.6). Without any pin, every key the service lists
   * is pinned: trust on first use.
   */
  async serviceKeyFor(kid: string, signal?: AbortSignal): Promise<PinnedServiceKey> {
    const pinned = this.pins.serviceKey(kid);
    if (pinned) return pinned;
    const resp = await this.transport.unary(CardService.method.getServiceKey, {}, { auth: "none", signal });
    const keys = resp.keys.length > 0 ? resp.keys : resp.key ? [resp.key] : [];
    await this.pins.update((f) => pinServiceKeys(f, keys, this.cfg.now()));
    const k = this.pins.serviceKey(kid);
    if (k) return k;
    throw umbraError(
      UmbraErrorKind.UnknownServiceKey,
      `the card is signed by service key ${JSON.stringify(kid)}, which does not chain to a service key this client pinned (by a rotation signed by the key it replaced): a server that swapped its key, or an app that must ship the new key (serviceKeys)`,
    );
  }

  /**
   * The active card of each identity that has one (E3Kit's findUsers), each proved by
   * the key transparency log (lookupCards): the card its map entry names at a checkpoint
   * consistent with the last one this client kept. Identities without an active card are
   * absent. A card the log does not prove is an error (UnprovedCard, LogInconsistent,
   * UnknownLogKey, NotYetInLog), never a card. The user's own current card, in the
   * second after this device published it and before a checkpoint holds it, is taken
   * from this device's own keys.
   */
  async findCards(identities: readonly string[], signal?: AbortSignal): Promise<Map<string, VerifiedCard>> {
    const out = new Map<string, VerifiedCard>();
    for (const [id, p] of await provedCards(this, identities, true, signal)) {
      if (p.card) out.set(id, p.card);
    }
    return out;
  }

  /**
   * Looks identities up in the key transparency log and map, as every lookup of this
   * client does (findCards, trustedCards, with the same wait for a checkpoint that holds
   * a card newer than the latest one), and returns each one's verified answer with its
   * proof and checkpoint, whether it has a card or not. The user's own card is proved
   * here too, never taken from the keystore. Batches of up to 1,000 identities are one
   * SearchCardsWithProofs each.
   */
  lookupCards(identities: readonly string[], signal?: AbortSignal): Promise<Map<string, ProvedCard>> {
    return provedCards(this, identities, false, signal);
  }

  /** The key transparency checkpoint this client kept (the largest it verified), or undefined before its first lookup. */
  async keptCheckpoint(): Promise<{ checkpoint: Checkpoint; signed: Uint8Array } | undefined> {
    return keptSignedCheckpoint(this);
  }

  // ---- monitoring (monitor.ts) ----

  /**
   * Checks the user's own identity in the key transparency log, once: the map's current
   * card must be this device's (or endorsed from one whose key it holds), and every
   * event of the identity one this device can explain. Each finding is an
   * UnexpectedCardError in the report, also raised as an alert (onKeyTransparencyAlert
   * and a "keytransparencyalert" event); a check of the log that fails is raised and
   * thrown. Needs the user's keys.
   */
  monitor(signal?: AbortSignal): Promise<MonitorReport> {
    return monitor(this, signal);
  }

  /**
   * Runs monitor now and then every intervalMs, until the returned function is called
   * or signal aborts; what it finds is raised as alerts. A device without keys yet is
   * checked once it has them; a failure to reach the server is tried again at the next
   * tick.
   */
  startMonitoring(intervalMs: number, signal?: AbortSignal): () => void {
    if (!(intervalMs > 0)) throw new Error("umbra: startMonitoring needs a positive interval");
    const stop = new AbortController();
    const onAbort = () => stop.abort();
    signal?.addEventListener("abort", onAbort, { once: true });
    let timer: ReturnType<typeof setTimeout> | undefined;
    const tick = async () => {
      if (stop.signal.aborted) return;
      if (this.hasPrivateKey) {
        try {
          await monitor(this, stop.signal);
        } catch {
          // Alerts were raised by monitor; other failures wait for the next tick.
        }
      }
      if (!stop.signal.aborted) {
        timer = setTimeout(tick, intervalMs);
        (timer as { unref?: () => void }).unref?.();
      }
    };
    void tick();
    return () => {
      stop.abort();
      if (timer !== undefined) clearTimeout(timer);
      signal?.removeEventListener("abort", onAbort);
    };
  }

  /** Any card, whatever its status (the sender's card of an old message); an active card is fetched again. */
  async cardById(id: Uint8Array, signal?: AbortSignal): Promise<VerifiedCard> {
    const cached = this.cardCache.get(hexId(id));
    if (cached && cached.status !== CardStatus.ACTIVE) return cached;
    const resp = await this.transport.unary(CardService.method.getCard, { cardId: id }, { signal });
    const card = await this.verify(resp.card, signal);
    if (!equalBytes(card.id, id)) throw umbraError(UmbraErrorKind.UntrustedCard, "the directory answered with another card than the one asked for");
    return card;
  }

  /**
   * Every card identity ever published, newest first. A card whose predecessor is listed
   * is endorsed if, and only if, its endorsement verifies with the predecessor's key.
   */
  async cardHistory(identity: string, signal?: AbortSignal): Promise<VerifiedCard[]> {
    const out: VerifiedCard[] = [];
    let pageToken = "";
    for (;;) {
      const resp = await this.transport.unary(CardService.method.listCardHistory, { identity, pageToken }, { signal });
      for (const pc of resp.cards) {
        const card = await this.parseDirectoryCard(pc, signal);
        if (card.identity !== identity) {
          throw umbraError(UmbraErrorKind.UntrustedCard, `the history of ${identity} lists a card of ${card.identity}`);
        }
        out.push(card);
      }
      pageToken = resp.nextPageToken;
      if (pageToken === "") break;
    }
    const byId = new Map(out.map((c) => [hexId(c.id), c]));
    return out.map((card) => {
      const prev = card.previousCardId && byId.get(hexId(card.previousCardId));
      let endorsed = false;
      if (prev && card.endorsement) {
        try {
          verifyEndorsement(prev, card, card.endorsement.content, card.endorsement.signature);
          endorsed = true;
        } catch {
          // not endorsed: trustedCards reports it as a key change
        }
      }
      const c = { ...card, endorsed };
      this.cardCache.set(hexId(c.id), c);
      return c;
    });
  }

  /** Checks, with this client's own verification, that card's predecessor endorsed it. */
  async verifyEndorsement(card: VerifiedCard, signal?: AbortSignal): Promise<VerifiedCard> {
    if (!card.previousCardId) throw umbraError(UmbraErrorKind.BadEndorsement, `card ${card.fingerprint} names no previous card`);
    if (!card.endorsement) throw umbraError(UmbraErrorKind.BadEndorsement, `card ${card.fingerprint} carries no endorsement by its previous card`);
    const prev = await this.cardById(card.previousCardId, signal);
    try {
      verifyEndorsement(prev, card, card.endorsement.content, card.endorsement.signature);
    } catch (e) {
      throw umbraError(UmbraErrorKind.BadEndorsement, `card ${card.fingerprint}: ${e instanceof Error ? e.message : String(e)}`, e);
    }
    return { ...card, endorsed: true };
  }

  // ---- trust in contacts' cards (§5.4, §5.5) ----

  /**
   * The active card of each identity that has one, each checked against this client's
   * pins: a contact seen for the first time is pinned; a later card is accepted if it
   * chains to the pinned one through endorsements this client verifies, and is then
   * pinned. Any other card is a key change: a KeyChangedError under "refuse", or under
   * "warn" the new card, pinned, and a report to onKeyChange. The user's own card is not
   * pinned (callers check it against the keystore).
   */
  async trustedCards(identities: readonly string[], signal?: AbortSignal): Promise<Map<string, VerifiedCard>> {
    const found = await this.findCards(identities, signal);
    const me = await this.identity(signal);
    const firstSeen: VerifiedCard[] = [];
    const seen = new Set<string>();
    for (const id of identities) {
      const card = found.get(id);
      if (!card || id === me || seen.has(id)) continue;
      seen.add(id);
      if (!this.pins.contact(id)) {
        firstSeen.push(card);
        continue;
      }
      found.set(id, await this.trustActive(card, this.cfg.keyChangePolicy, signal));
    }
    for (const card of await this.#pinFirstSeen(firstSeen)) {
      found.set(card.identity, await this.trustActive(card, this.cfg.keyChangePolicy, signal));
    }
    return found;
  }

  /** Pins cards of contacts without a pin in one write; returns those another writer pinned meanwhile. */
  async #pinFirstSeen(cards: readonly VerifiedCard[]): Promise<VerifiedCard[]> {
    if (cards.length === 0) return [];
    const now = this.cfg.now();
    let raced: VerifiedCard[] = [];
    await this.pins.update((f) => {
      raced = [];
      for (const card of cards) {
        if (f.contacts.has(card.identity)) {
          raced.push(card);
          continue;
        }
        f.contacts.set(card.identity, { chain: [{ cardId: card.id, signingKey: card.signingKey, how: PinSource.FirstUse, at: now }], verified: false });
      }
    });
    return raced;
  }

  /** @internal Checks card, the directory's active card of a contact, against the pin. */
  async trustActive(card: VerifiedCard, policy: KeyChangePolicy, signal?: AbortSignal): Promise<VerifiedCard> {
    let pin = this.pins.contact(card.identity);
    if (pin && sameBytes(head(pin).cardId, card.id)) {
      if (pin.pending) {
        // The directory serves the pinned card again: a pending change lasts only while
        // the new card is what the directory serves.
        await this.pins.update((f) => {
          const p = f.contacts.get(card.identity);
          if (p && sameBytes(head(p).cardId, card.id)) p.pending = undefined;
        });
      }
      return card;
    }
    await this.pins.load(); // another tab or process may have pinned or accepted since
    pin = this.pins.contact(card.identity);
    const now = this.cfg.now();
    if (!pin) {
      await this.pins.update((f) => {
        if (!f.contacts.has(card.identity)) {
          f.contacts.set(card.identity, { chain: [{ cardId: card.id, signingKey: card.signingKey, how: PinSource.FirstUse, at: now }], verified: false });
        }
      });
      return card;
    }
    if (sameBytes(head(pin).cardId, card.id)) return card;
    let links: VerifiedCard[] = [];
    let reason: KeyChangeReason | "" = "rollback";
    let why: unknown;
    if (!holds(pin, card.id)) {
      ({ links, reason, why } = await this.#chainForward(head(pin), card, signal));
    }
    if (reason !== "") {
      await this.#keyChanged(pin, card, reason, why, policy);
      return card; // under "warn", for a contact not verified, the new card is now pinned
    }
    await this.#pinLinks(card.identity, head(pin).cardId, links);
    return { ...card, endorsed: true };
  }

  async #pinLinks(identity: string, headId: Uint8Array, links: readonly VerifiedCard[]): Promise<void> {
    const now = this.cfg.now();
    await this.pins.update((f) => {
      const p = f.contacts.get(identity);
      if (!p || !sameBytes(head(p).cardId, headId)) {
        throw new Error(`umbra: the pin of ${identity} changed while its new card was checked; try again`);
      }
      for (const l of links) push(p, { cardId: l.id, signingKey: l.signingKey, how: PinSource.Endorsed, at: now });
      p.pending = undefined;
    });
  }

  /**
   * Walks from card back along previous_card_id, through the identity's history, to the
   * pinned head, checking every link (§5.4). It returns the cards after the head up to
   * card, oldest first; or the reason the walk failed and what failed.
   */
  async #chainForward(pinned: PinnedCardEntry, card: VerifiedCard, signal?: AbortSignal): Promise<{ links: VerifiedCard[]; reason: KeyChangeReason | ""; why?: unknown }> {
    if (!card.previousCardId) return { links: [], reason: "reset" };
    const history = await this.cardHistory(card.identity, signal);
    const byId = new Map(history.map((h) => [hexId(h.id), h]));
    // The head as pinned: its key is the one this client trusts, whatever the history says.
    const headCard = { id: pinned.cardId, identity: card.identity, signingKey: pinned.signingKey } as Card;
    const seen = new Set<string>();
    const links: VerifiedCard[] = [];
    let cur = card;
    for (let i = 0; i < maxChainLinks; i++) {
      if (!cur.previousCardId) return { links: [], reason: "reset" };
      if (seen.has(hexId(cur.id))) return { links: [], reason: "does not chain", why: new Error("the cards' previous_card_id form a loop") };
      seen.add(hexId(cur.id));
      if (!cur.endorsement) return { links: [], reason: "not endorsed" };
      const prevRecord = byId.get(hexId(cur.previousCardId));
      let prev: Card;
      const toHead = sameBytes(cur.previousCardId, pinned.cardId);
      if (toHead) prev = headCard;
      else if (prevRecord) prev = prevRecord;
      else {
        return {
          links: [],
          reason: "does not chain",
          why: new Error(`card ${cur.fingerprint} names a previous card ${fingerprint(cur.previousCardId)} that its identity's history does not hold`),
        };
      }
      try {
        verifyEndorsement(prev, cur, cur.endorsement.content, cur.endorsement.signature);
      } catch (e) {
        return { links: [], reason: "bad endorsement", why: e };
      }
      if (prevRecord?.revokedAt && cur.publishedAt.getTime() > prevRecord.revokedAt.getTime()) {
        return {
          links: [],
          reason: "does not chain",
          why: new Error(`card ${prevRecord.fingerprint} was revoked at ${prevRecord.revokedAt.toISOString()}, before its successor ${cur.fingerprint} was published`),
        };
      }
      links.push(cur);
      if (toHead) return { links: links.reverse(), reason: "" };
      cur = prevRecord!;
    }
    return { links: [], reason: "does not chain", why: new Error(`no chain to the pinned card within ${maxChainLinks} links`) };
  }

  /** Reports a key change: records it as pending (or, under "warn" for a contact not verified, pins card) and tells the app. */
  async #keyChanged(pin: ContactPinEntry, card: VerifiedCard, reason: KeyChangeReason, why: unknown, policy: KeyChangePolicy): Promise<void> {
    const old = head(pin);
    const kc = new KeyChangedError(card.identity, old.cardId, card.id, reason, pin.verified, why);
    this.cfg.onKeyChange?.(kc);
    this.dispatchEvent(new CustomEvent("keychange", { detail: kc }));
    const now = this.cfg.now();
    const warn = policy === "warn" && !pin.verified;
    await this.pins.update((f) => {
      const p = f.contacts.get(card.identity);
      if (!p) return;
      if (warn) {
        push(p, { cardId: card.id, signingKey: card.signingKey, how: PinSource.Warned, at: now });
        p.pending = undefined;
        return;
      }
      p.pending = { cardId: card.id, signingKey: card.signingKey, reason, detail: why instanceof Error ? why.message : undefined, at: now };
    });
    if (!warn) throw kc;
  }

  /**
   * @internal Checks card, the card that signed a message, commit or statement of its
   * identity, against the pin (§5.4, "Senders"). The user's own cards that the keystore
   * holds are trusted.
   */
  async trustSender(card: VerifiedCard, signal?: AbortSignal): Promise<void> {
    if (this.ks && this.ks.identity === card.identity && this.ks.keyFor(card.id)) return;
    let pin = this.pins.contact(card.identity);
    if (pin && holds(pin, card.id)) return;
    await this.pins.load();
    pin = this.pins.contact(card.identity);
    if (pin && holds(pin, card.id)) return;
    if (!pin) {
      // A contact met first through something they signed: pin their card as the log
      // proves it, then check this card against that pin: it is that card, an older one
      // the pinned card chains back to, the card the log shows revoked last, or a card
      // whose own publication the log proves (its log_index).
      const p = (await provedCards(this, [card.identity], false, signal)).get(card.identity)!;
      if (!p.card) {
        if (await this.#trustRevokedSender(p, card, signal)) return;
        await proveLogged(this, card, signal);
        return;
      }
      await this.trustActive(p.card, this.cfg.keyChangePolicy, signal);
      pin = this.pins.contact(card.identity);
      if (!pin) throw new Error(`umbra: the pin of ${card.identity} vanished while its card was checked; try again`);
      if (holds(pin, card.id)) return;
      if (await this.#chainsTo(pin.chain[0]!, card, signal)) return;
      await proveLogged(this, card, signal);
      return;
    }
    const { links, reason, why } = await this.#chainForward(head(pin), card, signal);
    if (reason === "") {
      await this.#pinLinks(card.identity, head(pin).cardId, links);
      return;
    }
    if (await this.#chainsTo(pin.chain[0]!, card, signal)) return;
    let policy = this.cfg.keyChangePolicy;
    if (policy === "warn") {
      // "warn" pins the new card: only the one the log proves current.
      const p = (await provedCards(this, [card.identity], false, signal)).get(card.identity)!;
      if (!p.card || !sameBytes(p.card.id, card.id)) policy = "refuse";
    }
    await this.#keyChanged(pin, card, reason, why, policy);
  }

  /**
   * Checks card, which signed something of a contact this client has no pin for and who
   * has no card now (p, proved by the log: the contact's latest event revoked its last
   * card). The card must be that revoked card, or an older one from which it chains by
   * endorsements this client verifies: a card the log shows the contact had. Otherwise
   * it is not proved.
   */
  async #trustRevokedSender(p: ProvedCard, card: VerifiedCard, signal?: AbortSignal): Promise<boolean> {
    if (!p.value || !p.leaf) {
      throw unproved(card.identity, `the signer's card ${card.fingerprint} is not in the log: ${card.identity} has never had a card event there`);
    }
    const last = p.leaf.cardId;
    if (sameBytes(last, card.id)) return true;
    for (const h of await this.cardHistory(card.identity, signal)) {
      if (sameBytes(h.id, last) && (await this.#chainsTo({ cardId: h.id, signingKey: h.signingKey, how: "", at: new Date(0) }, card, signal))) return true;
    }
    return false;
  }

  /** Reports whether the first pinned card chains back, by verified endorsements, to card: an older card. */
  async #chainsTo(first: PinnedCardEntry, card: VerifiedCard, signal?: AbortSignal): Promise<boolean> {
    const history = await this.cardHistory(card.identity, signal);
    const byId = new Map(history.map((h) => [hexId(h.id), h]));
    let cur = byId.get(hexId(first.cardId));
    if (!cur || !sameBytes(first.signingKey, cur.signingKey)) return false;
    for (let i = 0; i < maxChainLinks; i++) {
      if (!cur.endorsement || !cur.previousCardId) return false;
      const prev: VerifiedCard | undefined = byId.get(hexId(cur.previousCardId));
      if (!prev) return false;
      try {
        verifyEndorsement(prev, cur, cur.endorsement.content, cur.endorsement.signature);
      } catch {
        return false;
      }
      if (sameBytes(prev.id, card.id)) return true;
      cur = prev;
    }
    return false;
  }

  /**
   * Checks identity's active card against the pins (recording a key change as pending,
   * whatever the policy) and returns what this client trusts of the contact, with the
   * safety numbers.
   */
  async contact(identity: string, signal?: AbortSignal): Promise<ContactTrust> {
    const { kp, cardId: myCard } = this.current();
    const me = await this.identity(signal);
    if (identity === me) throw new Error(`umbra: ${identity} is this user: a safety number is between two people`);
    const found = await this.findCards([identity], signal);
    const card = found.get(identity);
    if (card) {
      try {
        await this.trustActive(card, "refuse", signal);
      } catch (e) {
        if (!hasKind(e, UmbraErrorKind.KeyChanged)) throw e;
      }
    }
    const pin = this.pins.contact(identity);
    if (!pin) throw umbraError(UmbraErrorKind.NoCard, `${identity} has no active card, and this client has never pinned one`);
    const mine = kp.signingPublicKey;
    return {
      identity,
      myCardId: myCard,
      chain: pin.chain.map((c) => ({ cardId: c.cardId, signingKey: c.signingKey, fingerprint: fingerprint(c.cardId), how: c.how, at: c.at })),
      safetyNumber: safetyNumber(me, mine, identity, head(pin).signingKey),
      verified: pin.verified,
      verifiedAt: pin.verifiedAt,
      pending: pin.pending && {
        cardId: pin.pending.cardId,
        signingKey: pin.pending.signingKey,
        fingerprint: fingerprint(pin.pending.cardId),
        reason: pin.pending.reason,
        detail: pin.pending.detail,
        at: pin.pending.at,
        safetyNumber: safetyNumber(me, mine, identity, pin.pending.signingKey),
      },
    };
  }

  /** The safety number of the user and identity (contact). */
  async safetyNumber(identity: string, signal?: AbortSignal): Promise<string> {
    return (await this.contact(identity, signal)).safetyNumber;
  }

  /**
   * Accepts identity's new key after the user compared safety numbers: the directory's
   * active card, which must still be the pending one, becomes the pinned card, and the
   * contact is no longer verified. Returns what changed, or throws NoKeyChange.
   */
  async acceptKeyChange(identity: string, signal?: AbortSignal): Promise<KeyChangedError> {
    const ct = await this.contact(identity, signal);
    if (!ct.pending) throw umbraError(UmbraErrorKind.NoKeyChange, `${identity}'s active card is the one this client pinned`);
    const card = (await this.findCards([identity], signal)).get(identity);
    if (!card) throw umbraError(UmbraErrorKind.NoCard, identity);
    if (!sameBytes(card.id, ct.pending.cardId)) {
      throw umbraError(UmbraErrorKind.KeyChanged, `${identity}'s key changed again (now ${card.fingerprint}, not ${ct.pending.fingerprint}): compare the safety number again`);
    }
    const last = ct.chain[ct.chain.length - 1]!;
    const changed = new KeyChangedError(identity, last.cardId, card.id, ct.pending.reason, ct.verified);
    const now = this.cfg.now();
    await this.pins.update((f) => {
      const p = f.contacts.get(identity);
      if (!p || !p.pending || !sameBytes(p.pending.cardId, card.id)) {
        throw umbraError(UmbraErrorKind.KeyChanged, `the pending key change of ${identity} changed meanwhile; look again`);
      }
      push(p, { cardId: card.id, signingKey: card.signingKey, how: PinSource.Accepted, at: now });
      p.pending = undefined;
      p.verified = false;
      p.verifiedAt = undefined;
    });
    return changed;
  }

  /**
   * Marks identity verified after the user compared the safety number out of band. If
   * safetyNumber is given it must be the safety number (spaces do not matter). From then
   * on any key change of the contact is refused whatever the policy.
   */
  async verifyContact(identity: string, safetyNumberSeen = "", signal?: AbortSignal): Promise<void> {
    const ct = await this.contact(identity, signal);
    if (ct.pending) {
      throw umbraError(UmbraErrorKind.KeyChanged, `${identity} has a pending key change (${ct.pending.reason}): accept it first, after comparing the new safety number`);
    }
    const strip = (s: string) => s.replace(/\s+/g, "");
    if (safetyNumberSeen !== "" && strip(safetyNumberSeen) !== strip(ct.safetyNumber)) {
      throw new Error(`umbra: the safety number given is not the safety number with ${identity} (${ct.safetyNumber}): do not mark the contact verified`);
    }
    const headId = ct.chain[ct.chain.length - 1]!.cardId;
    const now = this.cfg.now();
    await this.pins.update((f) => {
      const p = f.contacts.get(identity);
      if (!p || !sameBytes(head(p).cardId, headId) || p.pending) {
        throw umbraError(UmbraErrorKind.KeyChanged, `${identity}'s pinned card changed meanwhile; look again`);
      }
      p.verified = true;
      p.verifiedAt = now;
    });
  }

  // ---- envelopes ----

  /**
   * Encrypts and signs data for the active cards of recipients (identities), and for
   * the user's own card unless excludeSelf. Every recipient must have an active card this
   * client trusts (trustedCards): a contact's key change is a KeyChangedError under
   * "refuse".
   */
  async encrypt(data: Uint8Array, recipients: readonly string[], signal?: AbortSignal): Promise<Uint8Array> {
    const { ks, kp, cardId: myId } = this.current();
    const me = ks.identity;
    const want = [...new Set(this.cfg.excludeSelf ? recipients : [...recipients, me])].sort();
    if (want.length === 0) throw new Error("umbra: no recipients");
    const found = await this.trustedCards(want, signal);
    const cards: Card[] = [];
    for (const id of want) {
      const card = found.get(id);
      if (!card) throw umbraError(UmbraErrorKind.NoCard, id);
      if (id === me && !sameBytes(card.id, myId)) throw notActiveHere(me);
      cards.push(card);
    }
    return encryptEnvelope(kp, myId, cards, data, { now: this.cfg.now() });
  }

  /**
   * Opens data, which sender (an identity) is expected to have sent: the signature is
   * checked against the sender's card the message names, which must be a card of
   * sender, active when the message says it was written, and trusted by the pins.
   * Messages to the user's older cards decrypt with the superseded keys kept.
   */
  async decrypt(data: Uint8Array, sender: string, signal?: AbortSignal): Promise<Uint8Array> {
    const { ks } = this.current();
    const info = inspectEnvelope(data);
    const card = await this.senderCard(info.senderCardId, sender, unixDate(info.createdAtUnixSeconds), signal);
    return decryptEnvelope(data, ks.keyFor, card);
  }

  // ---- messaging (messaging.ts) ----

  /** Encrypts data for peer and sends it in their direct conversation (sendTo in messaging.ts). */
  sendTo(peer: string, data: Uint8Array, signal?: AbortSignal): Promise<SendResponse> {
    return messaging.sendTo(this, peer, data, signal);
  }

  /** Sends a prepared message with retries; idempotent on its client message id. */
  send(req: MessageInitShape<typeof SendRequestSchema>, signal?: AbortSignal): Promise<SendResponse> {
    return messaging.send(this, req, signal);
  }

  /** One page of a conversation's messages (presence of afterSequence matters). */
  history(req: MessageInitShape<typeof HistoryRequestSchema>, signal?: AbortSignal): Promise<HistoryResponse> {
    return messaging.history(this, req, signal);
  }

  /** The inbox as an async iterable that resumes by itself from its cursor. */
  inbox(opts: messaging.SubscribeOptions = {}): AsyncGenerator<SubscribeResponse, void, undefined> {
    return messaging.inbox(this, opts);
  }

  /** Delivers every inbox item to handle until the signal aborts or handle throws. */
  subscribe(opts: messaging.SubscribeOptions, handle: (item: SubscribeResponse) => void | Promise<void>): Promise<void> {
    return messaging.subscribe(this, opts, handle);
  }

  /** Opens a message: decrypted and checked against its sender, or as it is if PLAINTEXT. */
  openMessage(m: Message, signal?: AbortSignal): Promise<Uint8Array> {
    return messaging.openMessage(this, m, signal);
  }

  /** @internal Updates the client's state from an inbox item (group events). */
  observeItem(item: SubscribeResponse): void {
    observeGroupEvent(this, item);
  }

  // ---- groups (groups.ts) ----

  /** @internal What this client knows of its groups. */
  readonly groups = new GroupStates();

  /** A handle on groupId, asking the server nothing. */
  group(groupId: string): Group {
    return new Group(this, groupId);
  }

  /** Creates groupId (a group identity the app resolved) with the user as its owner. */
  async createGroup(groupId: string, opts: CreateGroupOptions = {}, signal?: AbortSignal): Promise<Group> {
    const g = new Group(this, groupId);
    await g.create(opts, signal);
    return g;
  }

  /** The groups the user is a member of, without their members. */
  myGroups(signal?: AbortSignal): Promise<GroupInfo[]> {
    return allPages(async (pageToken) => {
      const r = await this.transport.unary(GroupService.method.listMyGroups, { pageToken }, { signal });
      return [r.groups, r.nextPageToken];
    });
  }

  /** Asks to join groupId; an admin or the owner approves or declines. */
  async requestJoin(groupId: string, signal?: AbortSignal): Promise<JoinRequest | undefined> {
    return (await this.transport.unary(GroupService.method.requestJoin, { groupId }, { signal })).joinRequest;
  }

  /**
   * Accepts the user's pending invitation to groupId, after verifying the group's chain:
   * the invitation accepted is the pending one the chain holds.
   */
  async acceptInvitation(groupId: string, signal?: AbortSignal): Promise<Group> {
    const g = new Group(this, groupId);
    await g.acceptInvitation(signal);
    return g;
  }

  /** Declines the user's pending invitation to groupId. */
  async declineInvitation(groupId: string, signal?: AbortSignal): Promise<void> {
    await this.transport.unary(GroupService.method.declineInvitation, { groupId }, { signal });
  }

  /** The user's pending invitations, newest first. */
  invitations(signal?: AbortSignal): Promise<Invitation[]> {
    return allPages(async (pageToken) => {
      const r = await this.transport.unary(GroupService.method.listMyInvitations, { pageToken }, { signal });
      return [r.invitations, r.nextPageToken];
    });
  }

  /** @internal Opens an ENCRYPTED message of a group conversation. */
  openGroupMessage(m: Message, signal?: AbortSignal): Promise<Uint8Array> {
    return openGroupConversationMessage(this, m, signal);
  }

  // ---- key backup (backup.ts) ----

  /** The user's stored backups, one per slot that holds one. */
  backups(signal?: AbortSignal): Promise<BackupInfo[]> {
    return backup.backups(this, signal);
  }

  /**
   * Backs up every key of the keystore under password (OPRF with the backup service,
   * Argon2id at t=3, 64 MiB, p=4). A backup already stored is replaced only after the
   * password is proved against it and only if this device holds every key it holds.
   */
  backupPrivateKey(password: backup.Secret, signal?: AbortSignal): Promise<BackupInfo> {
    return backup.backupPrivateKey(this, password, signal);
  }

  /** Restores every key of the password backup into an empty keystore. A wrong password is a WrongPasswordError. */
  restorePrivateKey(password: backup.Secret, signal?: AbortSignal): Promise<void> {
    return backup.restorePrivateKey(this, password, signal);
  }

  /** Restores from a recovery key (createRecoveryKey's text). */
  restoreFromRecoveryKey(recoveryKey: string, signal?: AbortSignal): Promise<void> {
    return backup.restoreFromRecoveryKey(this, recoveryKey, signal);
  }

  /** Re-encrypts the password backup under a new password. */
  changePassword(oldPassword: backup.Secret, newPassword: backup.Secret, signal?: AbortSignal): Promise<BackupInfo> {
    return backup.changePassword(this, oldPassword, newPassword, signal);
  }

  /** Deletes the password backup (a forgotten password); the recovery backup stays. */
  resetBackup(signal?: AbortSignal): Promise<void> {
    return backup.deleteSlot(this, BackupSlot.Password, signal);
  }

  /** Deletes the recovery backup: the recovery key no longer restores. */
  deleteRecoveryKey(signal?: AbortSignal): Promise<void> {
    return backup.deleteSlot(this, BackupSlot.Recovery, signal);
  }

  /** Makes a recovery key, backs every key up under it, and returns it for the user to write down. */
  createRecoveryKey(signal?: AbortSignal): Promise<string> {
    return backup.createRecoveryKey(this, signal);
  }

  /**
   * @internal Reports CardNotValidThen unless card was its identity's active card at
   * written, within the clock skew (§6.3).
   */
  checkCardLifetime(card: VerifiedCard, written: Date): void {
    const skew = this.cfg.clockSkewMs;
    const t = written.getTime();
    if (t < card.publishedAt.getTime() - skew) {
      throw umbraError(UmbraErrorKind.CardNotValidThen, `written ${written.toISOString()}, before the card was published`);
    }
    if (card.supersededAt && t > card.supersededAt.getTime() + skew) {
      throw umbraError(UmbraErrorKind.CardNotValidThen, `written ${written.toISOString()}, after the card was superseded at ${card.supersededAt.toISOString()}`);
    }
    if (card.revokedAt && t > card.revokedAt.getTime() + skew) {
      throw umbraError(UmbraErrorKind.CardNotValidThen, `written ${written.toISOString()}, after the card was revoked at ${card.revokedAt.toISOString()}`);
    }
  }

  /**
   * @internal The card cardId that signed something sender is expected to have written
   * at written: one of sender's cards, active then, and trusted by the pins.
   */
  async senderCard(id: Uint8Array, sender: string, written: Date, signal?: AbortSignal): Promise<VerifiedCard> {
    let card: VerifiedCard;
    try {
      card = await this.cardById(id, signal);
    } catch (e) {
      if (hasCode(e, Code.NOT_FOUND)) throw umbraError(UmbraErrorKind.UntrustedCard, `the sender's card ${fingerprint(id)} is not in the directory`, e);
      throw e;
    }
    if (card.identity !== sender) {
      throw e2eeError(E2eeErrorKind.WrongSender, `the message is signed by a card of ${card.identity}, not ${sender}`);
    }
    this.checkCardLifetime(card, written);
    await this.trustSender(card, signal);
    return card;
  }
}

/** A time in Unix seconds as a Date. */
export function unixDate(s: bigint): Date {
  return new Date(Number(s) * 1000);
}

/** Says that this device's keys are not the user's active card. */
export function notActiveHere(me: string): Error {
  return new Error(`umbra: this device's keys are not ${me}'s active card (another device rotated them?): restore the keys from a backup`);
}

/** A card id as a map key. */
export function hexId(id: Uint8Array): string {
  let s = "";
  for (const b of id) s += b.toString(16).padStart(2, "0");
  return s;
}

/** Explains a refused publication of a card without an endorsement. */
function publishError(err: unknown, me: string): unknown {
  if (hasCode(err, Code.ALREADY_EXISTS)) {
    return umbraError(
      UmbraErrorKind.AlreadyRegistered,
      `${me} has an active card; rotate it with its keys (rotateKeys), restore them from a backup, or reset them (resetKeys) if every key is lost`,
      err,
    );
  }
  if (hasCode(err, Code.PERMISSION_DENIED) && err.rawMessage.includes("reset grant is required")) {
    return umbraError(UmbraErrorKind.ResetGrantRequired, `${me} published cards before; a new one is a reset (resetKeys)`, err);
  }
  return err;
}

/**
 * Pins the keys the service lists that chain to f's pinned keys, or, when f pins none,
 * all of them (trust on first use). It changes f only if every key it lists is well
 * formed and every statement it checks verifies.
 */
export function pinServiceKeys(f: PinFile, keys: readonly ServiceKey[], now: Date): void {
  const listed = new Map<string, ServiceKey>();
  for (const key of keys) {
    if (key.algorithm !== "Ed25519") {
      throw umbraError(UmbraErrorKind.UntrustedCard, `the card service's key ${JSON.stringify(key.keyId)} is of algorithm ${JSON.stringify(key.algorithm)}, not Ed25519`);
    }
    try {
      checkSigningPublicKey(key.publicKey);
    } catch (e) {
      throw umbraError(UmbraErrorKind.UntrustedCard, `the card service's key ${JSON.stringify(key.keyId)}: ${e instanceof Error ? e.message : String(e)}`, e);
    }
    const have = serviceKeyOf(f, key.keyId);
    if (have && !sameBytes(have.publicKey, key.publicKey)) {
      throw umbraError(UmbraErrorKind.UnknownServiceKey, `the card service lists key ${JSON.stringify(key.keyId)} with another public key than the one pinned`);
    }
    listed.set(key.keyId, key);
  }
  const rotation = (key: ServiceKey, known: (id: string) => Uint8Array | undefined): ServiceKeyRotation | undefined => {
    const st = key.rotation;
    if (!st) return undefined;
    let parsed: ServiceKeyRotation;
    try {
      parsed = parseServiceKeyRotation(st.content);
    } catch (e) {
      throw umbraError(UmbraErrorKind.UnknownServiceKey, `the rotation to service key ${JSON.stringify(key.keyId)}: ${e instanceof Error ? e.message : String(e)}`, e);
    }
    const prev = known(parsed.previousKeyId);
    if (!prev) return undefined;
    let r: ServiceKeyRotation;
    try {
      r = verifyServiceKeyRotation(parsed.previousKeyId, prev, st.content, st.signature);
    } catch (e) {
      throw umbraError(UmbraErrorKind.UnknownServiceKey, `the rotation to service key ${JSON.stringify(key.keyId)}: ${e instanceof Error ? e.message : String(e)}`, e);
    }
    if (r.newKeyId !== key.keyId || !sameBytes(r.newPublicKey, key.publicKey)) {
      throw umbraError(
        UmbraErrorKind.UnknownServiceKey,
        `the rotation statement listed with service key ${JSON.stringify(key.keyId)} names key ${JSON.stringify(r.newKeyId)} with another public key`,
      );
    }
    return r;
  };
  // A statement's time is in whole seconds, the service's own timestamps finer: a key
  // retired in the second after the one its successor's statement names.
  const statementEnd = (r: ServiceKeyRotation) => new Date(Number(r.createdAtUnixSeconds + 1n) * 1000);
  const retire = (k: PinnedServiceKey | undefined, at: Date | undefined) => {
    if (k && !k.retiredAt && at) k.retiredAt = at;
  };
  if (f.serviceKeys.length === 0) {
    const fromList = (id: string) => listed.get(id)?.publicKey;
    const retiredAt = new Map<string, Date>();
    const pinned: PinnedServiceKey[] = [];
    for (const key of keys) {
      const r = rotation(key, fromList);
      if (r) retiredAt.set(r.previousKeyId, statementEnd(r));
      pinned.push({ keyId: key.keyId, publicKey: key.publicKey.slice(), source: PinSource.FirstUse, pinnedAt: now });
    }
    pinned.forEach((k, i) => {
      retire(k, retiredAt.get(k.keyId));
      retire(k, toDate(keys[i]!.supersededAt));
    });
    f.serviceKeys = pinned;
    return;
  }
  const fromPins = (id: string) => serviceKeyOf(f, id)?.publicKey;
  for (let progress = true; progress; ) {
    progress = false;
    for (const key of keys) {
      if (serviceKeyOf(f, key.keyId)) continue;
      const r = rotation(key, fromPins);
      if (!r) continue;
      retire(serviceKeyOf(f, r.previousKeyId), statementEnd(r));
      f.serviceKeys.push({ keyId: key.keyId, publicKey: key.publicKey.slice(), source: PinSource.Endorsed, pinnedAt: now });
      progress = true;
    }
  }
  // A pinned key the service now says it retired: its word can only make the client refuse more.
  for (const k of f.serviceKeys) {
    const key = listed.get(k.keyId);
    if (key?.supersededAt) retire(k, toDate(key.supersededAt));
  }
}

