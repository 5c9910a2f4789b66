// Monitoring (docs/key-transparency.md, "Monitoring"; pkg/sdk's monitor.go): a user's
// own device looks its identity up in the log, with proofs, and checks that what the map
// shows is what the user did. Every contact's client accepts whatever card the log
// proves, so the owner's devices are the ones that can tell a card they never
// published.

import { equalBytes } from "../bytes.js";
import { verifyEndorsement } from "../card.js";
import { CardService, CardStatus } from "../gen/umbra/card/v1/card_pb.js";
import { LogEventKind, type LogLeaf } from "../gen/umbra/kt/v1/kt_pb.js";
import type { SignedCheckpoint } from "../kt/checkpoint.js";
import { isKtError } from "../kt/errors.js";
import { parseLeaf } from "../kt/formats.js";
import { verifyInclusion } from "../kt/log.js";
import { mapKey } from "../kt/map.js";
import type { Keystore } from "../keystore.js";
import { Code, hasCode } from "../transport/errors.js";
import type { UmbraClient, VerifiedCard } from "./client.js";
import { UmbraError, UmbraErrorKind, fingerprint, hasKind } from "./errors.js";
import { appId, proveBatch, unproved, waitForCheckpoint, DefaultKeyTransparencyWaitMs, type ProvedCard } from "./kt.js";
import type { KtState, OwnEntry } from "./ktstate.js";

/** What monitoring found: the reasons of an UnexpectedCardError, pkg/sdk's AlertReason strings. */
export const AlertReason = {
  /**
   * The map's current card for the user is not one this device holds the key of, nor
   * one endorsed, link by link, from one it holds (another device of the user
   * rotating). Someone published a card for the user.
   */
  ForeignCard: "a card this device did not publish",
  /** The card this device saw current before was published again (a new log entry made it active): something replaced it in between. */
  Republished: "this device's card published again",
  /** The user's latest log entry revokes a card this device never published nor saw endorsed: a card was published for the user, then withdrawn. */
  ForeignRevocation: "a revocation of a card this device did not publish",
  /** This device's current card was revoked, not by this device. */
  RevokedElsewhere: "this device's card revoked elsewhere",
  /**
   * The map does not show this device's latest card, or its revocation, within
   * config.keyTransparencyWaitMs, or its entry went back: the map hides a newer event
   * (or the card service is far behind).
   */
  Hidden: "the map hides this device's latest card event",
} as const;

export type AlertReason = (typeof AlertReason)[keyof typeof AlertReason];

/** The Event.type the client dispatches for each key transparency alert. */
export const KeyTransparencyAlertEvent = "keytransparencyalert";

/**
 * UnexpectedCardError is a monitoring alert: the key transparency log shows, for the
 * user's identity, a card event this device did not make. Its kind is UnexpectedCard.
 */
export class UnexpectedCardError extends UmbraError {
  readonly identity: string;
  /** The card the event is about. */
  readonly cardId: Uint8Array;
  /** The log entry that shows it. */
  readonly logIndex: bigint;
  /** That entry's kind, when the client read it (UNSPECIFIED otherwise). */
  readonly eventKind: LogEventKind;
  readonly reason: AlertReason;
  /** The checkpoint the log showed it at. */
  readonly checkpoint: SignedCheckpoint | undefined;

  constructor(identity: string, reason: AlertReason, cardId: Uint8Array, logIndex: bigint, eventKind: LogEventKind, checkpoint: SignedCheckpoint | undefined) {
    const kind = eventKind !== LogEventKind.UNSPECIFIED ? ` (LOG_EVENT_KIND_${LogEventKind[eventKind]})` : "";
    super(
      UmbraErrorKind.UnexpectedCard,
      `key transparency alert for ${identity}: ${reason}: card ${fingerprint(cardId)}, log entry ${logIndex}${kind}, in the checkpoint of ${checkpoint?.size ?? 0n} entries`,
    );
    this.name = "UnexpectedCardError";
    this.identity = identity;
    this.cardId = cardId;
    this.logIndex = logIndex;
    this.eventKind = eventKind;
    this.reason = reason;
    this.checkpoint = checkpoint;
  }
}

