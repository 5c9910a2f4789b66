// Key transparency in the client against a real umbra dev: every lookup proved, the log
// key pinned on first use (or configured) and the checkpoint kept in storage (memory,
// files as the Go SDK lays them out, IndexedDB); a card published a moment ago waited
// for; batches of 1,000; a tampering proxy's proofs, checkpoints and consistency proofs
// refused; an older checkpoint refused; a forked log (two servers from one card store)
// caught; monitoring that catches a card published for the user from elsewhere (the Go
// CLI's `keys reset`, a second client, another device's revocation).

import assert from "node:assert/strict";
import { cp as copyDir, mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { IDBFactory } from "fake-indexeddb";
import { UmbraClient } from "../src/client/client.js";
import { LogInconsistentError, UmbraErrorKind, hasKind } from "../src/client/errors.js";
import { KEYSTORE, KT_STATE, MemoryStorage, type Storage } from "../src/storage/storage.js";
import { FileStorage } from "../src/storage/file.js";
import { IndexedDBStorage } from "../src/storage/indexeddb.js";
import { CardService } from "../src/gen/umbra/card/v1/card_pb.js";
import { LogEventKind } from "../src/gen/umbra/kt/v1/kt_pb.js";
import { KtErrorKind, openCheckpoint } from "../src/kt/index.js";
import { parseKtState } from "../src/client/ktstate.js";
import { AlertReason, UnexpectedCardError } from "../src/client/monitor.js";
import { RestTransport } from "../src/transport/rest.js";
import { Code, hasCode } from "../src/transport/errors.js";
import { openUser, registeredUser, uniqueName, type User } from "./support/clients.js";
import { DevServer } from "./support/devserver.js";

type Json = { [k: string]: any };

/** A fetch that counts the requests whose URL contains each of paths. */
function counting(paths: readonly string[]): { fetch: typeof fetch; counts: Map<string, number> } {
  const counts = new Map(paths.map((p) => [p, 0]));
  return {
    counts,
    fetch: async (input, init) => {
      for (const p of paths) if (String(input).includes(p)) counts.set(p, counts.get(p)! + 1);
      return fetch(input, init);
    },
  };
}

/** A fetch that lets mutate change the JSON answers of the routes whose URL contains path. */
function tampering(path: string, mutate: (json: Json) => void | Json): typeof fetch {
  return async (input, init) => {
    const res = await fetch(input, init);
    if (!String(input).includes(path) || !res.ok) return res;
    const json = (await res.json()) as Json;
    const out = mutate(json) ?? json;
    return new Response(JSON.stringify(out), { status: res.status, headers: res.headers });
  };
}

/** flips bit 0 of byte i (from the end if negative) of a base64 string. */
function flip(b64: string, i = -1): string {
  const b = Buffer.from(b64, "base64");
  b[i < 0 ? b.length + i : i]! ^= 1;
  return b.toString("base64");
}

/** A valid user identity no one was given. */
function unusedIdentity(n: number): string {
  const a = "abcdefghijklmnopqrstuvwxyz234567";
  let s = "";
  for (let i = 0, x = n + 1; i < 32; i++, x = Math.floor(x / 32) + i * 7919) s += a[x % 32];
  return "u_" + s;
}

/** Changes one byte of the signature of a signed checkpoint (base64 of the note). */
function resign(b64: string): string {
  const lines = Buffer.from(b64, "base64").toString("utf8").split("\n");
  const last = lines[lines.length - 2]!;
  const at = last.lastIndexOf(" ") + 1;
  const sig = Buffer.from(last.slice(at), "base64");
  sig[20]! ^= 1;
  lines[lines.length - 2] = last.slice(0, at) + sig.toString("base64");
  return Buffer.from(lines.join("\n")).toString("base64");
}

const byIdentity = (json: Json, id: string) => json["results"].find((r: Json) => r.proof?.identity === id) as Json;

describe("key transparency against umbra dev", () => {
  let dev: DevServer;
  let logKey: string;
  before(async () => {
    dev = await DevServer.start();
    logKey = (await new RestTransport({ baseUrl: dev.baseUrl }).unary(CardService.method.getLogKey, {}, { auth: "none" })).verifierKey;
  });
  after(async () => {
    await dev?.stop();
  });

  /** Opens a client of a new user, with storage and extra config. */
  const observer = (opts: Parameters<typeof openUser>[2] = {}) => openUser(dev, uniqueName("bob"), opts);

  test("lookups are proved; the log key is pinned on first use and the checkpoint kept, in the Go SDK's state file", async () => {
    const alice = await registeredUser(dev, uniqueName("alice"));
    const carol = unusedIdentity(1);
    const dir = await mkdtemp(join(tmpdir(), "umbra-ts-kt-"));
    try {
      const counter = counting(["/v1/kt/log-key", "/v1/cards:search-with-proofs", "/v1/kt/consistency"]);
      const bob = await observer({ storage: new FileStorage(dir), fetch: counter.fetch });
      const found = await bob.client.findCards([alice.id, carol]);
      assert.deepEqual([...found.keys()], [alice.id]);
      assert.deepEqual(found.get(alice.id)!.id, alice.client.current().cardId);
      const proved = await bob.client.lookupCards([alice.id, carol]);
      const a = proved.get(alice.id)!;
      assert.deepEqual(a.value?.cardId, alice.client.current().cardId);
      assert.equal(a.leaf?.kind, LogEventKind.PUBLICATION);
      assert.equal(a.leafIndex, a.value?.cardLogIndex);
      assert.ok(a.proof && a.checkpoint.size > a.leafIndex);
      assert.equal(proved.get(carol)!.value, undefined, "carol never had a card: proved absent");
      assert.equal(proved.get(carol)!.card, undefined);
      assert.equal(counter.counts.get("/v1/kt/log-key"), 1, "the log key is asked once, then pinned");
      // The state file, as the Go SDK writes it beside its keystore.
      const st = parseKtState(new Uint8Array(await readFile(join(dir, "keystore.kt"))));
      assert.deepEqual(
        st.logKeys.map((k) => [k.verifierKey, k.source]),
        [[logKey, "first-use"]],
      );
      assert.equal(st.appId, dev.creds.app_id);
      const kept = await openCheckpoint(new TextEncoder().encode(st.checkpoint), logKey);
      assert.ok(kept.size >= a.checkpoint.size);
      const json = JSON.parse(await readFile(join(dir, "keystore.kt"), "utf8"));
      assert.equal(json.version, 1);
      assert.equal(typeof json.checkpoint, "string");
      // The log grows: the next lookup proves consistency with the kept checkpoint.
      await registeredUser(dev, uniqueName("dave"));
      const before = kept.size;
      const consistencyBefore = counter.counts.get("/v1/kt/consistency")!;
      for (let i = 0; i < 50; i++) {
        await bob.client.findCards([alice.id]);
        if ((await bob.client.keptCheckpoint())!.checkpoint.size > before) break;
        await new Promise((r) => setTimeout(r, 100));
      }
      assert.ok((await bob.client.keptCheckpoint())!.checkpoint.size > before, "a newer checkpoint is kept");
      assert.ok(counter.counts.get("/v1/kt/consistency")! > consistencyBefore, "and was proved consistent with the older one");
      // Another client on the same folder starts from what this one kept.
      const again = await UmbraClient.open({ baseUrl: dev.baseUrl, token: bob.client.cfg.token, storage: new FileStorage(dir), noPassphrase: true });
      assert.deepEqual((await again.keptCheckpoint())!.checkpoint, (await bob.client.keptCheckpoint())!.checkpoint);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  test("the kept checkpoint lasts in IndexedDB too", async () => {
    const alice = await registeredUser(dev, uniqueName("alice"));
    const idb = new IDBFactory();
    const name = uniqueName("bob");
    const id = await dev.identity(name);
    const open = () => UmbraClient.open({ baseUrl: dev.baseUrl, token: dev.tokenProvider(id), storage: new IndexedDBStorage("umbra:" + name, { indexedDB: idb }), noPassphrase: true });
    const first = await open();
    await first.findCards([alice.id]);
    const kept = (await first.keptCheckpoint())!;
    const second = await open();
    assert.deepEqual((await second.keptCheckpoint())!.signed, kept.signed);
  });

  test("configured log keys: the right one is used without asking, another one is refused", async () => {
    const alice = await registeredUser(dev, uniqueName("alice"));
    const counter = counting(["/v1/kt/log-key"]);
    const shipped = await observer({ logKeys: [logKey], fetch: counter.fetch });
    assert.equal((await shipped.client.findCards([alice.id])).size, 1);
    assert.equal(counter.counts.get("/v1/kt/log-key"), 0);
    // Another log's key (the vectors'): the server's checkpoints are signed by none the client trusts.
    const other = "umbra.example/kt+bd5808ce+Ad3jvM7H86ZqERX0XXIPTcE1w658TiLco4/bHv1qSV/4";
    const wrong = await observer({ logKeys: [other] });
    const err = await wrong.client.findCards([alice.id]).catch((e: unknown) => e);
    assert.ok(hasKind(err, UmbraErrorKind.UnknownLogKey) && hasKind(err, KtErrorKind.UnknownLogKey), String(err));
    // A key pinned on first use from another server is refused the same way.
    const storage = new MemoryStorage();
    await storage.put(KT_STATE, new TextEncoder().encode(JSON.stringify({ version: 1, log_keys: [{ verifier_key: other, source: "first-use", pinned_at: new Date().toISOString() }] })));
    const pinnedElsewhere = await observer({ storage });
    const err2 = await pinnedElsewhere.client.findCards([alice.id]).catch((e: unknown) => e);
    assert.ok(hasKind(err2, UmbraErrorKind.UnknownLogKey), String(err2));
    await assert.rejects(observer({ logKeys: ["not a key"] }), /not a signed-note verifier key/);
  });

  test("a card published a moment ago is waited for; the user's own card is this device's own", async () => {
    const bob = await observer();
    const alice = await openUser(dev, uniqueName("alice"));
    const card = await alice.client.register();
    // Right away: bob waits for a checkpoint that holds it; alice takes hers from her keys.
    assert.deepEqual((await bob.client.findCards([alice.id])).get(alice.id)!.id, card.id);
    const rotated = await alice.client.rotateKeys();
    assert.deepEqual((await alice.client.findCards([alice.id])).get(alice.id)!.id, rotated.id);
    const p = (await bob.client.lookupCards([alice.id])).get(alice.id)!;
    assert.deepEqual(p.card!.id, rotated.id, "the rotation, not the card it superseded");
    assert.equal(p.leaf!.kind, LogEventKind.ENDORSED_ROTATION);
    assert.deepEqual((await bob.client.trustedCards([alice.id])).get(alice.id)!.id, rotated.id);
  });

  test("a lookup of 1,500 identities is two SearchCardsWithProofs calls", async () => {
    const alice = await registeredUser(dev, uniqueName("alice"));
    const counter = counting(["/v1/cards:search-with-proofs"]);
    const bob = await observer({ fetch: counter.fetch });
    await bob.client.findCards([alice.id]); // past the wait for alice's checkpoint
    counter.counts.set("/v1/cards:search-with-proofs", 0);
    const ids = [alice.id, ...Array.from({ length: 1499 }, (_, i) => unusedIdentity(100 + i))];
    assert.equal(new Set(ids).size, 1500);
    const proved = await bob.client.lookupCards(ids);
    assert.equal(proved.size, 1500);
    assert.equal(counter.counts.get("/v1/cards:search-with-proofs"), 2);
    assert.deepEqual(proved.get(alice.id)!.card!.id, alice.client.current().cardId);
    assert.equal([...proved.values()].filter((p) => p.value === undefined).length, 1499);
  });

  describe("a tampering proxy's answers are refused", () => {
    let alice: User;
    let bob: User;
    let carol: string;
    let dan: User;
    let beforeRotation: Json;
    before(async () => {
      alice = await registeredUser(dev, uniqueName("alice"));
      bob = await registeredUser(dev, uniqueName("bob"));
      dan = await registeredUser(dev, uniqueName("dan"));
      carol = unusedIdentity(2);
      // An answer from before alice's rotation and dan's revocation, to serve later.
      const capture = tampering("/v1/cards:search-with-proofs", (json) => void (beforeRotation = structuredClone(json)));
      await (await observer({ fetch: capture })).client.findCards([alice.id, bob.id, dan.id]);
      await alice.client.rotateKeys();
      await dan.client.revokeCard();
      await (await observer()).client.findCards([alice.id, dan.id]); // a checkpoint holds both
    });

    const cases: [string, (json: Json) => void | Json, string[]][] = [
      ["a map proof sibling changed", (j) => void (byIdentity(j, alice.id).proof.mapProof.siblingHashes = flip(byIdentity(j, alice.id).proof.mapProof.siblingHashes, 0)), [KtErrorKind.BadProof]],
      ["an inclusion proof hash changed", (j) => void (byIdentity(j, alice.id).proof.inclusionHashes = flip(byIdentity(j, alice.id).proof.inclusionHashes, 0)), [KtErrorKind.BadProof]],
      [
        "packed inclusion hashes a byte short",
        (j) => {
          const p = byIdentity(j, alice.id).proof;
          p.inclusionHashes = Buffer.from(p.inclusionHashes, "base64").subarray(1).toString("base64");
        },
        [KtErrorKind.Malformed],
      ],
      ["the log entry of another identity", (j) => void (byIdentity(j, alice.id).proof.leaf = byIdentity(j, bob.id).proof.leaf), [KtErrorKind.BadProof]],
      [
        "another identity's proof and card, relabelled",
        (j) => {
          const a = byIdentity(j, alice.id);
          const b = structuredClone(byIdentity(j, bob.id));
          a.proof = { ...b.proof, identity: alice.id };
        },
        [KtErrorKind.BadProof],
      ],
      [
        "a present identity said absent",
        (j) => {
          const a = byIdentity(j, alice.id);
          a.proof = { ...structuredClone(byIdentity(j, carol).proof), identity: alice.id };
          delete a.card;
        },
        [KtErrorKind.BadProof],
      ],
      [
        "alice's card from before her rotation, with its proof, at today's checkpoint",
        (j) => {
          const a = byIdentity(j, alice.id);
          const old = byIdentity(beforeRotation, alice.id);
          a.proof = structuredClone(old.proof);
          a.card = structuredClone(old.card);
        },
        [KtErrorKind.BadProof],
      ],
      ["no proof", (j) => void delete byIdentity(j, alice.id).proof, []],
      ["another identity's card beside alice's proof", (j) => void (byIdentity(j, alice.id).card = byIdentity(j, bob.id).card), []],
      ["alice's card from before her rotation beside today's proof", (j) => void (byIdentity(j, alice.id).card = byIdentity(beforeRotation, alice.id).card), []],
      ["a revoked identity's last card served as active beside the proof of its revocation", (j) => void (byIdentity(j, dan.id).card = { ...byIdentity(beforeRotation, dan.id).card, status: "CARD_STATUS_ACTIVE" }), []],
      ["a card beside the proof of an absent identity", (j) => void (byIdentity(j, carol).card = byIdentity(j, bob.id).card), []],
      ["one answer too few", (j) => void j["results"].pop(), []],
      ["a map value that is not canonical", (j) => void (byIdentity(j, alice.id).proof.mapValue = Buffer.concat([Buffer.from(byIdentity(j, alice.id).proof.mapValue, "base64"), Buffer.from([8, 1])]).toString("base64")), [KtErrorKind.Malformed]],
      ["a checkpoint signature changed", (j) => void (j["checkpoint"] = resign(j["checkpoint"])), [KtErrorKind.BadSignature]],
      ["a checkpoint whose map root was changed", (j) => void (j["checkpoint"] = Buffer.from(Buffer.from(j["checkpoint"], "base64").toString("utf8").replace(/umbra-map (.)/, (_m: string, c: string) => `umbra-map ${c === "A" ? "B" : "A"}`)).toString("base64")), [KtErrorKind.BadSignature]],
    ];
    for (const [name, mutate, ktKinds] of cases) {
      test(name, async () => {
        const victim = await observer({ fetch: tampering("/v1/cards:search-with-proofs", mutate) });
        const err = await victim.client.findCards([alice.id, bob.id, carol, dan.id]).catch((e: unknown) => e);
        assert.ok(hasKind(err, UmbraErrorKind.UnprovedCard), `${name}: ${String(err)}`);
        for (const k of ktKinds) assert.ok(hasKind(err, k), `${name}: want ${k}: ${String(err)}`);
      });
    }

    test("a whole answer from an older checkpoint, after a newer one was kept, is refused", async () => {
      let replay = false;
      const victim = await observer({ fetch: tampering("/v1/cards:search-with-proofs", (j) => (replay ? structuredClone(beforeRotation) : j)) });
      assert.deepEqual((await victim.client.findCards([alice.id, bob.id])).get(alice.id)!.id, alice.client.current().cardId);
      replay = true;
      const err = await victim.client.findCards([alice.id, bob.id]).catch((e: unknown) => e);
      assert.ok(hasKind(err, UmbraErrorKind.UnprovedCard) && /older than the one/.test(String(err)), String(err));
    });

    test("a consistency proof that does not verify, or none, is an inconsistent log, with both checkpoints as evidence", async () => {
      for (const [what, mutate] of [
        ["a changed hash", (j: Json) => void (j["proof"][0] = flip(j["proof"][0]))],
        ["a hash too few", (j: Json) => void j["proof"].pop()],
        ["an empty proof", (j: Json) => void (j["proof"] = [])],
      ] as const) {
        const victim = await observer({ fetch: tampering("/v1/kt/consistency", mutate) });
        await victim.client.findCards([alice.id]);
        const kept = (await victim.client.keptCheckpoint())!;
        await registeredUser(dev, uniqueName("dave")); // the log grows
        let err: unknown;
        for (let i = 0; i < 50 && err === undefined; i++) {
          err = await victim.client.findCards([alice.id]).then(
            () => undefined,
            (e: unknown) => e,
          );
          if (err === undefined) await new Promise((r) => setTimeout(r, 100));
        }
        assert.ok(err instanceof LogInconsistentError, `${what}: ${String(err)}`);
        assert.ok(hasKind(err, UmbraErrorKind.LogInconsistent) && hasKind(err, KtErrorKind.Inconsistent));
        assert.deepEqual(err.kept, kept.signed);
        const served = await openCheckpoint(err.served, logKey);
        assert.ok(served.size > kept.checkpoint.size);
        assert.deepEqual((await victim.client.keptCheckpoint())!.signed, kept.signed, `${what}: the inconsistent checkpoint is not kept`);
      }
      // A call for the proof that fails is not yet evidence of a fork: its error as it
      // is, and nothing kept or used.
      const failing: typeof fetch = async (input, init) =>
        String(input).includes("/v1/kt/consistency") ? new Response(JSON.stringify({ code: 13, message: "boom" }), { status: 500 }) : fetch(input, init);
      const victim = await observer({ fetch: failing });
      await victim.client.findCards([alice.id]);
      const kept = (await victim.client.keptCheckpoint())!;
      await registeredUser(dev, uniqueName("dave"));
      let err: unknown;
      for (let i = 0; i < 50 && err === undefined; i++) {
        err = await victim.client.findCards([alice.id]).then(
          () => undefined,
          (e: unknown) => e,
        );
        if (err === undefined) await new Promise((r) => setTimeout(r, 100));
      }
      assert.ok(hasCode(err, Code.INTERNAL) && !(err instanceof LogInconsistentError), String(err));
      assert.deepEqual((await victim.client.keptCheckpoint())!.signed, kept.signed);
    });
  });

  describe("a signer card of a contact met first through a message, proved by its log entry (log_index)", () => {
    // bob signs messages to alice, dave and erin with his first card, then his card is
    // replaced by a reset (no endorsement: his current card does not chain back to the
    // first). None of them has looked bob up.
    let bob: User;
    let first: Uint8Array;
    const messages = new Map<string, Uint8Array>();
    const users = new Map<string, User>();
    before(async () => {
      bob = await registeredUser(dev, uniqueName("bob"));
      first = bob.client.current().cardId;
      for (const n of ["alice", "dave", "erin", "frank"]) users.set(n, await registeredUser(dev, uniqueName(n)));
      for (const [n, u] of users) messages.set(n, await bob.client.encrypt(new TextEncoder().encode(`hi ${n}`), [u.id]));
      await (await openUser(dev, bob.name)).client.resetKeys(await dev.issueResetGrant(bob.id));
    });
    /** A client of user n's keys that tampers with fetches. */
    const reopen = async (n: string, fetchFn: typeof fetch, wait?: number) =>
      openUser(dev, users.get(n)!.name, { storage: users.get(n)!.client.cfg.storage, fetch: fetchFn, ...(wait ? { keyTransparencyWaitMs: wait } : {}) });

    test("bob's real first card is accepted: the log shows its publication", async () => {
      const alice = users.get("alice")!;
      assert.equal(new TextDecoder().decode(await alice.client.decrypt(messages.get("alice")!, bob.id)), "hi alice");
      const trust = await alice.client.contact(bob.id);
      assert.equal(trust.chain.length, 1);
      assert.notDeepEqual(trust.chain[0]!.cardId, first, "the pin is bob's current card, not the old one");
    });

    test("a log_index that names another card's entry (bob's reset card) is refused", async () => {
      const current = (await bob.client.findCards([bob.id])).get(bob.id)!;
      const dave = await reopen(
        "dave",
        tampering("/v1/cards/", (json) => {
          if (json["card"]?.cardId === Buffer.from(first).toString("base64")) json["card"].logIndex = String(current.logIndex);
        }),
      );
      const err = await dave.client.decrypt(messages.get("dave")!, bob.id).catch((e: unknown) => e);
      assert.ok(hasKind(err, UmbraErrorKind.UnprovedCard) && hasKind(err, KtErrorKind.BadProof), String(err));
    });

    test("a forged log entry (its inclusion proof fails) is refused", async () => {
      const erin = await reopen(
        "erin",
        tampering("/v1/kt/inclusion", (json) => {
          json["proof"] = (json["proof"] as string[]).map((x) => flip(x, 3));
        }),
      );
      const err = await erin.client.decrypt(messages.get("erin")!, bob.id).catch((e: unknown) => e);
      assert.ok(hasKind(err, UmbraErrorKind.UnprovedCard) && hasKind(err, KtErrorKind.BadProof), String(err));
    });

    test("a log_index past the log is waited for, then NotYetInLog", async () => {
      const frank = await reopen(
        "frank",
        tampering("/v1/cards/", (json) => {
          if (json["card"]?.cardId === Buffer.from(first).toString("base64")) json["card"].logIndex = "1000000";
        }),
        300,
      );
      const err = await frank.client.decrypt(messages.get("frank")!, bob.id).catch((e: unknown) => e);
      assert.ok(hasKind(err, UmbraErrorKind.NotYetInLog), String(err));
    });
  });

  describe("monitoring", () => {
    test("quiet for what this device did: registration, rotation, its own revocation", async () => {
      const alerts: Error[] = [];
      const alice = await registeredUser(dev, uniqueName("alice"), { onKeyTransparencyAlert: (a) => alerts.push(a) });
      let report = await alice.client.monitor();
      assert.deepEqual(report.alerts, []);
      assert.deepEqual(report.lookup.card?.id, alice.client.current().cardId);
      await alice.client.rotateKeys();
      report = await alice.client.monitor();
      assert.deepEqual(report.alerts, []);
      assert.deepEqual(report.lookup.value?.cardId, alice.client.current().cardId, "waited for the rotation's checkpoint");
      await alice.client.revokeCard();
      report = await alice.client.monitor();
      assert.deepEqual(report.alerts, []);
      assert.equal(report.lookup.card, undefined);
      assert.deepEqual(alerts, []);
      const st = parseKtState((await alice.client.cfg.storage.get(KT_STATE))!);
      assert.equal(st.own?.present, true);
      assert.equal(st.own?.latestLogIndex, report.lookup.value!.latestLogIndex);
      assert.equal(st.revokedHere.length, 1);
    });

    test("a card published for the user with the Go CLI (umbra keys reset) is an alert", async () => {
      const alerts: Error[] = [];
      const events: Error[] = [];
      const alice = await registeredUser(dev, uniqueName("alice"), { onKeyTransparencyAlert: (a) => alerts.push(a) });
      alice.client.addEventListener("keytransparencyalert", (e) => events.push((e as CustomEvent<Error>).detail));
      assert.deepEqual((await alice.client.monitor()).alerts, []);
      const home = await mkdtemp(join(tmpdir(), "umbra-ts-kt-cli-"));
      try {
        await dev.cli(home, ["login", alice.name], { env: { UMBRA_PASSPHRASE: "correct horse battery staple" } });
        await dev.cli(home, ["keys", "reset", "--user", alice.name], { env: { UMBRA_PASSPHRASE: "correct horse battery staple" } });
      } finally {
        await rm(home, { recursive: true, force: true });
      }
      const report = await alice.client.monitor();
      assert.equal(report.alerts.length, 1, report.alerts.map(String).join("; "));
      const a = report.alerts[0]!;
      assert.ok(a instanceof UnexpectedCardError && hasKind(a, UmbraErrorKind.UnexpectedCard));
      assert.equal(a.reason, AlertReason.ForeignCard);
      assert.equal(a.identity, alice.id);
      assert.deepEqual(a.cardId, report.lookup.card!.id);
      assert.equal(a.eventKind, LogEventKind.RESET);
      assert.notDeepEqual(a.cardId, alice.client.current().cardId);
      assert.deepEqual(alerts, [a]);
      assert.deepEqual(events, [a]);
      // As long as the card is current, every check reports it.
      assert.deepEqual(
        (await alice.client.monitor()).alerts.map((x) => x.reason),
        [AlertReason.ForeignCard],
      );
    });

    test("a card published and withdrawn by a second client, and a revocation by another device, are alerts; that device's rotation is not", async () => {
      const alice = await registeredUser(dev, uniqueName("alice"));
      await alice.client.monitor();
      // Another device of alice's, with a copy of her keystore.
      const copy = new MemoryStorage();
      await copy.put(KEYSTORE, (await alice.client.cfg.storage.get(KEYSTORE))!);
      const device = await openUser(dev, alice.name, { storage: copy });
      const rotated = await device.client.rotateKeys();
      const quiet = await alice.client.monitor();
      assert.deepEqual(quiet.alerts, [], "a rotation endorsed by a key this device holds");
      assert.deepEqual(quiet.lookup.card?.id, rotated.id);

      // A second client with a reset grant publishes a card for bob, then revokes it.
      const bob = await registeredUser(dev, uniqueName("bob"), { keyTransparencyWaitMs: 2500 });
      await bob.client.monitor();
      const thief = await openUser(dev, bob.name);
      await thief.client.resetKeys(await dev.issueResetGrant(bob.id));
      await thief.client.revokeCard();
      const report = await bob.client.monitor();
      // The thief's card, revoked; and bob's own card, which the map no longer shows.
      assert.deepEqual(
        report.alerts.map((a) => a.reason),
        [AlertReason.ForeignRevocation, AlertReason.Hidden],
      );
      assert.deepEqual(report.alerts[0]!.cardId, thief.client.current().cardId);

      // carol's own card revoked by another device holding her keys.
      const carol = await registeredUser(dev, uniqueName("carol"));
      await carol.client.monitor();
      const carolCopy = new MemoryStorage();
      await carolCopy.put(KEYSTORE, (await carol.client.cfg.storage.get(KEYSTORE))!);
      await (await openUser(dev, carol.name, { storage: carolCopy })).client.revokeCard();
      const elsewhere = await carol.client.monitor();
      assert.deepEqual(
        elsewhere.alerts.map((a) => a.reason),
        [AlertReason.RevokedElsewhere],
      );
    });

    test("startMonitoring checks at once and then periodically, until stopped", async () => {
      const alerts: Error[] = [];
      const alice = await registeredUser(dev, uniqueName("alice"), { onKeyTransparencyAlert: (a) => alerts.push(a) });
      await alice.client.monitor();
      const stop = alice.client.startMonitoring(200);
      try {
        const thief = await openUser(dev, alice.name);
        await thief.client.resetKeys(await dev.issueResetGrant(alice.id));
        for (let i = 0; i < 100 && alerts.length === 0; i++) await new Promise((r) => setTimeout(r, 100));
      } finally {
        stop();
      }
      assert.ok(alerts.length >= 1 && (alerts[0] as UnexpectedCardError).reason === AlertReason.ForeignCard, alerts.map(String).join("; "));
    });
  });
});

describe("key transparency across servers", () => {
  const dirs: string[] = [];
  const servers: DevServer[] = [];
  after(async () => {
    for (const s of servers) await s.stop({ keepData: true });
    for (const d of dirs) await rm(d, { recursive: true, force: true });
  });
  const start = async (args: string[], dataDir?: string) => {
    const s = await DevServer.start(args, dataDir ? { dataDir } : {});
    servers.push(s);
    if (!dirs.includes(s.dataDir)) dirs.push(s.dataDir);
    return s;
  };
  const stop = async (s: DevServer) => {
    await s.stop({ keepData: true });
    servers.splice(servers.indexOf(s), 1);
  };

  test("a forked log (two servers from one card store and its log key) is caught by a client that saw the other branch", async () => {
    const a = await start([]);
    const alice = await registeredUser(a, uniqueName("alice"));
    await (await openUser(a, uniqueName("bob"))).client.findCards([alice.id]);
    await stop(a);
    const forkDir = await mkdtemp(join(tmpdir(), "umbra-ts-fork-"));
    dirs.push(forkDir);
    await copyDir(a.dataDir, forkDir, { recursive: true });
    // Branch one: carol joins. bob's client keeps its checkpoint.
    const one = await start([], a.dataDir);
    const carol = await registeredUser(one, uniqueName("carol"));
    const storage: Storage = new MemoryStorage();
    const bobName = uniqueName("bob");
    const onOne = await openUser(one, bobName, { storage });
    assert.equal((await onOne.client.findCards([alice.id, carol.id])).size, 2, "a checkpoint with carol's card is kept");
    const kept = (await onOne.client.keptCheckpoint())!;
    // Branch two, from the same store and log key: dave and erin join instead.
    const two = await start([], forkDir);
    const dave = await registeredUser(two, uniqueName("dave"));
    const erin = await registeredUser(two, uniqueName("erin"));
    // A fresh client: its own view of branch two is consistent.
    assert.equal((await (await openUser(two, uniqueName("frank"))).client.findCards([alice.id, dave.id, erin.id])).size, 3);
    const onTwo = await openUser(two, bobName, { storage });
    const err = await onTwo.client.findCards([alice.id]).catch((e: unknown) => e);
    assert.ok(err instanceof LogInconsistentError, String(err));
    assert.ok(hasKind(err, KtErrorKind.Inconsistent));
    assert.deepEqual(err.kept, kept.signed);
    const logKey = (await new RestTransport({ baseUrl: two.baseUrl }).unary(CardService.method.getLogKey, {}, { auth: "none" })).verifierKey;
    const [k, s] = [await openCheckpoint(err.kept, logKey), await openCheckpoint(err.served, logKey)];
    assert.equal(k.origin, s.origin, "one log, one key: both branches signed by it");
    assert.notDeepEqual(k.logRoot, s.logRoot);
  });

  test("a card no checkpoint holds in time is NotYetInLog, except the user's own; monitoring waits, then says the map hides it", async () => {
    const seed = await start([]);
    await registeredUser(seed, uniqueName("first")); // a first checkpoint
    for (let i = 0; i < 50; i++) {
      const cp = await new RestTransport({ baseUrl: seed.baseUrl }).unary(CardService.method.getCheckpoint, {}, { auth: "none" }).catch(() => undefined);
      if (cp && cp.size > 0n) break;
      await new Promise((r) => setTimeout(r, 100));
    }
    await stop(seed);
    const slow = await start(["--kt-interval", "1h"], seed.dataDir);
    const alerts: Error[] = [];
    const alice = await registeredUser(slow, uniqueName("alice"), { keyTransparencyWaitMs: 300, onKeyTransparencyAlert: (a) => alerts.push(a) });
    const bob = await openUser(slow, uniqueName("bob"), { keyTransparencyWaitMs: 300 });
    const err = await bob.client.findCards([alice.id]).catch((e: unknown) => e);
    assert.ok(hasKind(err, UmbraErrorKind.NotYetInLog), String(err));
    assert.deepEqual((await alice.client.findCards([alice.id])).get(alice.id)!.id, alice.client.current().cardId, "her own card, from her keys");
    const own = await alice.client.lookupCards([alice.id]).catch((e: unknown) => e);
    assert.ok(hasKind(own, UmbraErrorKind.NotYetInLog), "lookupCards proves the user's own card too");
    const report = await alice.client.monitor();
    assert.deepEqual(
      report.alerts.map((a) => a.reason),
      [AlertReason.Hidden],
    );
    assert.equal(alerts.length, 1);
  });
});
