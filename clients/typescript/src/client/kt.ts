// Key transparency in the client (docs/key-transparency.md, "Clients"; pkg/sdk's
// kt.go): every card lookup goes through SearchCardsWithProofs, and each answer is
// verified against a checkpoint signed by a log key this client trusts and consistent
// with the last checkpoint it kept (in the key transparency state, beside the keystore
// and the pins). Errors are UmbraErrors of the kinds UnprovedCard, LogInconsistent,
// UnknownLogKey and NotYetInLog, whose cause is src/kt's KtError when a check failed,
// so hasKind finds both.

import { equalBytes } from "../bytes.js";
import { CardService, CardStatus } from "../gen/umbra/card/v1/card_pb.js";
import type { LogLeaf, LookupProof, MapValue } from "../gen/umbra/kt/v1/kt_pb.js";
import { openCheckpoint as openSignedCheckpoint, type Checkpoint, type SignedCheckpoint } from "../kt/checkpoint.js";
import { KtErrorKind, isKtError } from "../kt/errors.js";
import { verifyConsistency } from "../kt/log.js";
import { verifyCardPublication, verifyLookup } from "../kt/lookup.js";
import { parseNote, parseVerifierKey } from "../kt/note.js";
import { ForkError, NotWitnessedError } from "../kt/cosignature.js";
import { Code, hasCode } from "../transport/errors.js";
import { sleep } from "../transport/rest.js";
import type { UmbraClient, VerifiedCard } from "./client.js";
import { LogInconsistentError, UmbraErrorKind, fingerprint, umbraError } from "./errors.js";
import { keptCheckpoint } from "./ktstate.js";
import { PinSource } from "./pins.js";
import { checkWitnesses } from "./witness.js";

/**
 * DefaultKeyTransparencyWaitMs is how long a lookup waits, by default, for a
 * checkpoint that holds a card published after the latest one: a few times the card
 * service's default checkpoint interval (1 s).
 */
export const DefaultKeyTransparencyWaitMs = 5000;
/** How often a lookup that waits for a newer checkpoint asks for one. */
const checkpointPollMs = 100;
/** The most identities one SearchCardsWithProofs looks up. */
export const MaxLookupBatch = 1000;

/**
 * ProvedCard is one identity's lookup, verified against a checkpoint: the identity's map
 * entry, the log entry behind it, and the card it names.
 */
export interface ProvedCard {
  readonly identity: string;
  /**
   * The card the map names, verified (content, signatures) and with the id the map
   * commits to; undefined when the identity has no card at the checkpoint.
   */
  readonly card: VerifiedCard | undefined;
  /** The identity's map entry; undefined when it has none (no card event ever). */
  readonly value: MapValue | undefined;
  /**
   * The log entry proved, entry leafIndex: the publication of card, or the revocation
   * that left the identity without one; undefined when value is.
   */
  readonly leaf: LogLeaf | undefined;
  readonly leafIndex: bigint;
  /** The lookup proof as served; undefined for the user's own card taken from the keystore (findCards). */
  readonly proof: LookupProof | undefined;
  readonly checkpoint: SignedCheckpoint;
}

function message(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}

/** Checks configured log keys: each a signed-note verifier key. */
export function checkLogKeys(keys: readonly string[]): void {
  for (const k of keys) {
    try {
      parseVerifierKey(k);
    } catch (e) {
      throw new Error(`umbra: config.logKeys: ${JSON.stringify(k)} is not a signed-note verifier key (<origin>+<hash>+<key>, as umbra card log-key prints it): ${message(e)}`, { cause: e });
    }
  }
}

/**
 * The log keys this client trusts: the configured ones and the pinned ones; with
 * neither, it pins the key the card service names (trust on first use, like the
 * service keys).
 */
