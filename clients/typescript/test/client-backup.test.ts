// Key backup and restore end to end against umbra dev: the OPRF exchange, Argon2id at
// the wire format's cost, the bundle; wrong passwords counted, recovery keys, password
// change, a device that lacks keys refused, a tampered record refused, nothing secret on
// the wire, and a restored keystore kept encrypted under a passphrase in a folder.

import assert from "node:assert/strict";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { UmbraClient } from "../src/client/client.js";
import { hasKind, UmbraErrorKind, WrongPasswordError } from "../src/client/errors.js";
import { E2eeErrorKind, KeyBackupErrorKind } from "../src/errors.js";
import { FileStorage } from "../src/storage/file.js";
import { openUser, registeredUser, uniqueName } from "./support/clients.js";
import { DevServer } from "./support/devserver.js";

const text = (s: string) => new TextEncoder().encode(s);
const str = (b: Uint8Array) => new TextDecoder().decode(b);

describe("key backup against umbra dev", () => {
  let dev: DevServer;
  before(async () => {
    dev = await DevServer.start();
  });
  after(async () => {
    await dev?.stop();
  });

  test("back up, restore on a new device, wrong passwords counted, change the password", async () => {
    const bodies: string[] = [];
    const alice = await registeredUser(dev, uniqueName("alice"), {
      fetch: async (input, init) => {
        bodies.push(String(input) + " " + String(init?.body ?? ""));
        return fetch(input, init);
      },
    });
    const bob = await registeredUser(dev, uniqueName("bob"));
    const env = await bob.client.encrypt(text("for alice's every device"), [alice.id]);
    const password = "correct horse battery staple";
    const info = await alice.client.backupPrivateKey(password);
    assert.equal(info.version, 1n);
    assert.equal(info.kdf?.time, 3);
    assert.equal(info.kdf?.memoryKib, 65536);
    assert.equal(info.kdf?.threads, 4);
    // Nothing secret reached the wire: not the password, in any spelling.
    const pwB64 = Buffer.from(password).toString("base64");
    for (const b of bodies) {
      assert.ok(!b.includes(password) && !b.includes(pwB64), "the password never leaves the client");
    }
    assert.deepEqual((await alice.client.backups()).map((b) => b.slot), [1]);

    const device = await openUser(dev, alice.name);
    const wrong = await device.client.restorePrivateKey("not it").catch((e: unknown) => e);
    assert.ok(wrong instanceof WrongPasswordError, String(wrong));
    assert.equal(wrong.remaining, 9);
    assert.equal(wrong.slot, "password");
    assert.equal(device.client.hasPrivateKey, false);
    await device.client.restorePrivateKey(password);
    assert.deepEqual(device.client.current().cardId, alice.client.current().cardId);
    assert.equal(str(await device.client.decrypt(env, bob.id)), "for alice's every device");
    const again = await device.client.restorePrivateKey(password).catch((e: unknown) => e);
    assert.ok(hasKind(again, UmbraErrorKind.KeysPresent), String(again));

    // alice rotates on her first device and backs up again: the backup now holds both keys.
    await alice.client.rotateKeys();
    await alice.client.backupPrivateKey(password);
    // The second device lacks the new key: its backup would drop it, so it is refused.
    const missing = await device.client.backupPrivateKey(password).catch((e: unknown) => e);
    assert.ok(hasKind(missing, UmbraErrorKind.BackupMissesKeys), String(missing));
    const wrongAgain = await alice.client.backupPrivateKey("not it either").catch((e: unknown) => e);
    assert.ok(wrongAgain instanceof WrongPasswordError, String(wrongAgain));

    await alice.client.changePassword(password, "new password, longer");
    const third = await openUser(dev, alice.name);
    const old = await third.client.restorePrivateKey(password).catch((e: unknown) => e);
    assert.ok(hasKind(old, UmbraErrorKind.WrongPassword), String(old));
    await third.client.restorePrivateKey("new password, longer");
    assert.ok(third.client.ks!.keyFor(device.client.current().cardId), "the restored bundle holds the older key too");
    await alice.client.resetBackup();
    const gone = await openUser(dev, alice.name);
    const none = await gone.client.restorePrivateKey("new password, longer").catch((e: unknown) => e);
    assert.ok(hasKind(none, UmbraErrorKind.NoBackup), String(none));
  });

  test("recovery keys restore, whatever their case and dashes", async () => {
    const alice = await registeredUser(dev, uniqueName("alice"));
    const key = await alice.client.createRecoveryKey();
    assert.match(key, /^([0-9A-HJKMNP-TV-Z]{4}-){8}[0-9A-HJKMNP-TV-Z]{4}$/);
    const device = await openUser(dev, alice.name);
    const typo = await device.client.restoreFromRecoveryKey(key.slice(0, -1) + (key.endsWith("0") ? "1" : "0")).catch((e: unknown) => e);
    assert.ok(hasKind(typo, KeyBackupErrorKind.RecoveryKey), `a typo is caught before anything is sent: ${String(typo)}`);
    await device.client.restoreFromRecoveryKey(key.toLowerCase().replace(/-/g, " "));
    assert.deepEqual(device.client.current().cardId, alice.client.current().cardId);
    await alice.client.deleteRecoveryKey();
    const after = await openUser(dev, alice.name);
    const none = await after.client.restoreFromRecoveryKey(key).catch((e: unknown) => e);
    assert.ok(hasKind(none, UmbraErrorKind.NoBackup), String(none));
  });

  test("a record the service altered is refused as tampered", async () => {
    const alice = await registeredUser(dev, uniqueName("alice"));
    const key = await alice.client.createRecoveryKey();
    const device = await openUser(dev, alice.name, {
      fetch: async (input, init) => {
        const res = await fetch(input, init);
        if (!String(input).includes("/v1/backups:restore") || !res.ok) return res;
        const json = (await res.json()) as { ciphertext: string };
        const b = Buffer.from(json.ciphertext, "base64");
        b[0] ^= 1;
        json.ciphertext = b.toString("base64");
        return new Response(JSON.stringify(json), { status: 200, headers: res.headers });
      },
    });
    const err = await device.client.restoreFromRecoveryKey(key).catch((e: unknown) => e);
    assert.ok(hasKind(err, UmbraErrorKind.BackupTampered), String(err));
    assert.equal(device.client.hasPrivateKey, false);
  });

  test("a restored keystore is kept in a folder encrypted under the passphrase", async () => {
    const dir = await mkdtemp(join(tmpdir(), "umbra-ts-backup-"));
    try {
      const alice = await registeredUser(dev, uniqueName("alice"));
      const key = await alice.client.createRecoveryKey();
      const storage = new FileStorage(join(dir, "alice"));
      const device = await openUser(dev, alice.name, { storage, passphrase: "device passphrase" });
      await device.client.restoreFromRecoveryKey(key);
      const reopened = await UmbraClient.open({ baseUrl: dev.baseUrl, token: dev.tokenProvider(alice.id), storage, passphrase: "device passphrase" });
      assert.deepEqual(reopened.current().cardId, alice.client.current().cardId);
      assert.equal(reopened.ks!.encrypted, true);
      const wrong = await UmbraClient.open({ baseUrl: dev.baseUrl, token: dev.tokenProvider(alice.id), storage, passphrase: "another" }).catch((e: unknown) => e);
      assert.ok(hasKind(wrong, E2eeErrorKind.Passphrase), String(wrong));
      const none = await UmbraClient.open({ baseUrl: dev.baseUrl, token: dev.tokenProvider(alice.id), storage, noPassphrase: true }).catch((e: unknown) => e);
      assert.ok(hasKind(none, E2eeErrorKind.Passphrase), String(none));
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});