/** MonitorReport is what one monitoring check saw. */
export interface MonitorReport {
  /** The user's own lookup, proved. */
  readonly lookup: ProvedCard;
  /** What it found; empty when the log shows only what this user did. */
  readonly alerts: readonly UnexpectedCardError[];
}

/** Whether err is something the log showed, rather than a failure to reach it. */
export function isTransparencyAlert(err: unknown): boolean {
  return [UmbraErrorKind.UnexpectedCard, UmbraErrorKind.LogInconsistent, UmbraErrorKind.UnprovedCard, UmbraErrorKind.UnknownLogKey].some((k) => hasKind(err, k));
}

/** Reports an alert to config.onKeyTransparencyAlert and as a "keytransparencyalert" event. */
export function raiseAlert(c: UmbraClient, alert: Error): void {
  c.cfg.onKeyTransparencyAlert?.(alert);
  c.dispatchEvent(new CustomEvent(KeyTransparencyAlertEvent, { detail: alert }));
}

/**
 * monitor checks the user's own identity in the key transparency log, once (pkg/sdk's
 * Client.Monitor): its lookup is proved like any other (and its checkpoint checked
 * against the one this client kept), then the map's current card must be this device's
 * current card, or a card endorsed from one whose key it holds; the card this device saw
 * before must not have been published again; the latest log entry, if it is a
 * revocation, must be of one of the user's cards, and not of this device's current card
 * unless this device revoked it. Each finding is an UnexpectedCardError, raised as an
 * alert and returned in the report. A map that does not yet show this device's latest
 * card is waited for, up to config.keyTransparencyWaitMs, and is then a Hidden alert;
 * so is, for as long, a checkpoint older than what the directory serves (a card
 * published or revoked a moment ago), so that the check judges the newest state.
 * A check of the log that fails (LogInconsistent, UnprovedCard, UnknownLogKey) is
 * raised as an alert and thrown. It needs the user's keys.
 */
export async function monitor(c: UmbraClient, signal?: AbortSignal): Promise<MonitorReport> {
  let report: MonitorReport;
  try {
    report = await check(c, signal);
  } catch (e) {
    if (isTransparencyAlert(e) && e instanceof Error) raiseAlert(c, e);
    throw e;
  }
  for (const a of report.alerts) raiseAlert(c, a);
  return report;
}

async function check(c: UmbraClient, signal?: AbortSignal): Promise<MonitorReport> {
  const { ks, cardId: myId } = c.current();
  const me = ks.identity;
  const deadline = Date.now() + (c.cfg.keyTransparencyWaitMs ?? DefaultKeyTransparencyWaitMs);
  for (;;) {
    const { cp, results } = await proveBatch(c, [me], signal);
    const st = await c.ktState.read();
    const p = results[0]!;
    const { alerts, hidden } = await judgeOwn(c, ks, myId, p, st, signal);
    // The directory has something newer than the checkpoint (the map's card superseded
    // or revoked since, or a card where the map has none): judge the checkpoint that
    // holds it, if one comes in time. The directory's word only makes the check wait.
    if ((hidden || (await newerInDirectory(c, p, signal))) && Date.now() < deadline) {
      await waitForCheckpoint(c, cp.size, deadline, signal);
      continue;
    }
    if (hidden) alerts.push(hidden);
    const own: OwnEntry = {
      present: p.value !== undefined,
      cardId: p.value && p.value.cardId.length > 0 ? p.value.cardId : undefined,
      cardLogIndex: p.value?.cardLogIndex ?? 0n,
      latestLogIndex: p.value?.latestLogIndex ?? 0n,
      checkpointSize: cp.size,
      checkedAt: c.cfg.now(),
    };
    // Each event is reported once: the next check compares with this one.
    await c.ktState.update((s) => {
      if (s.own && s.own.checkpointSize > own.checkpointSize) return false;
      s.own = own;
      return true;
    });
    return { lookup: p, alerts };
  }
}