export async function trustedLogKeys(c: UmbraClient, signal?: AbortSignal): Promise<string[]> {
  const keys = [...new Set(c.cfg.logKeys ?? [])];
  const add = (list: readonly { verifierKey: string }[]) => {
    for (const k of list) if (!keys.includes(k.verifierKey)) keys.push(k.verifierKey);
  };
  add((await c.ktState.read()).logKeys);
  if (keys.length > 0) return keys;
  const resp = await c.transport.unary(CardService.method.getLogKey, {}, { auth: "none", signal });
  let ok = false;
  try {
    ok = parseVerifierKey(resp.verifierKey).name === resp.origin;
  } catch {
    // refused below
  }
  if (!ok) {
    throw umbraError(
      UmbraErrorKind.UnknownLogKey,
      `the card service names log key ${JSON.stringify(resp.verifierKey)} (origin ${JSON.stringify(resp.origin)}), which is not a verifier key of that origin`,
    );
  }
  const now = c.cfg.now();
  await c.ktState.update((s) => {
    if (s.logKeys.length > 0) return false;
    s.logKeys.push({ verifierKey: resp.verifierKey, source: PinSource.FirstUse, pinnedAt: now });
    return true;
  });
  add((await c.ktState.read()).logKeys);
  return keys;
}

/** Verifies a signed checkpoint with the trusted log keys (keys). */
async function openCheckpoint(keys: readonly string[], signed: Uint8Array): Promise<SignedCheckpoint> {
  try {
    return await openSignedCheckpoint(signed, ...keys);
  } catch (e) {
    if (isKtError(e, KtErrorKind.UnknownLogKey)) {
      throw umbraError(UmbraErrorKind.UnknownLogKey, `this client trusts ${keys.join(", ")}: ${e.message}`, e);
    }
    if (isKtError(e)) throw umbraError(UmbraErrorKind.UnprovedCard, `the checkpoint: ${e.message}`, e);
    throw e;
  }
}

/**
 * acceptCheckpoint verifies a signed checkpoint from the server: its signature by a
 * trusted log key, and its consistency with the checkpoint this client kept (one
 * GetConsistencyProof when the sizes differ). A newer checkpoint is kept in its place;
 * an older one that is consistent is returned with the size of the kept one (behind),
 * and not kept (the client never goes back).
 */
export async function acceptCheckpoint(c: UmbraClient, signed: Uint8Array, signal?: AbortSignal): Promise<{ cp: SignedCheckpoint; behind: bigint | undefined }> {
  const keys = await trustedLogKeys(c, signal);
  let cp = await openCheckpoint(keys, signed);
  if (c.witnessPolicy) {
    signed = await witnessed(c, keys, cp, signal);
    cp = { ...cp, signed };
  }
  const served = new TextDecoder().decode(signed);
  for (let attempt = 0; attempt < 5; attempt++) {
    const st = await c.ktState.read();
    const kept = keptCheckpoint(st);
    if (kept) {
      try {
        await checkConsistent(c, kept, cp, signal);
      } catch (e) {
        if (!isKtError(e, KtErrorKind.Inconsistent) && !isKtError(e, KtErrorKind.Malformed)) throw e;
        throw new LogInconsistentError(new TextEncoder().encode(st.checkpoint), signed.slice(), e);
      }
      if (cp.size <= kept.size) return { cp, behind: cp.size < kept.size ? kept.size : undefined };
    }
    // Keep it, unless another client on the same storage kept another meanwhile: then
    // check against that one too.
    let saved = false;
    await c.ktState.update((s) => {
      if (s.checkpoint !== st.checkpoint) return false;
      s.checkpoint = served;
      saved = true;
      return true;
    });
    if (saved) return { cp, behind: undefined };
  }
  throw new Error("umbra: the kept key transparency checkpoint kept changing under this client (other clients on the same storage); try again");
}

/**
 * witnessed applies the client's witness policy (config.witnesses, witnessQuorum) to a
 * checkpoint verified against the trusted log keys (keys), and returns it with the
 * cosignatures that passed: the kept checkpoint when it has the same body and already
 * passes (the witnesses cosigned it before), else what the witnesses answer
 * (checkWitnesses). A witness's evidence of a split view is a LogInconsistentError
 * whose kept checkpoint is the witness's and whose cause is the ForkError; too few
 * cosignatures, a NotWitnessedError.
 */
async function witnessed(c: UmbraClient, keys: readonly string[], cp: SignedCheckpoint, signal?: AbortSignal): Promise<Uint8Array> {
  const policy = c.witnessPolicy!;
  const kept = await c.ktState.read();
  if (kept.checkpoint !== "") {
    const keptBytes = new TextEncoder().encode(kept.checkpoint);
    try {
      if (parseNote(keptBytes).text === parseNote(cp.signed).text) {
        await policy.check(keptBytes, c.cfg.now());
        return keptBytes;
      }
    } catch {
      // ask the witnesses
    }
  }
  try {
    return await checkWitnesses(c.cfg.fetch ?? fetch, c.cfg.witnesses!, policy, keys, cp, c.cfg.now(), signal);
  } catch (e) {
    if (isKtError(e, KtErrorKind.Inconsistent) && e instanceof ForkError) throw new LogInconsistentError(e.held, e.conflicting, e);
    throw e;
  }
}

