// Witnesses the client requires, against a real umbra dev and real `umbra witness`
// processes (built from this tree): lookups accepted once the witness cosigned, and
// the cosigned checkpoint kept; refused when the configured witness key is not the
// witness's, when the quorum is not met, or when the witness is unreachable for the
// whole key transparency wait; accepted when a lagging witness comes up within it; and
// a split view (two servers from one card store, one log key, the same size) caught by
// the witness that cosigned the other branch.

import assert from "node:assert/strict";
import { cp as copyDir, mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { LogInconsistentError, UmbraErrorKind, hasKind } from "../src/client/errors.js";
import { CardService } from "../src/gen/umbra/card/v1/card_pb.js";
import { ForkError, KtErrorKind, NotWitnessedError, openCheckpoint, parseWitnessKey, verifyCosignature, witnessKeyString } from "../src/kt/index.js";
import { signingPublicKey } from "../src/pubkey.js";
import { MemoryStorage, type Storage } from "../src/storage/storage.js";
import { RestTransport } from "../src/transport/rest.js";
import { openUser, registeredUser, uniqueName } from "./support/clients.js";
import { DevServer, Witness, freePort } from "./support/devserver.js";

/** A fetch that counts the POSTs to each witness URL. */
function countingPosts(): { fetch: typeof fetch; posts: Map<string, number> } {
  const posts = new Map<string, number>();
  return {
    posts,
    fetch: async (input, init) => {
      const url = String(input);
      if (init?.method === "POST" && url.endsWith("/checkpoint")) posts.set(url, (posts.get(url) ?? 0) + 1);
      return fetch(input, init);
    },
  };
}

async function logKeyOf(dev: DevServer): Promise<string> {
  return (await new RestTransport({ baseUrl: dev.baseUrl }).unary(CardService.method.getLogKey, {}, { auth: "none" })).verifierKey;
}

/** Waits until the witness cosigned a checkpoint of at least size entries. */
async function cosignedUpTo(w: Witness, size: bigint): Promise<void> {
  for (let i = 0; i < 100; i++) {
    if ((await w.size()) >= size) return;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`the witness did not reach ${size} entries in 10 s`);
}

async function serverSize(dev: DevServer): Promise<bigint> {
  return (await new RestTransport({ baseUrl: dev.baseUrl }).unary(CardService.method.getCheckpoint, {}, { auth: "none" })).size;
}

/** A witness key no witness holds, named name. */
const strangerKey = (name: string) => witnessKeyString(name, signingPublicKey(new Uint8Array(32).fill(0x5a)));

describe("witnesses against umbra dev", () => {
  let dev: DevServer;
  let logKey: string;
  let witness: Witness;
  before(async () => {
    dev = await DevServer.start();
    logKey = await logKeyOf(dev);
    witness = await Witness.start(dev, logKey, "witness.test/ts");
  });
  after(async () => {
    await witness?.stop();
    await dev?.stop();
  });
  // inACheckpoint returns once a checkpoint holds identity's card (a client without
  // witnesses waits for that), so that a test's short key transparency wait is about
  // the witnesses alone, not the card service's checkpoint interval.
  async function inACheckpoint(identity: string): Promise<void> {
    await (await openUser(dev, uniqueName("carol"))).client.findCards([identity]);
  }

  test("a client requiring the witness accepts lookups it cosigned, and keeps the cosigned checkpoint", async () => {
    const alice = await registeredUser(dev, uniqueName("alice"));
    const counter = countingPosts();
    const bob = await openUser(dev, uniqueName("bob"), { witnesses: [{ key: witness.key, url: witness.url }], fetch: counter.fetch });
    const found = await bob.client.findCards([alice.id]);
    assert.deepEqual(found.get(alice.id)!.id, alice.client.current().cardId);
    const kept = (await bob.client.keptCheckpoint())!;
    assert.ok((await verifyCosignature(kept.signed, parseWitnessKey(witness.key))) > 0n, "the kept checkpoint carries the witness's cosignature");
    await openCheckpoint(kept.signed, logKey);
    const posts = counter.posts.get(`${witness.url}/checkpoint`)!;
    assert.ok(posts >= 1, "the checkpoint was submitted to the witness");
    // The same checkpoint again: the kept cosignature is enough, the witness is not asked.
    const size = kept.checkpoint.size;
    await bob.client.findCards([alice.id]);
    if ((await bob.client.keptCheckpoint())!.checkpoint.size === size) assert.equal(counter.posts.get(`${witness.url}/checkpoint`), posts);
  });

  test("a witness key that is not the witness's (an unknown witness at that URL) is refused: NotWitnessed, nothing used", async () => {
    const alice = await registeredUser(dev, uniqueName("alice"));
    await inACheckpoint(alice.id);
    const bob = await openUser(dev, uniqueName("bob"), { witnesses: [{ key: strangerKey("witness.test/ts"), url: witness.url }], keyTransparencyWaitMs: 300 });
    const err = await bob.client.findCards([alice.id]).catch((e: unknown) => e);
    assert.ok(err instanceof NotWitnessedError, String(err));
    assert.ok(hasKind(err, KtErrorKind.NotWitnessed));
    assert.match(err.message, /not the configured one/);
    assert.equal(await bob.client.keptCheckpoint(), undefined, "no checkpoint kept");
  });

  test("a checkpoint kept before witnesses were required counts only with their cosignatures", async () => {
    const alice = await registeredUser(dev, uniqueName("alice"));
    await inACheckpoint(alice.id);
    const storage: Storage = new MemoryStorage();
    const name = uniqueName("bob");
    const plain = await openUser(dev, name, { storage });
    await plain.client.findCards([alice.id]);
    const kept = (await plain.client.keptCheckpoint())!;
    const required = await openUser(dev, name, { storage, witnesses: [{ key: strangerKey("witness.test/ts"), url: witness.url }], keyTransparencyWaitMs: 300 });
    const err = await required.client.findCards([alice.id]).catch((e: unknown) => e);
    assert.ok(err instanceof NotWitnessedError, String(err));
    assert.deepEqual((await required.client.keptCheckpoint())!.signed, kept.signed, "the kept checkpoint is left as it was");
  });

  test("a quorum the witnesses do not meet is refused; the quorum they meet is accepted", async () => {
    const alice = await registeredUser(dev, uniqueName("alice"));
    await inACheckpoint(alice.id);
    const down = `http://127.0.0.1:${await freePort()}`;
    const witnesses = [
      { key: witness.key, url: witness.url },
      { key: strangerKey("witness.test/down"), url: down },
    ];
    const strict = await openUser(dev, uniqueName("bob"), { witnesses, keyTransparencyWaitMs: 300 });
    const err = await strict.client.findCards([alice.id]).catch((e: unknown) => e);
    assert.ok(err instanceof NotWitnessedError && err.quorum === 2 && err.valid.length === 1, String(err));
    assert.ok(err.missing.has("witness.test/down"));
    const one = await openUser(dev, uniqueName("bob"), { witnesses, witnessQuorum: 1, keyTransparencyWaitMs: 300 });
    assert.equal((await one.client.findCards([alice.id])).size, 1);
    await assert.rejects(openUser(dev, uniqueName("bob"), { witnesses, witnessQuorum: 3 }), /quorum 3 of 2/);
  });

  test("a witness that comes up within the key transparency wait is waited for; one that does not, refused", async () => {
    const alice = await registeredUser(dev, uniqueName("alice"));
    const listen = `127.0.0.1:${await freePort()}`;
    // A second witness, down for now: its key made by a first start.
    const late = await Witness.start(dev, logKey, "witness.test/late", { listen });
    await late.stop({ keepData: true });
    try {
      const gone = await openUser(dev, uniqueName("bob"), { witnesses: [{ key: late.key, url: late.url }], keyTransparencyWaitMs: 400 });
      const started = Date.now();
      const err = await gone.client.findCards([alice.id]).catch((e: unknown) => e);
      assert.ok(err instanceof NotWitnessedError, String(err));
      assert.ok(Date.now() - started >= 400, "asked again until the wait ran out");
      const bob = await openUser(dev, uniqueName("bob"), { witnesses: [{ key: late.key, url: late.url }], keyTransparencyWaitMs: 20_000 });
      const lookup = bob.client.findCards([alice.id]);
      await new Promise((r) => setTimeout(r, 300));
      const again = await Witness.start(dev, logKey, "witness.test/late", { dir: late.dir, listen });
      try {
        assert.equal((await lookup).size, 1);
      } finally {
        await again.stop({ keepData: true });
      }
    } finally {
      await rm(late.dir, { recursive: true, force: true });
    }
  });
});

describe("a split view caught by a witness", () => {
  const servers: DevServer[] = [];
  const dirs: string[] = [];
  let witness: Witness | undefined;
  after(async () => {
    await witness?.stop();
    for (const s of servers) await s.stop({ keepData: true });
    for (const d of dirs) await rm(d, { recursive: true, force: true });
  });

  test("two servers from one card store show checkpoints of one size with different roots; the client on the branch the witness did not cosign is refused", async () => {
    const seed = await DevServer.start();
    servers.push(seed);
    dirs.push(seed.dataDir);
    const alice = await registeredUser(seed, uniqueName("alice"));
    await (await openUser(seed, uniqueName("bob"))).client.findCards([alice.id]); // a checkpoint with alice
    const seedSize = await serverSize(seed);
    await seed.stop({ keepData: true });
    servers.splice(servers.indexOf(seed), 1);
    const forkDir = await mkdtemp(join(tmpdir(), "umbra-ts-split-"));
    dirs.push(forkDir);
    await copyDir(seed.dataDir, forkDir, { recursive: true });

    const one = await DevServer.start([], { dataDir: seed.dataDir });
    const two = await DevServer.start([], { dataDir: forkDir });
    servers.push(one, two);
    const logKey = await logKeyOf(one);
    assert.equal(await logKeyOf(two), logKey, "one log key on both branches");
    // The same number of card events on each branch, for different users.
    await registeredUser(one, uniqueName("carol"));
    const dave = await registeredUser(two, uniqueName("dave"));
    let size = 0n;
    for (let i = 0; i < 100; i++) {
      const [a, b] = [await serverSize(one), await serverSize(two)];
      if (a === b && a > seedSize) {
        size = a;
        break;
      }
      await new Promise((r) => setTimeout(r, 100));
    }
    assert.ok(size > seedSize, "both branches reach one size past the common one");
    witness = await Witness.start(one, logKey, "witness.test/split");
    await cosignedUpTo(witness, size);

    const storage: Storage = new MemoryStorage();
    const victim = await openUser(two, uniqueName("erin"), { storage, witnesses: [{ key: witness.key, url: witness.url }], logKeys: [logKey] });
    const err = await victim.client.findCards([dave.id]).catch((e: unknown) => e);
    assert.ok(err instanceof LogInconsistentError, String(err));
    assert.ok(hasKind(err, UmbraErrorKind.LogInconsistent) && hasKind(err, KtErrorKind.Inconsistent));
    assert.ok(err.cause instanceof ForkError);
    const [held, shown] = [await openCheckpoint(err.kept, logKey), await openCheckpoint(err.served, logKey)];
    assert.equal(held.size, shown.size);
    assert.notDeepEqual(held.logRoot, shown.logRoot);
    assert.ok((await verifyCosignature(err.kept, parseWitnessKey(witness.key))) > 0n, "the witness's half of the evidence is cosigned");
    assert.equal(await victim.client.keptCheckpoint(), undefined, "nothing kept from the split view");
    // The witness recorded the fork too, with both checkpoints.
    assert.equal((await witness.forks()).length, 1);
    // A client on the witnessed branch is served as usual.
    const fine = await openUser(one, uniqueName("frank"), { witnesses: [{ key: witness.key, url: witness.url }] });
    assert.equal((await fine.client.findCards([alice.id])).size, 1);
  });
});
