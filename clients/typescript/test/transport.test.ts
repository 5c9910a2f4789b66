// The REST transport against a real `umbra dev`: JSON in the protos' mapping, typed
// errors with the gateway's code, message and details, the token provider and its
// refresh, retries, and the route table held to proto/gateway.yaml.

import assert from "node:assert/strict";
import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { ristretto255 } from "@noble/curves/ed25519.js";
import { BackupAead, BackupService, BackupSlot, EvaluationPurpose, RestoreFailureSchema } from "../src/gen/umbra/backup/v1/backup_pb.js";
import { CardService } from "../src/gen/umbra/card/v1/card_pb.js";
import { GroupService, MembershipConflictSchema } from "../src/gen/umbra/group/v1/group_pb.js";
import { IdentityService } from "../src/gen/umbra/identity/v1/identity_pb.js";
import { MessagingService } from "../src/gen/umbra/messaging/v1/messaging_pb.js";
import { Code, NetworkError, RpcError, statusDetail } from "../src/transport/errors.js";
import { RestTransport, methodName } from "../src/transport/rest.js";
import { routes } from "../src/transport/routes.js";
import { DevServer, repoRoot } from "./support/devserver.js";

test("the route table is proto/gateway.yaml's", async () => {
  const yaml = await readFile(join(repoRoot, "proto/gateway.yaml"), "utf8");
  const want: Record<string, [string, string]> = {};
  let selector = "";
  for (const line of yaml.split("\n")) {
    const sel = /^\s*- selector: (\S+)/.exec(line);
    if (sel) {
      selector = sel[1]!;
      continue;
    }
    const rule = /^\s*(get|post|delete): (\S+)/.exec(line);
    if (rule && selector) {
      want[selector] = [rule[1]!.toUpperCase(), rule[2]!];
    }
  }
  assert.ok(Object.keys(want).length > 50, "the yaml parsed into rules");
  assert.deepEqual({ ...routes }, want);
  // Every route names a method of the generated services that is unary or a server
  // stream: the transport can call it.
  const methods = new Map<string, string>();
  for (const svc of [BackupService, CardService, GroupService, IdentityService, MessagingService]) {
    for (const m of svc.methods) methods.set(methodName(m), m.methodKind);
  }
  for (const name of Object.keys(routes)) {
    assert.ok(["unary", "server_streaming"].includes(methods.get(name) ?? ""), `${name} is a method the transport can call`);
  }
});

