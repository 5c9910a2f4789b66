// Envelopes and messaging end to end against umbra dev: encrypt to users with the
// sender check, send with idempotent ids and retries after a lost answer, a
// subscription that resumes by itself after its stream is cut, history, presence.

import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { hasKind, UmbraErrorKind } from "../src/client/errors.js";
import { newClientMessageId } from "../src/client/messaging.js";
import { E2eeErrorKind } from "../src/errors.js";
import { MessageKind, type SubscribeResponse } from "../src/gen/umbra/messaging/v1/messaging_pb.js";
import { registeredUser, uniqueName } from "./support/clients.js";
import { DevServer } from "./support/devserver.js";

const text = (s: string) => new TextEncoder().encode(s);
const str = (b: Uint8Array) => new TextDecoder().decode(b);

/** Collects inbox messages until n have arrived (or the timeout). */
async function collect(items: AsyncGenerator<SubscribeResponse>, n: number, ms = 15_000): Promise<SubscribeResponse[]> {
  const out: SubscribeResponse[] = [];
  const timer = setTimeout(() => void items.return(undefined), ms);
  for await (const it of items) {
    if (it.item.case === "message") out.push(it);
    if (out.length >= n) break;
  }
  clearTimeout(timer);
  return out;
}

describe("envelopes and messaging against umbra dev", () => {
  let dev: DevServer;
  before(async () => {
    dev = await DevServer.start();
  });
  after(async () => {
    await dev?.stop();
  });

  test("encrypt to users and decrypt with the sender check", async () => {
    const alice = await registeredUser(dev, uniqueName("alice"));
    const bob = await registeredUser(dev, uniqueName("bob"));
    const carol = await registeredUser(dev, uniqueName("carol"));
    const env = await alice.client.encrypt(text("hello bob"), [bob.id]);
    assert.equal(str(await bob.client.decrypt(env, alice.id)), "hello bob");
    assert.equal(str(await alice.client.decrypt(env, alice.id)), "hello bob", "the sender's own card is a recipient");
    const notRecipient = await carol.client.decrypt(env, alice.id).catch((e: unknown) => e);
    assert.ok(hasKind(notRecipient, E2eeErrorKind.NotRecipient), String(notRecipient));
    const wrongSender = await bob.client.decrypt(env, carol.id).catch((e: unknown) => e);
    assert.ok(hasKind(wrongSender, E2eeErrorKind.WrongSender), String(wrongSender));
    // After alice rotates, the old message still verifies (her old card was active then)
    // and bob still reads what was sent to him before he rotated.
    await alice.client.rotateKeys();
    await bob.client.rotateKeys();
    assert.equal(str(await bob.client.decrypt(env, alice.id)), "hello bob");
    const tampered = env.slice();
    tampered[tampered.length - 3] ^= 1;
    const bad = await bob.client.decrypt(tampered, alice.id).catch((e: unknown) => e);
    assert.ok(hasKind(bad, E2eeErrorKind.Decrypt), String(bad));
    const noCard = await alice.client.encrypt(text("x"), ["u_" + "y".repeat(32)]).catch((e: unknown) => e);
    assert.ok(hasKind(noCard, UmbraErrorKind.NoCard), String(noCard));
  });

  test("sendTo, subscribe from the start, open, and history", async () => {
    const alice = await registeredUser(dev, uniqueName("alice"));
    const bob = await registeredUser(dev, uniqueName("bob"));
    const sent = await alice.client.sendTo(bob.id, text("one"));
    await alice.client.sendTo(bob.id, text("two"));
    assert.ok(sent.sequence > 0n);
    const ctl = new AbortController();
    const got = await collect(bob.client.inbox({ fromStart: true, signal: ctl.signal }), 2);
    ctl.abort();
    assert.deepEqual(
      await Promise.all(got.map(async (it) => str(await bob.client.openMessage(it.item.value as never)))),
      ["one", "two"],
    );
    const conv = (got[0]!.item.value as { conversationId: string }).conversationId;
    const page = await bob.client.history({ conversationId: conv, afterSequence: 0n });
    assert.deepEqual(page.messages.map((m) => m.sequence), [1n, 2n], "afterSequence 0 pages forwards from the oldest");
    const back = await bob.client.history({ conversationId: conv, pageSize: 1 });
    assert.deepEqual(back.messages.map((m) => m.sequence), [2n], "without after/before: backwards from the newest");
    // Live (no cursor) replays nothing stored: the first item is a heartbeat, then the new message.
    const live = new AbortController();
    const items = bob.client.inbox({ signal: live.signal });
    const first = await items.next();
    assert.equal(first.value?.item.case, "heartbeat");
    await alice.client.sendTo(bob.id, text("three"));
    const next = await collect(items, 1);
    live.abort();
    assert.equal(str(await bob.client.openMessage(next[0]!.item.value as never)), "three");
  });

  test("a send whose answer is lost is retried with the same id and stored once", async () => {
    const bob = await registeredUser(dev, uniqueName("bob"));
    let drops = 1;
    const alice = await registeredUser(dev, uniqueName("alice"), {
      fetch: async (input, init) => {
        const res = await fetch(input, init);
        if (String(input).includes("/messages") && init?.method === "POST" && drops-- > 0) {
          await res.text();
          throw new TypeError("fetch failed: connection reset");
        }
        return res;
      },
      retry: { initialDelayMs: 5 },
    });
    const resp = await alice.client.sendTo(bob.id, text("once"));
    assert.equal(drops, -1, "the first answer was lost");
    const page = await alice.client.history({ conversationId: resp.conversationId, afterSequence: 0n });
    assert.equal(page.messages.length, 1, "stored once");
    // The same request sent again is the same message.
    const req = {
      conversationId: bob.id,
      clientMessageId: newClientMessageId(),
      header: { kind: MessageKind.PLAINTEXT },
      envelope: text("plain"),
    };
    const a = await alice.client.send(req).catch((e: unknown) => e);
    // Direct conversations may refuse plaintext; either way the second answer equals the first.
    const b = await alice.client.send(req).catch((e: unknown) => e);
    if (a instanceof Error) assert.equal(String(a), String(b));
    else assert.equal((a as { sequence: bigint }).sequence, (b as { sequence: bigint }).sequence);
  });

  test("the subscription resumes after its stream is cut, without a gap or a duplicate", async () => {
    const alice = await registeredUser(dev, uniqueName("alice"));
    let cuts = 0;
    const bob = await registeredUser(dev, uniqueName("bob"), {
      fetch: async (input, init) => {
        const res = await fetch(input, init);
        if (!String(input).includes("/v1/inbox:subscribe") || cuts >= 2) return res;
        cuts++;
        // Pass the lines up to the first message line on, then break the stream as a
        // dropped connection does. The cut is by line, not by chunk: a loaded server may
        // write every waiting message in one chunk.
        const reader = res.body!.getReader();
        const dec = new TextDecoder();
        const enc = new TextEncoder();
        let pending = "";
        const body = new ReadableStream<Uint8Array>({
          // Each pull enqueues at least one whole line (or ends the stream): a pull that
          // enqueued nothing would not be called again.
          async pull(ctl) {
            for (;;) {
              const { value, done } = await reader.read();
              if (done) {
                if (pending) ctl.enqueue(enc.encode(pending));
                return ctl.close();
              }
              pending += dec.decode(value, { stream: true });
              let sent = false;
              for (let nl = pending.indexOf("\n"); nl >= 0; nl = pending.indexOf("\n")) {
                const line = pending.slice(0, nl + 1);
                pending = pending.slice(nl + 1);
                ctl.enqueue(enc.encode(line));
                sent = true;
                if (line.includes('"message"')) {
                  await reader.cancel();
                  ctl.error(new TypeError("network error: connection reset"));
                  return;
                }
              }
              if (sent) return;
            }
          },
        });
        return new Response(body, { status: res.status, headers: res.headers });
      },
    });
    for (const m of ["a", "b", "c", "d"]) await alice.client.sendTo(bob.id, text(m));
    const ctl = new AbortController();
    const got = await collect(bob.client.inbox({ after: 0n, signal: ctl.signal }), 4);
    ctl.abort();
    assert.equal(cuts, 2, "the stream was cut twice");
    assert.deepEqual(
      await Promise.all(got.map(async (it) => str(await bob.client.openMessage(it.item.value as never)))),
      ["a", "b", "c", "d"],
    );
    const seqs = got.map((it) => it.inboxSequence);
    assert.deepEqual(seqs, [...seqs].sort((x, y) => (x < y ? -1 : 1)));
    assert.equal(new Set(seqs).size, 4);
    // subscribe(): a handler error ends it with that error.
    const err = await bob.client
      .subscribe({ fromStart: true }, (it) => {
        if (it.item.case === "message") throw new Error("stop here");
      })
      .catch((e: unknown) => e);
    assert.equal((err as Error).message, "stop here");
    await assert.rejects(bob.client.subscribe({ after: 5n, fromStart: true }, () => {}), /two different starts/);
  });
});
