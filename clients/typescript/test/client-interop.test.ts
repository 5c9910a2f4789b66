// Interoperability with the Go CLI (the `umbra` binary built from this tree), both ways,
// against one umbra dev: TypeScript encrypts and the Go CLI decrypts, and the reverse;
// direct messages sent by one and read by the other; a group created in Go that
// TypeScript reads and writes, and the reverse; a backup made in one restored in the
// other; and the Go CLI's keystore and pin file opened by the TypeScript SDK.

import assert from "node:assert/strict";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { UmbraClient } from "../src/client/client.js";
import { FileStorage } from "../src/storage/file.js";
import { openUser, registeredUser, uniqueName, type User } from "./support/clients.js";
import { DevServer } from "./support/devserver.js";

const text = (s: string) => new TextEncoder().encode(s);
const str = (b: Uint8Array) => new TextDecoder().decode(b);
const goPassphrase = "go keystore passphrase";

describe("interop with the Go CLI against umbra dev", () => {
  let dev: DevServer;
  let home: string;
  let goName: string;
  let goId: string;
  let bob: User;
  /** Runs the Go CLI as goName (or as name) in home. */
  const go = (args: string[], opts: { input?: string; env?: Record<string, string>; as?: string; home?: string } = {}) => {
    const [sub, ...rest] = args;
    const nested = ["group", "keys", "backup", "card", "trust"].includes(sub!);
    const full = nested ? [sub!, rest[0]!, "--user", opts.as ?? goName, ...rest.slice(1)] : [sub!, "--user", opts.as ?? goName, ...rest];
    return dev.cli(opts.home ?? home, full, { input: opts.input ?? "", env: { UMBRA_PASSPHRASE: goPassphrase, ...opts.env } });
  };

  before(async () => {
    dev = await DevServer.start();
    home = await mkdtemp(join(tmpdir(), "umbra-ts-interop-"));
    goName = uniqueName("goalice");
    goId = await dev.identity(goName);
    await dev.cli(home, ["login", goName], { env: { UMBRA_PASSPHRASE: goPassphrase } });
    await go(["keys", "init"]);
    bob = await registeredUser(dev, uniqueName("tsbob"));
  });
  after(async () => {
    await dev?.stop();
    if (home) await rm(home, { recursive: true, force: true });
  });

  test("TypeScript encrypts, the Go CLI decrypts", async () => {
    const env = await bob.client.encrypt(text("from TypeScript to Go"), [goId]);
    const out = await go(["decrypt", "--from", bob.id], { input: Buffer.from(env).toString("base64") });
    assert.equal(out.trim(), "from TypeScript to Go");
  });

  test("the Go CLI encrypts, TypeScript decrypts", async () => {
    const out = await go(["encrypt", "--to", bob.id, "from Go to TypeScript"]);
    const env = new Uint8Array(Buffer.from(out.trim(), "base64"));
    assert.equal(str(await bob.client.decrypt(env, goId)), "from Go to TypeScript");
  });

  test("direct messages both ways: Go send, TypeScript inbox; TypeScript sendTo, Go listen", async () => {
    await go(["send", "--to", bob.id, "hello from go"]);
    await bob.client.sendTo(goId, text("hello from ts"));
    const ctl = new AbortController();
    let got = "";
    for await (const it of bob.client.inbox({ fromStart: true, signal: ctl.signal })) {
      if (it.item.case === "message" && it.item.value.sender === goId) {
        got = str(await bob.client.openMessage(it.item.value));
        break;
      }
    }
    ctl.abort();
    assert.equal(got, "hello from go");
    const listened = await go(["listen", "--from-start", "--until-caught-up"]);
    assert.match(listened, new RegExp(`${bob.id}: hello from ts`));
  });

  test("a group created in Go, read and written by TypeScript", async () => {
    const gid = await dev.groupIdentity(uniqueName("go-group"));
    await go(["group", "create", "--members", bob.id, gid]);
    await go(["group", "send", gid, "group hello from go"]);
    const g = bob.client.group(gid);
    const m = await g.membership();
    assert.deepEqual(m.members(), [goId, bob.id].sort(), "the Go-signed chain verifies in TypeScript");
    const page = await bob.client.history({ conversationId: gid, afterSequence: 0n });
    assert.equal(str(await bob.client.openMessage(page.messages[0]!)), "group hello from go");
    await g.send(text("group reply from ts"));
    const hist = await go(["group", "history", gid]);
    assert.match(hist, /group hello from go/);
    assert.match(hist, new RegExp(`${bob.id}: group reply from ts`));
  });

  test("a group created in TypeScript, read and written by the Go CLI, rotated in TypeScript", async () => {
    const gid = await dev.groupIdentity(uniqueName("ts-group"));
    const carol = await registeredUser(dev, uniqueName("tscarol"));
    const g = await bob.client.createGroup(gid, { members: [goId] });
    await g.send(text("group hello from ts"));
    const hist = await go(["group", "history", gid]);
    assert.match(hist, /group hello from ts/);
    await go(["group", "send", gid, "group reply from go"]);
    const page = await bob.client.history({ conversationId: gid, afterSequence: 0n });
    assert.equal(str(await bob.client.openMessage(page.messages[1]!)), "group reply from go");
    // A membership change made in TypeScript, the rotation it forces, and Go reading on.
    await g.add([carol.id]);
    await g.send(text("after carol joined"));
    assert.equal((await g.info()).epoch, 2n);
    assert.match(await go(["group", "history", gid]), /after carol joined/);
    const members = await go(["group", "members", gid]);
    assert.match(members, /3 members, verified from 2 signed membership statements/);
  });

  test("a backup made in Go restored in TypeScript, and one made in TypeScript restored in Go", async () => {
    // Go backs up; a TypeScript device of the same user restores and reads.
    const password = "shared backup password";
    await go(["backup", "create"], { env: { UMBRA_BACKUP_PASSWORD: password } });
    const env = await bob.client.encrypt(text("for the Go user's keys"), [goId]);
    const tsDevice = await openUser(dev, goName);
    await tsDevice.client.restorePrivateKey(password);
    assert.equal(str(await tsDevice.client.decrypt(env, bob.id)), "for the Go user's keys");
    // TypeScript backs up; the Go CLI restores on a new machine (another home) and reads.
    await bob.client.backupPrivateKey(password);
    const toBob = await go(["encrypt", "--to", bob.id, "for the TypeScript user's keys"]);
    const home2 = await mkdtemp(join(tmpdir(), "umbra-ts-interop-"));
    try {
      await dev.cli(home2, ["login", bob.name], { env: { UMBRA_PASSPHRASE: goPassphrase } });
      await go(["backup", "restore"], { as: bob.name, home: home2, env: { UMBRA_BACKUP_PASSWORD: password } });
      const out = await go(["decrypt", "--from", goId], { as: bob.name, home: home2, input: toBob });
      assert.equal(out.trim(), "for the TypeScript user's keys");
      // A recovery key made in TypeScript restores in Go too.
      const key = await bob.client.createRecoveryKey();
      const home3 = await mkdtemp(join(tmpdir(), "umbra-ts-interop-"));
      try {
        await dev.cli(home3, ["login", bob.name], { env: { UMBRA_PASSPHRASE: goPassphrase } });
        await go(["backup", "restore", "--recovery-key"], { as: bob.name, home: home3, env: { UMBRA_BACKUP_RECOVERY_KEY: key } });
        assert.equal((await go(["decrypt", "--from", goId], { as: bob.name, home: home3, input: toBob })).trim(), "for the TypeScript user's keys");
      } finally {
        await rm(home3, { recursive: true, force: true });
      }
    } finally {
      await rm(home2, { recursive: true, force: true });
    }
  });

  test("the Go CLI's keystore and pin file open in TypeScript, and Go reads the pins TypeScript writes", async () => {
    const storage = new FileStorage(join(home, "profiles", goName));
    const c = await UmbraClient.open({ baseUrl: dev.baseUrl, token: dev.tokenProvider(goId), storage, passphrase: goPassphrase });
    assert.equal(c.hasPrivateKey, true);
    assert.equal(c.ks!.identity, goId);
    // Go pinned bob's card when it first encrypted to him; TypeScript reads that pin.
    const pin = c.pins.contact(bob.id);
    assert.ok(pin, "the Go CLI's pin of bob");
    assert.equal(pin.chain[pin.chain.length - 1]!.how, "first-use");
    // TypeScript pins a new contact into the same file; Go reads it on.
    const dave = await registeredUser(dev, uniqueName("tsdave"));
    const env = await c.encrypt(text("written by TypeScript with Go's keys"), [dave.id]);
    assert.equal(str(await dave.client.decrypt(env, goId)), "written by TypeScript with Go's keys");
    assert.ok(c.pins.contact(dave.id));
    // TypeScript marks dave verified in the pin file; the Go CLI shows what TypeScript wrote.
    const sn = await c.safetyNumber(dave.id);
    await c.verifyContact(dave.id, sn);
    const trust = await go(["trust", "show", dave.id]);
    assert.match(trust, new RegExp(`safety number  ${sn}`));
    assert.match(trust, /verified {7}yes/);
  });
});
