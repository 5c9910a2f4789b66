// The README's example through the package entry, against umbra dev: a user whose
// keystore lives in IndexedDB encrypted under a passphrase registers, sends, and reads
// its inbox; the keystore reopens from IndexedDB with the passphrase, and what IndexedDB
// holds is the encrypted keystore file, not the keys.

import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { IDBFactory } from "fake-indexeddb";
import * as sdk from "../src/index.js";
import { DevServer } from "./support/devserver.js";

let dev: DevServer;
before(async () => {
  dev = await DevServer.start();
});
after(async () => {
  await dev?.stop();
});

test("the package entry exports the client layer", () => {
  for (const name of ["UmbraClient", "Group", "MemoryStorage", "FileStorage", "IndexedDBStorage", "RestTransport", "RpcError", "Code", "UmbraError", "UmbraErrorKind", "KeyChangedError", "WrongPasswordError", "hasKind", "newClientMessageId"]) {
    assert.ok(name in sdk, name);
  }
});

test("the README's example: IndexedDB keystore under a passphrase, register, send, inbox", async () => {
  const indexedDB = new IDBFactory();
  const aliceId = await dev.identity("readme-alice");
  const bobId = await dev.identity("readme-bob");
  const bob = await sdk.UmbraClient.open({ baseUrl: dev.baseUrl, token: dev.tokenProvider(bobId), storage: new sdk.MemoryStorage(), noPassphrase: true });
  await bob.register();

  const open = (passphrase: string) =>
    sdk.UmbraClient.open({
      baseUrl: dev.baseUrl,
      token: () => dev.issueToken(aliceId),
      storage: new sdk.IndexedDBStorage("umbra:alice", { indexedDB }),
      passphrase,
    });
  const client = await open("the user's device passphrase");
  if (!client.hasPrivateKey) await client.register();
  await client.sendTo(bobId, new TextEncoder().encode("hello, bob"));
  await bob.sendTo(aliceId, new TextEncoder().encode("hello, alice"));
  const ctl = new AbortController();
  const got: string[] = [];
  for await (const item of client.inbox({ fromStart: true, signal: ctl.signal })) {
    if (item.item.case === "message") got.push(new TextDecoder().decode(await client.openMessage(item.item.value)));
    if (got.length === 2) break;
  }
  assert.deepEqual(got, ["hello, bob", "hello, alice"]);

  const again = await open("the user's device passphrase");
  assert.deepEqual(again.current().cardId, client.current().cardId);
  const wrong = await open("another passphrase").catch((e: unknown) => e);
  assert.ok(sdk.hasKind(wrong, sdk.E2eeErrorKind.Passphrase), String(wrong));
  const stored = (await new sdk.IndexedDBStorage("umbra:alice", { indexedDB }).get(sdk.KEYSTORE))!;
  const ks = await sdk.Keystore.open(stored, new TextEncoder().encode("the user's device passphrase"));
  assert.equal(ks.encrypted, true);
  const seed = client.current().kp.signingSeed;
  assert.equal(Buffer.from(stored).indexOf(Buffer.from(seed)), -1, "the signing key is not in IndexedDB in the clear");
});