/** newerInDirectory reports whether the directory has a newer state of p's identity than p's checkpoint. */
async function newerInDirectory(c: UmbraClient, p: ProvedCard, signal?: AbortSignal): Promise<boolean> {
  if (p.card) return p.card.status !== CardStatus.ACTIVE;
  const resp = await c.transport.unary(CardService.method.searchCards, { identities: [p.identity] }, { signal });
  return resp.cards.some((pc) => pc.identity === p.identity);
}

type Alert = (reason: AlertReason, card: Uint8Array, index: bigint, kind: LogEventKind) => UnexpectedCardError;

function revokedHere(st: KtState, id: Uint8Array): boolean {
  return st.revokedHere.some((r) => equalBytes(r, id));
}

/**
 * judgeOwn checks the user's own proved lookup p against what this device knows: its
 * keystore (ks, current card myId) and the state (what the last check saw, the cards it
 * revoked). hidden is set when the map does not yet show this device's latest card
 * event: the caller waits for a newer checkpoint before reporting it.
 */
async function judgeOwn(
  c: UmbraClient,
  ks: Keystore,
  myId: Uint8Array,
  p: ProvedCard,
  st: KtState,
  signal?: AbortSignal,
): Promise<{ alerts: UnexpectedCardError[]; hidden: UnexpectedCardError | undefined }> {
  const me = ks.identity;
  const alert: Alert = (reason, card, index, kind) => new UnexpectedCardError(me, reason, card, index, kind, p.checkpoint);
  const held = (id: Uint8Array) => ks.keyFor(id) !== undefined;
  const prev = st.own;
  const v = p.value;
  const alerts: UnexpectedCardError[] = [];
  let hidden: UnexpectedCardError | undefined;
  if (!v) {
    if (prev?.present) {
      // Map entries are never removed.
      return { alerts: [alert(AlertReason.Hidden, prev.cardId ?? new Uint8Array(0), prev.latestLogIndex, LogEventKind.UNSPECIFIED)], hidden: undefined };
    }
    // This device's card is not in the log yet (or is kept out of it).
    return { alerts: [], hidden: alert(AlertReason.Hidden, myId, 0n, LogEventKind.UNSPECIFIED) };
  }
  if (prev?.present && v.latestLogIndex < prev.latestLogIndex) {
    alerts.push(alert(AlertReason.Hidden, prev.cardId ?? new Uint8Array(0), prev.latestLogIndex, LogEventKind.UNSPECIFIED));
  }
  const newEvent = !prev || !prev.present || prev.latestLogIndex !== v.latestLogIndex;
  const leafKind = p.leaf?.kind ?? LogEventKind.UNSPECIFIED;
  if (v.cardId.length > 0) {
    if (held(v.cardId)) {
      if (!equalBytes(v.cardId, myId) || revokedHere(st, v.cardId)) {
        // An older card of this device, or one it revoked: the map does not show its
        // latest event.
        hidden = alert(AlertReason.Hidden, v.cardId, v.cardLogIndex, leafKind);
      }
    } else if (!(await chainsToHeld(c, p.card!, held, signal))) {
      alerts.push(alert(AlertReason.ForeignCard, v.cardId, v.cardLogIndex, leafKind));
    }
    if (prev?.cardId && equalBytes(prev.cardId, v.cardId) && prev.cardLogIndex !== v.cardLogIndex) {
      alerts.push(alert(AlertReason.Republished, v.cardId, v.cardLogIndex, leafKind));
    }
    if (v.latestLogIndex !== v.cardLogIndex && newEvent) {
      // The latest event revoked another card of the identity: read it.
      const leaf = await provedEntry(c, p.checkpoint, v.latestLogIndex, me, signal);
      const a = await judgeRevocation(c, leaf, v.latestLogIndex, myId, st, held, alert, signal);
      if (a) alerts.push(a);
    }
    return { alerts, hidden };
  }
  // No card: the latest event (p.leaf) revoked the last one.
  const revoked = p.leaf!.cardId;
  if (newEvent) {
    const a = await judgeRevocation(c, p.leaf!, p.leafIndex, myId, st, held, alert, signal);
    if (a) alerts.push(a);
  }
  if (!revokedHere(st, myId) && !equalBytes(revoked, myId)) {
    // This device's current card should be the map's.
    hidden = alert(AlertReason.Hidden, revoked, p.leafIndex, leafKind);
  }
  return { alerts, hidden };
}