/**
 * checkConsistent checks that a and b are views of one append-only log, fetching the
 * consistency proof from the smaller to the larger. A call for the proof that fails is
 * thrown as it is: not yet a proof of a fork (it may have failed on its way), but
 * nothing is used until the server proves consistency.
 */
async function checkConsistent(c: UmbraClient, a: Checkpoint, b: Checkpoint, signal?: AbortSignal): Promise<void> {
  const [older, newer] = b.size < a.size ? [b, a] : [a, b];
  let proof: Uint8Array[] = [];
  if (older.size > 0n && older.size < newer.size && older.origin === newer.origin) {
    proof = (await c.transport.unary(CardService.method.getConsistencyProof, { fromSize: older.size, toSize: newer.size }, { auth: "none", signal })).proof;
  }
  verifyConsistency(older, newer, proof);
}

/** The app the user belongs to, which map keys name: kept in the state after the first WhoAmI. */
export async function appId(c: UmbraClient, signal?: AbortSignal): Promise<string> {
  if (c.appId !== "") return c.appId;
  const st = await c.ktState.read();
  let app = st.appId;
  if (app === "") {
    app = (await c.whoAmI(signal)).appId;
    await c.ktState.update((s) => {
      if (s.appId !== "") return false;
      s.appId = app;
      return true;
    });
  }
  c.appId = app;
  return app;
}

/** An UnprovedCard error about identity. */
export function unproved(identity: string, msg: string, cause?: unknown): Error {
  return umbraError(UmbraErrorKind.UnprovedCard, `${identity}: ${msg}`, cause);
}

/** How many times a lookup answered at a checkpoint older than the kept one is asked again. */
const behindRetries = 3;

/**
 * proveBatch looks up identities (at most 1,000, each once) with proofs, and verifies
 * every answer against the checkpoint they come with (acceptCheckpoint). An answer at
 * a checkpoint older than the one this client kept (which another tab or process on
 * the same storage may have kept a moment ago) is asked again a few times, then
 * refused: a map older than one this client saw can hide a newer card.
 */
export async function proveBatch(c: UmbraClient, identities: readonly string[], signal?: AbortSignal): Promise<{ cp: SignedCheckpoint; results: ProvedCard[] }> {
  let resp;
  let cp: SignedCheckpoint;
  const witnessDeadline = Date.now() + (c.cfg.keyTransparencyWaitMs ?? DefaultKeyTransparencyWaitMs);
  for (let attempt = 0, witnessAttempt = 0; ; attempt++) {
    try {
      resp = await c.transport.unary(CardService.method.searchCardsWithProofs, { identities: [...identities] }, { signal });
    } catch (e) {
      if (hasCode(e, Code.UNIMPLEMENTED)) {
        throw umbraError(UmbraErrorKind.UnprovedCard, `the server does not serve key transparency (SearchCardsWithProofs): ${message(e)}`, e);
      }
      throw e;
    }
    let accepted;
    try {
      accepted = await acceptCheckpoint(c, resp.checkpoint, signal);
    } catch (e) {
      // The witnesses lag (they poll the log every second; one may be restarting) or
      // moved past this checkpoint before it reached them: look up again, at the
      // latest checkpoint, until the key transparency wait runs out.
      if (!(e instanceof NotWitnessedError) || Date.now() >= witnessDeadline) throw e;
      await sleep(Math.min(checkpointPollMs * 2 ** witnessAttempt++, 1000, Math.max(0, witnessDeadline - Date.now())), signal);
      attempt--;
      continue;
    }
    cp = accepted.cp;
    if (accepted.behind === undefined) break;
    if (attempt >= behindRetries) {
      throw umbraError(
        UmbraErrorKind.UnprovedCard,
        `the lookup is at a checkpoint of ${cp.size} entries, older than the one of ${accepted.behind} entries this client kept: an older map can hide a newer card`,
      );
    }
    await sleep(checkpointPollMs * 2 ** attempt, signal);
  }
  const app = await appId(c, signal);
  if (resp.results.length !== identities.length) {
    throw umbraError(UmbraErrorKind.UnprovedCard, `${resp.results.length} answers to a lookup of ${identities.length} identities`);
  }
  // The proofs first, then the service keys of the cards (a key not yet pinned is
  // fetched and pinned once), then the cards' signatures, all at once.
  const checked = identities.map((id, i) => {
    const r = resp.results[i]!;
    if (!r.proof) throw unproved(id, "the answer carries no proof");
    let lk;
    try {
      lk = verifyLookup(cp, app, id, r.proof);
    } catch (e) {
      if (!isKtError(e)) throw e;
      throw unproved(id, e.message, e);
    }
    const want = lk.cardId;
    if (!want && r.card) throw unproved(id, `a card (${fingerprint(r.card.cardId)}) served where the map names none`);
    if (want && !r.card) throw unproved(id, `the map names card ${fingerprint(want)}, and no card was served`);
    if (want && !equalBytes(r.card!.cardId, want)) {
      throw unproved(id, `the card served, ${fingerprint(r.card!.cardId)}, is not the one the map names, ${fingerprint(want)}`);
    }
    return { id, r, lk };
  });
  for (const kid of new Set(checked.filter((x) => x.r.card).map((x) => x.r.card!.serviceKeyId))) await c.serviceKeyFor(kid, signal);
  const cards = await Promise.all(checked.map((x) => (x.r.card ? c.verify(x.r.card, signal) : undefined)));
  const results = checked.map(({ id, r, lk }, i): ProvedCard => {
    const card = cards[i];
    if (card && card.identity !== id) throw unproved(id, `the map's card ${card.fingerprint} is a card of ${card.identity}`);
    return { identity: id, card, value: lk.value, leaf: lk.leaf, leafIndex: r.proof!.leafIndex, proof: r.proof, checkpoint: cp };
  });
  return { cp, results };
}

