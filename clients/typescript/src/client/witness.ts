// Witnesses the client requires (docs/key-transparency.md, "Clients require
// witnesses"; pkg/sdk's witness.go): with config.witnesses set, every checkpoint a
// lookup is proved against must carry valid cosignatures (C2SP tlog-cosignature/v1)
// of config.witnessQuorum of them. The client submits each new checkpoint to every
// witness at once (POST <url>/checkpoint: a witness cosigns it if it is consistent with
// what it cosigned before, and answers with the cosigned checkpoint), merges the
// cosignatures they return, and applies the policy. A witness that answers with
// another checkpoint of the same size, signed by the log key and cosigned by it, has
// caught a split view.

import { MaxCheckpointSize, openCheckpoint, sameCheckpoint, type SignedCheckpoint } from "../kt/checkpoint.js";
import { ForkError, NotWitnessedError, WitnessPolicy, mergeCosignatures, verifyCosignature, type WitnessKey } from "../kt/cosignature.js";
import { KtError, KtErrorKind } from "../kt/errors.js";
import { parseNote } from "../kt/note.js";

/** WitnessConfig is a witness whose cosignatures a client requires (`umbra witness`). */
export interface WitnessConfig {
  /**
   * The witness's verifier key, as `umbra witness keygen` prints it:
   * "<name>+<key ID>+<base64 key>". It is what the client trusts: the witness may be
   * reached over plain HTTP, since a cosignature authenticates itself.
   */
  readonly key: string;
  /** The witness's HTTP API, "http://127.0.0.1:8091" for example. */
  readonly url: string;
}

/** WitnessTimeoutMs bounds each witness's answer. */
export const WitnessTimeoutMs = 10_000;

/** parseWitness parses "<verifier key>@<URL>", the form the Go CLI's --witness takes. */
export function parseWitness(s: string): WitnessConfig {
  const plus = s.lastIndexOf("+");
  const at = plus < 0 ? -1 : s.indexOf("@", plus);
  if (at < 0) throw new Error(`umbra: witness ${JSON.stringify(s)} is not <verifier key>@<URL>`);
  const w = { key: s.slice(0, at), url: s.slice(at + 1) };
  witnessPolicy([w], 1);
  return w;
}

/**
 * witnessPolicy checks the configured witnesses and returns their policy (quorum 0 or
 * undefined: all of them); it throws an Error naming what is wrong.
 */
