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

test("config.argon2id runs every Argon2id of the client: the keystore's passphrase, backups and restores", async () => {
  const id = await dev.identity("hook-carol");
  const calls: string[] = [];
  const hook: sdk.Argon2idFunction = async (password, salt, time, memoryKiB, threads, tagLength) => {
    calls.push(`t=${time} m=${memoryKiB} p=${threads}`);
    return sdk.argon2id(password, salt, time, memoryKiB, threads, tagLength);
  };
  const open = (storage: sdk.Storage) =>
    sdk.UmbraClient.open({ baseUrl: dev.baseUrl, token: dev.tokenProvider(id), storage, passphrase: "carol's device passphrase", argon2id: hook });
  const storage = new sdk.MemoryStorage();
  const client = await open(storage);
  await client.register();
  assert.equal(calls.length, 1, "creating the keystore stretches its passphrase with the hook");
  await open(storage);
  assert.equal(calls.length, 2, "opening the keystore stretches its passphrase with the hook");
  await client.backupPrivateKey("carol's backup password");
  assert.equal(calls.length, 3, "a backup stretches the OPRF output with the hook");
  const newDevice = await open(new sdk.MemoryStorage());
  await newDevice.restorePrivateKey("carol's backup password");
  assert.equal(calls.length, 5, "a restore stretches the OPRF output, then the new keystore's passphrase, with the hook");
  assert.deepEqual(newDevice.current().cardId, client.current().cardId);
  assert.deepEqual(new Set(calls), new Set(["t=3 m=65536 p=4"]), "every call at the wire format's default cost");
});