/**
 * provedCards looks identities up with proofs, in batches of 1,000 (one
 * SearchCardsWithProofs each), and waits for a newer checkpoint, up to
 * config.keyTransparencyWaitMs, when an answer is older than the directory: the map's
 * card has been superseded or revoked since the checkpoint, or the map names none and
 * the directory has an active card (asked with one SearchCards for those only); then
 * the whole batch is looked up again, so that its answers share one checkpoint. With ownShortcut, the user's own current card, while the log has not caught
 * up with it, is this device's own (it holds its key) and is taken as it is.
 */
export async function provedCards(c: UmbraClient, identities: readonly string[], ownShortcut: boolean, signal?: AbortSignal): Promise<Map<string, ProvedCard>> {
  let ids = [...new Set(identities)].sort();
  let me = "";
  let myId: Uint8Array | undefined;
  const cur = c.ks?.current();
  if (ownShortcut && c.ks && cur) {
    me = c.ks.identity;
    myId = cur.cardId;
  }
  const wait = c.cfg.keyTransparencyWaitMs ?? DefaultKeyTransparencyWaitMs;
  const out = new Map<string, ProvedCard>();
  while (ids.length > 0) {
    const batch = ids.slice(0, MaxLookupBatch);
    ids = ids.slice(batch.length);
    const deadline = Date.now() + wait;
    for (;;) {
      // The whole batch each time, so that its answers share one checkpoint.
      const { cp, results } = await proveBatch(c, batch, signal);
      let stale: string[] = [];
      const none: string[] = [];
      for (const p of results) {
        out.set(p.identity, p);
        if (p.card && p.card.status !== CardStatus.ACTIVE) stale.push(p.identity);
        else if (!p.card) none.push(p.identity);
      }
      if (none.length > 0) {
        const resp = await c.transport.unary(CardService.method.searchCards, { identities: none }, { signal });
        for (const pc of resp.cards) {
          if (none.includes(pc.identity) && !stale.includes(pc.identity)) stale.push(pc.identity);
        }
      }
      if (me !== "" && stale.includes(me)) {
        const own = await ownCard(c, myId!, signal);
        if (own) {
          out.set(me, { identity: me, card: own, value: undefined, leaf: undefined, leafIndex: 0n, proof: undefined, checkpoint: cp });
          stale = stale.filter((id) => id !== me);
        }
      }
      if (stale.length === 0) break;
      if (Date.now() >= deadline) {
        throw umbraError(
          UmbraErrorKind.NotYetInLog,
          `the directory has a newer card of ${stale.join(", ")} than the log's checkpoint of ${cp.size} entries holds, ${wait} ms later; the card service may be behind (its checkpoints come every second by default)`,
        );
      }
      await waitForCheckpoint(c, cp.size, deadline, signal);
    }
  }
  return out;
}