/**
 * judgeRevocation checks a revocation of the user's (leaf, entry index): of a card of
 * the user's (held here or endorsed from one held here), and of this device's current
 * card only if this device revoked it.
 */
async function judgeRevocation(
  c: UmbraClient,
  leaf: LogLeaf,
  index: bigint,
  myId: Uint8Array,
  st: KtState,
  held: (id: Uint8Array) => boolean,
  alert: Alert,
  signal?: AbortSignal,
): Promise<UnexpectedCardError | undefined> {
  const revoked = leaf.cardId;
  if (equalBytes(revoked, myId) && !revokedHere(st, myId)) return alert(AlertReason.RevokedElsewhere, revoked, index, leaf.kind);
  if (held(revoked)) return undefined;
  let card: VerifiedCard;
  try {
    card = await c.cardById(revoked, signal);
  } catch (e) {
    if (hasCode(e, Code.NOT_FOUND)) return alert(AlertReason.ForeignRevocation, revoked, index, leaf.kind);
    throw e;
  }
  if (await chainsToHeld(c, card, held, signal)) return undefined;
  return alert(AlertReason.ForeignRevocation, revoked, index, leaf.kind);
}

/** The longest chain of endorsements walked back to a held card. */
const maxChainLinks = 1000;

/** chainsToHeld reports whether card is endorsed, link by link, from a card whose key the keystore holds: a rotation by another device of the user. */
async function chainsToHeld(c: UmbraClient, card: VerifiedCard, held: (id: Uint8Array) => boolean, signal?: AbortSignal): Promise<boolean> {
  let cur = card;
  for (let i = 0; i < maxChainLinks; i++) {
    if (held(cur.id)) return true;
    if (!cur.previousCardId || cur.previousCardId.length === 0 || !cur.endorsement) return false;
    let prev: VerifiedCard;
    try {
      prev = await c.cardById(cur.previousCardId, signal);
    } catch (e) {
      if (hasCode(e, Code.NOT_FOUND)) return false;
      throw e;
    }
    try {
      if (prev.identity !== card.identity) return false;
      verifyEndorsement(prev, cur, cur.endorsement.content, cur.endorsement.signature);
    } catch {
      return false;
    }
    cur = prev;
  }
  return false;
}

/** provedEntry fetches log entry index with its inclusion proof in cp's log, checks it, and checks that it is a revocation of identity's. */
async function provedEntry(c: UmbraClient, cp: SignedCheckpoint, index: bigint, identity: string, signal?: AbortSignal): Promise<LogLeaf> {
  const resp = await c.transport.unary(CardService.method.getInclusionProof, { index, treeSize: cp.size }, { auth: "none", signal });
  let leaf: LogLeaf;
  try {
    verifyInclusion(cp, index, resp.leaf, resp.proof);
    leaf = parseLeaf(resp.leaf);
  } catch (e) {
    if (!isKtError(e)) throw e;
    throw unproved(identity, `log entry ${index}: ${e.message}`, e);
  }
  if (!equalBytes(leaf.mapKey, mapKey(await appId(c, signal), identity))) {
    throw unproved(identity, `log entry ${index}, which the map names as its latest, is about another map key`);
  }
  if (leaf.kind !== LogEventKind.REVOCATION) {
    throw unproved(identity, `log entry ${index}, which the map names as its latest after its card's, is a LOG_EVENT_KIND_${LogEventKind[leaf.kind]}, not a revocation`);
  }
  return leaf;
}