describe("REST transport against umbra dev", () => {
  let dev: DevServer;
  let alice: string;
  before(async () => {
    dev = await DevServer.start();
    alice = await dev.identity("alice");
  });
  after(async () => {
    await dev?.stop();
  });

  test("a public call, an app-key call and a token call", async () => {
    const t = new RestTransport({ baseUrl: dev.baseUrl, token: dev.tokenProvider(alice) });
    const keys = await t.unary(CardService.method.getServiceKey, {}, { auth: "none" });
    assert.ok(keys.keys.length >= 1);
    assert.equal(keys.keys[0]!.publicKey.length, 32, "bytes come back as bytes");
    const who = await t.unary(IdentityService.method.whoAmI, {});
    assert.equal(who.identity, alice);
    assert.equal(who.appId, dev.creds.app_id);
  });

  test("a refusal is an RpcError with the service's code and message", async () => {
    const t = new RestTransport({ baseUrl: dev.baseUrl, token: dev.tokenProvider(alice) });
    const err = await t.unary(CardService.method.getCard, { cardId: new Uint8Array(32).fill(0xfb) }).catch((e: unknown) => e);
    assert.ok(err instanceof RpcError, String(err));
    assert.equal(err.code, Code.NOT_FOUND);
    assert.equal(err.httpStatus, 404);
    assert.equal(err.method, "umbra.card.v1.CardService.GetCard");
    assert.match(err.rawMessage, /card/i);
    const bad = await t.unary(CardService.method.searchCards, { identities: ["not an identity"] }).catch((e: unknown) => e);
    assert.ok(bad instanceof RpcError);
    assert.equal(bad.code, Code.INVALID_ARGUMENT);
  });

  test("a refusal's details decode into their generated types", async () => {
    // A backup record of random bytes, then a restore with the wrong auth key: the
    // service refuses with PERMISSION_DENIED and a RestoreFailure detail that says how
    // many attempts remain.
    const t = new RestTransport({ baseUrl: dev.baseUrl, token: dev.tokenProvider(await dev.identity("detail-user")) });
    const blinded = ristretto255.Point.BASE.multiply(12345n).toBytes();
    const ev = await t.unary(BackupService.method.evaluate, {
      slot: BackupSlot.RECOVERY,
      purpose: EvaluationPurpose.BACKUP,
      blindedElement: blinded,
    });
    assert.equal(ev.evaluatedElement.length, 32);
    await t.unary(BackupService.method.putBackup, {
      slot: BackupSlot.RECOVERY,
      record: {
        ciphertext: new Uint8Array(64).fill(7),
        nonce: new Uint8Array(12).fill(8),
        aead: BackupAead.CHACHA20_POLY1305,
        authKeyHash: new Uint8Array(32).fill(9),
        kdf: { time: 1, memoryKib: 8192, threads: 1, salt: new Uint8Array(32).fill(10) },
      },
      expectedVersion: 0n,
      oprfKeyVersion: ev.oprfKeyVersion,
    });
    const err = await t
      .unary(BackupService.method.restore, { slot: BackupSlot.RECOVERY, authKey: new Uint8Array(32), expectedVersion: ev.oprfKeyVersion })
      .catch((e: unknown) => e);
    assert.ok(err instanceof RpcError, String(err));
    assert.equal(err.code, Code.PERMISSION_DENIED);
    const failure = err.detail(RestoreFailureSchema);
    assert.ok(failure, `a RestoreFailure detail in ${JSON.stringify(err.details)}`);
    assert.ok(failure.remainingAttempts > 0 && failure.remainingAttempts < 10, String(failure.remainingAttempts));
    assert.equal(failure.erased, false);
    assert.equal(statusDetail(err, MembershipConflictSchema), undefined, "no detail of a type it did not send");
  });

  test("a refused token is replaced once with a fresh one from the provider", async () => {
    let calls = 0;
    const t = new RestTransport({
      baseUrl: dev.baseUrl,
      token: async () => (++calls === 1 ? "not-a-token" : dev.issueToken(alice)),
    });
    const who = await t.unary(IdentityService.method.whoAmI, {});
    assert.equal(who.identity, alice);
    assert.equal(calls, 2);
    // A provider that keeps handing out bad tokens: UNAUTHENTICATED after one refresh.
    let bad = 0;
    const t2 = new RestTransport({ baseUrl: dev.baseUrl, token: async () => `bad-${++bad}` });
    const err = await t2.unary(IdentityService.method.whoAmI, {}).catch((e: unknown) => e);
    assert.ok(err instanceof RpcError && err.code === Code.UNAUTHENTICATED, String(err));
    assert.equal(bad, 2);
  });

  test("reads are retried after a network error and UNAVAILABLE; other writes are not", async () => {
    // The first answer is lost (fetch throws), the second is UNAVAILABLE, the third real.
    let plan: ("network" | "unavailable")[] = ["network", "unavailable"];
    let seen = 0;
    const flaky: typeof fetch = async (input, init) => {
      seen++;
      const next = plan.shift();
      if (next === "network") throw new TypeError("fetch failed");
      if (next === "unavailable") {
        return new Response(JSON.stringify({ code: Code.UNAVAILABLE, message: "upstream unavailable", details: [] }), { status: 503 });
      }
      return fetch(input, init);
    };
    const t = new RestTransport({ baseUrl: dev.baseUrl, token: dev.tokenProvider(alice), fetch: flaky, retry: { initialDelayMs: 5 } });
    const who = await t.unary(IdentityService.method.whoAmI, {});
    assert.equal(who.identity, alice);
    assert.equal(seen, 3);

    plan = ["network"];
    seen = 0;
    const err = await t.unary(CardService.method.revokeCard, { cardId: new Uint8Array(32).fill(1) }).catch((e: unknown) => e);
    assert.ok(err instanceof NetworkError, String(err));
    assert.equal(seen, 1, "a write that is not idempotent is not sent again");

    let always = 0;
    const down = new RestTransport({
      baseUrl: dev.baseUrl,
      token: dev.tokenProvider(alice),
      fetch: async () => {
        always++;
        throw new TypeError("fetch failed");
      },
      retry: { attempts: 3, initialDelayMs: 1 },
    });
    await assert.rejects(down.unary(IdentityService.method.whoAmI, {}), NetworkError);
    assert.equal(always, 3);
  });

  test("a server stream arrives as newline-delimited JSON, with presence kept", async () => {
    const t = new RestTransport({ baseUrl: dev.baseUrl, token: dev.tokenProvider(alice) });
    // after_inbox_sequence = 0 is "everything", a different request from leaving it out:
    // the heartbeat that ends the replay says so (inbox sequence 0 as the start).
    const ctl = new AbortController();
    const items = t.serverStream(MessagingService.method.subscribe, { afterInboxSequence: 0n }, { signal: ctl.signal });
    const first = await items.next();
    assert.equal(first.done, false);
    assert.equal(first.value!.item.case, "heartbeat");
    assert.equal(first.value!.inboxSequence, 0n);
    ctl.abort();
    await assert.rejects(items.next());
    // A refused start is a typed error too: from_start with a cursor above 0.
    const refused = t.serverStream(MessagingService.method.subscribe, { afterInboxSequence: 5n, fromStart: true });
    const err = await refused.next().catch((e: unknown) => e);
    assert.ok(err instanceof RpcError && err.code === Code.INVALID_ARGUMENT, String(err));
  });
});