/**
 * ownCard returns this device's current card, id myId, if the directory serves it as
 * active: the device made its content (the id is its hash) and holds its keys, so it
 * needs no proof of it; the log holds it from the next checkpoint, which the device's
 * own monitoring checks. Undefined when the directory does not serve it as active.
 */
async function ownCard(c: UmbraClient, myId: Uint8Array, signal?: AbortSignal): Promise<VerifiedCard | undefined> {
  let card: VerifiedCard;
  try {
    card = await c.cardById(myId, signal);
  } catch (e) {
    if (hasCode(e, Code.NOT_FOUND)) return undefined;
    throw e;
  }
  return card.status === CardStatus.ACTIVE ? card : undefined;
}

/** waitForCheckpoint waits until the service has a checkpoint larger than size, or the deadline. */
export async function waitForCheckpoint(c: UmbraClient, size: bigint, deadline: number, signal?: AbortSignal): Promise<void> {
  while (Date.now() < deadline) {
    await sleep(Math.min(checkpointPollMs, Math.max(0, deadline - Date.now())), signal);
    const resp = await c.transport.unary(CardService.method.getCheckpoint, {}, { auth: "none", signal });
    if (resp.size > size) return;
  }
}

/** The checkpoint this client kept (the largest it verified), or undefined before its first lookup. */
export async function keptSignedCheckpoint(c: UmbraClient): Promise<{ checkpoint: Checkpoint; signed: Uint8Array } | undefined> {
  const st = await c.ktState.read();
  const cp = keptCheckpoint(st);
  return cp && { checkpoint: cp, signed: new TextEncoder().encode(st.checkpoint) };
}

/**
 * proveLogged checks that the log holds the publication of card for its identity:
 * entry card.logIndex (docs/wire-format.md 13.9), with its inclusion proof in the kept
 * checkpoint, or in a newer one (accepted as any: signed, consistent, witnessed) waited
 * for up to config.keyTransparencyWaitMs when the entry is past the kept one. A card
 * the log does not show so is UnprovedCard; one past every checkpoint in time,
 * NotYetInLog. pkg/sdk's proveLogged.
 */
export async function proveLogged(c: UmbraClient, card: VerifiedCard, signal?: AbortSignal): Promise<void> {
  const wait = c.cfg.keyTransparencyWaitMs ?? DefaultKeyTransparencyWaitMs;
  const deadline = Date.now() + wait;
  let cp = keptCheckpoint(await c.ktState.read());
  while (!cp || card.logIndex >= cp.size) {
    const resp = await c.transport.unary(CardService.method.getCheckpoint, {}, { auth: "none", signal });
    try {
      await acceptCheckpoint(c, resp.checkpoint, signal);
    } catch (e) {
      // Witnesses that lag are waited for, as in proveBatch.
      if (!(e instanceof NotWitnessedError) || Date.now() >= deadline) throw e;
      await sleep(Math.min(checkpointPollMs * 2, Math.max(0, deadline - Date.now())), signal);
      continue;
    }
    cp = keptCheckpoint(await c.ktState.read());
    if (cp && card.logIndex < cp.size) break;
    if (Date.now() >= deadline) {
      throw umbraError(
        UmbraErrorKind.NotYetInLog,
        `card ${card.fingerprint} of ${card.identity} names log entry ${card.logIndex}, and the log has ${cp?.size ?? 0n} entries ${wait} ms later`,
      );
    }
    await waitForCheckpoint(c, cp?.size ?? 0n, deadline, signal);
  }
  const resp = await c.transport.unary(CardService.method.getInclusionProof, { index: card.logIndex, treeSize: cp.size }, { auth: "none", signal });
  try {
    verifyCardPublication(cp, await appId(c, signal), card.identity, card.id, card.logIndex, resp.leaf, resp.proof);
  } catch (e) {
    if (!isKtError(e)) throw e;
    throw unproved(card.identity, `card ${card.fingerprint}: log entry ${card.logIndex}: ${e.message}: the log does not show the card`, e);
  }
}