export function witnessPolicy(witnesses: readonly WitnessConfig[], quorum: number | undefined): WitnessPolicy {
  for (const w of witnesses) {
    if (!/^https?:\/\//.test(w.url)) throw new Error(`umbra: config.witnesses: witness URL ${JSON.stringify(w.url)} is not http:// or https://`);
  }
  try {
    return new WitnessPolicy(quorum || witnesses.length, witnesses.map((w) => w.key));
  } catch (e) {
    throw new Error(`umbra: config.witnesses: ${e instanceof Error ? e.message : String(e)}`, { cause: e });
  }
}

interface Answer {
  readonly status?: number;
  readonly body?: Uint8Array;
  readonly err?: Error;
}

async function askWitness(fetchFn: typeof fetch, w: WitnessConfig, checkpoint: Uint8Array, signal?: AbortSignal): Promise<Answer> {
  const ctl = new AbortController();
  const timer = setTimeout(() => ctl.abort(new Error(`no answer in ${WitnessTimeoutMs / 1000} s`)), WitnessTimeoutMs);
  const onAbort = () => ctl.abort(signal!.reason);
  signal?.addEventListener("abort", onAbort, { once: true });
  try {
    const res = await fetchFn(w.url.replace(/\/$/, "") + "/checkpoint", {
      method: "POST",
      headers: { "Content-Type": "text/plain; charset=utf-8" },
      body: checkpoint as BufferSource,
      signal: ctl.signal,
    });
    const body = new Uint8Array(await res.arrayBuffer());
    if (body.length > MaxCheckpointSize) return { err: new Error("an answer over the size of a checkpoint") };
    return { status: res.status, body };
  } catch (e) {
    if (signal?.aborted) throw e;
    return { err: e instanceof Error ? e : new Error(String(e)) };
  } finally {
    clearTimeout(timer);
    signal?.removeEventListener("abort", onAbort);
  }
}

/**
 * forkEvidence returns the fork a witness's answer proves, if it does: a checkpoint of
 * the same log and size as ours, with another body, signed by a trusted log key and
 * cosigned by the witness. Anything less proves nothing and is not a fork.
 */
async function forkEvidence(ours: SignedCheckpoint, answer: Uint8Array, w: WitnessKey, logKeys: readonly string[]): Promise<ForkError | undefined> {
  let theirs: SignedCheckpoint;
  try {
    theirs = await openCheckpoint(answer, ...logKeys);
    if (theirs.size !== ours.size || theirs.origin !== ours.origin || sameCheckpoint(theirs, ours)) return undefined;
    await verifyCosignature(answer, w);
  } catch {
    return undefined;
  }
  return new ForkError(
    ours.origin,
    answer.slice(),
    ours.signed,
    theirs.size,
    ours.size,
    `have the same size and different roots: witness ${w.name} cosigned the first, this client was shown the second (a split view)`,
  );
}

/**
 * What a witness's answer says about its key when it carries no cosignature line of
 * the configured one but lines of other keys than the log's: the witness at this URL
 * is another one (or the configured key is wrong).
 */
function otherSigners(body: Uint8Array, w: WitnessKey, origin: string): string {
  try {
    const lines = parseNote(body).lines;
    if (lines.some((l) => l.name === w.name && l.hash === w.hash)) return "";
    const names = lines.filter((l) => l.name !== origin).map((l) => `${l.name}+${l.hash.toString(16).padStart(8, "0")}`);
    return names.length > 0 ? ` with cosignatures of ${names.join(", ")} only: the witness at this URL is not the configured one` : "";
  } catch {
    return "";
  }
}

/**
 * checkWitnesses applies policy to checkpoint (verified against the trusted log keys):
 * it submits the checkpoint to every witness at once, gathers their cosignatures and
 * checks them. It returns the checkpoint with the cosignatures gathered, or throws a
 * ForkError (a witness holds another checkpoint of the same log and size, signed by
 * the log key and cosigned by it: both are the evidence) or a NotWitnessedError (fewer
 * than the quorum of valid cosignatures came back, with why for each witness).
 * sdk.CheckWitnesses.
 */
export async function checkWitnesses(
  fetchFn: typeof fetch,
  witnesses: readonly WitnessConfig[],
  policy: WitnessPolicy,
  logKeys: readonly string[],
  checkpoint: SignedCheckpoint,
  now: Date,
  signal?: AbortSignal,
): Promise<Uint8Array> {
  const answers = await Promise.all(witnesses.map((w) => askWitness(fetchFn, w, checkpoint.signed, signal)));
  const notes: Uint8Array[] = [];
  const problems = new Map<string, string>();
  for (let i = 0; i < answers.length; i++) {
    const a = answers[i]!;
    const w = policy.witnesses[i]!;
    if (a.err) {
      problems.set(w.name, `${witnesses[i]!.url}: ${a.err.message}`);
      continue;
    }
    if (a.status === 200 || a.status === 409) {
      const fork = await forkEvidence(checkpoint, a.body!, w, logKeys);
      if (fork) throw fork;
      if (a.status === 200) {
        notes.push(a.body!);
        const other = otherSigners(a.body!, w, checkpoint.origin);
        if (other) problems.set(w.name, `answered${other}`);
      } else {
        problems.set(w.name, "answered 409 without valid evidence of a fork");
      }
      continue;
    }
    problems.set(w.name, `answered ${a.status}: ${new TextDecoder().decode(a.body!).trim()}`);
  }
  let merged: Uint8Array;
  try {
    merged = mergeCosignatures(checkpoint.signed, ...notes.filter((n) => isNote(n))).merged;
  } catch (e) {
    throw new NotWitnessedError(policy.quorum, [], new Map([["(merge)", e as Error]]));
  }
  try {
    await policy.check(merged, now);
  } catch (e) {
    if (!(e instanceof NotWitnessedError) || problems.size === 0) throw e;
    // Say what each witness answered, besides why its cosignature did not count.
    const missing = new Map<string, Error>();
    for (const [name, err] of e.missing) {
      const p = problems.get(name);
      if (!p) {
        missing.set(name, err);
        continue;
      }
      const kind = err instanceof KtError ? err.kind : KtErrorKind.NotWitnessed;
      const text = err.message.startsWith(`${kind}: `) ? err.message.slice(kind.length + 2) : err.message;
      missing.set(name, new KtError(kind, `${text}; ${p}`, { cause: err }));
    }
    throw new NotWitnessedError(e.quorum, e.valid, missing);
  }
  return merged;
}

function isNote(b: Uint8Array): boolean {
  try {
    parseNote(b);
    return true;
  } catch {
    return false;
  }
}
