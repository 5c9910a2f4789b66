// Groups end to end against umbra dev: create, membership flows with signed statements
// (add, remove, invite/accept, join/approve, roles, ownership, leave), automatic
// rotation after membership changes, a removed member locked out of later epochs,
// concurrent changes retried on MembershipConflict, and a tampering proxy's chain and
// commits refused.

import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { UmbraClient } from "../src/client/client.js";
import { hasKind, UmbraErrorKind } from "../src/client/errors.js";
import { E2eeErrorKind } from "../src/errors.js";
import { EncryptionMode, GroupRole } from "../src/gen/umbra/group/v1/group_pb.js";
import { MembershipRole } from "../src/group-membership.js";
import { newEpochKey, signEpochCommit, wrapEpochKeys } from "../src/group-epoch.js";
import { registeredUser, uniqueName, type User } from "./support/clients.js";
import { DevServer } from "./support/devserver.js";

const text = (s: string) => new TextEncoder().encode(s);
const str = (b: Uint8Array) => new TextDecoder().decode(b);

describe("groups against umbra dev", () => {
  let dev: DevServer;
  before(async () => {
    dev = await DevServer.start();
  });
  after(async () => {
    await dev?.stop();
  });

  /** The group messages in the conversation, opened by u, oldest first. */
  async function read(u: User, groupId: string): Promise<string[]> {
    const page = await u.client.history({ conversationId: groupId, afterSequence: 0n });
    return Promise.all(page.messages.map(async (m) => str(await u.client.openMessage(m)).toString()));
  }

  test("create, send and read; add rotates the key; a removed member is locked out", async () => {
    const alice = await registeredUser(dev, uniqueName("alice"));
    const bob = await registeredUser(dev, uniqueName("bob"));
    const carol = await registeredUser(dev, uniqueName("carol"));
    const gid = await dev.groupIdentity(uniqueName("team"));
    const g = await alice.client.createGroup(gid, { members: [bob.id] });
    const m = await g.membership();
    assert.deepEqual(m.members(), [alice.id, bob.id].sort());
    assert.equal(m.role(alice.id), MembershipRole.OWNER);
    const first = await g.send(text("hi bob"));
    assert.equal(first.sequence, 1n);
    await bob.client.group(gid).send(text("hi alice"));
    assert.deepEqual(await read(bob, gid), ["hi bob", "hi alice"]);
    assert.deepEqual(await read(alice, gid), ["hi bob", "hi alice"]);
    const epoch1 = (await g.info()).epoch;
    assert.equal(epoch1, 1n);

    assert.deepEqual(await g.add([carol.id, bob.id]), [carol.id], "a member already is left out of the statement");
    await g.send(text("welcome carol"));
    assert.equal((await g.info()).epoch, 2n, "the membership change made the next message rotate");
    // carol joined after the first messages: with history visible since join she is
    // served the new one only, and the epoch 1 key is not hers to fetch.
    const all = (await carol.client.history({ conversationId: gid, afterSequence: 0n })).messages;
    assert.deepEqual(all.map((x) => x.sequence), [3n]);
    assert.equal(str(await carol.client.openMessage(all[0]!)), "welcome carol");
    const older = (await alice.client.history({ conversationId: gid, afterSequence: 0n })).messages[0]!;
    const refused = await carol.client.openMessage(older).catch((e: unknown) => e);
    assert.ok(hasKind(refused, E2eeErrorKind.NotMember) || hasKind(refused, E2eeErrorKind.WrongEpoch), String(refused));

    await g.remove(bob.id);
    await g.send(text("bob is gone"));
    assert.equal((await g.info()).epoch, 3n);
    const late = (await alice.client.history({ conversationId: gid, afterSequence: 3n })).messages[0]!;
    const locked = await bob.client.group(gid).decrypt(late.envelope, alice.id).catch((e: unknown) => e);
    assert.ok(hasKind(locked, E2eeErrorKind.NotMember) || hasKind(locked, E2eeErrorKind.WrongEpoch), String(locked));
    assert.equal(str(await carol.client.openMessage(late)), "bob is gone");
  });

  test("invite and accept, join and approve, roles, ownership, leave", async () => {
    const alice = await registeredUser(dev, uniqueName("alice"));
    const bob = await registeredUser(dev, uniqueName("bob"));
    const carol = await registeredUser(dev, uniqueName("carol"));
    const gid = await dev.groupIdentity(uniqueName("club"));
    const g = await alice.client.createGroup(gid);
    await g.invite(bob.id, 3600_000);
    assert.deepEqual((await bob.client.invitations()).map((i) => i.groupId), [gid]);
    await bob.client.acceptInvitation(gid);
    await carol.client.requestJoin(gid);
    assert.deepEqual((await g.joinRequests()).map((r) => r.identity), [carol.id]);
    await g.approveJoin(carol.id);
    await g.setRole(bob.id, GroupRole.ADMIN);
    let m = await g.membership();
    assert.equal(m.role(bob.id), MembershipRole.ADMIN);
    assert.equal(m.role(carol.id), MembershipRole.MEMBER);
    await carol.client.group(gid).send(text("from carol"));
    assert.deepEqual(await read(bob, gid), ["from carol"]);
    await g.transferOwnership(bob.id);
    m = await bob.client.group(gid).membership();
    assert.equal(m.owner(), bob.id);
    assert.equal(m.role(alice.id), MembershipRole.ADMIN);
    const left = await bob.client.group(gid).leave();
    assert.equal(left.newOwner, alice.id, "the longest-serving admin");
    assert.equal(left.groupDeleted, false);
    assert.equal((await alice.client.group(gid).membership()).owner(), alice.id);
    await alice.client.group(gid).send(text("after bob left"));
    assert.deepEqual((await read(carol, gid)).slice(-1), ["after bob left"]);
    await alice.client.group(gid).ban(carol.id);
    assert.equal((await alice.client.group(gid).membership()).banned(carol.id), true);
    await g.setEncryptionMode(EncryptionMode.OPTIONAL);
    await g.sendPlaintext(text("plain"));
    assert.deepEqual((await read(alice, gid)).slice(-1), ["plain"]);
  });

  test("concurrent membership changes are signed again after MembershipConflict", async () => {
    const alice = await registeredUser(dev, uniqueName("alice"));
    const bob = await registeredUser(dev, uniqueName("bob"));
    const gid = await dev.groupIdentity(uniqueName("busy"));
    const g = await alice.client.createGroup(gid, { members: [bob.id] });
    await g.setRole(bob.id, GroupRole.ADMIN);
    const others = await Promise.all([1, 2, 3, 4].map(() => registeredUser(dev, uniqueName("m"))));
    // alice and bob add members at the same time: one of each pair loses the race to
    // the same chain position, verifies the other's statement and signs again.
    await Promise.all([
      g.add([others[0]!.id]),
      bob.client.group(gid).add([others[1]!.id]),
      g.add([others[2]!.id]),
      bob.client.group(gid).add([others[3]!.id]),
    ]);
    const m = await g.membership();
    for (const o of others) assert.equal(m.role(o.id), MembershipRole.MEMBER);
    await bob.client.group(gid).send(text("all here"));
    for (const o of others) assert.deepEqual(await read(o, gid), ["all here"]);
  });

  test("a tampering proxy's membership chain and epoch commits are refused", async () => {
    const alice = await registeredUser(dev, uniqueName("alice"));
    const bob = await registeredUser(dev, uniqueName("bob"));
    const gid = await dev.groupIdentity(uniqueName("watched"));
    const g = await alice.client.createGroup(gid, { members: [bob.id] });
    await g.send(text("secret"));
    const flip = (b64: string) => {
      const b = Buffer.from(b64, "base64");
      b[b.length - 1] ^= 1;
      return b.toString("base64");
    };
    const proxied = (route: string, mutate: (json: Record<string, unknown>) => void): typeof fetch => async (input, init) => {
      const res = await fetch(input, init);
      if (!String(input).includes(route)) return res;
      const json = (await res.json()) as Record<string, unknown>;
      mutate(json);
      return new Response(JSON.stringify(json), { status: res.status, headers: res.headers });
    };
    const cases: [string, string, (j: Record<string, unknown>) => void, string][] = [
      [
        "a forged statement signature",
        "/membership",
        (j) => {
          const st = (j["statements"] as { signature: string }[])[0]!;
          st.signature = flip(st.signature);
        },
        E2eeErrorKind.BadSignature,
      ],
      [
        "a statement dropped",
        "/membership",
        (j) => {
          (j["statements"] as unknown[]).splice(0, 1);
        },
        E2eeErrorKind.BrokenChain,
      ],
      [
        "a forged epoch commit",
        "/epoch-keys",
        (j) => {
          for (const k of j["keys"] as { commit: { commit: { signature: string } } }[]) k.commit.commit.signature = flip(k.commit.commit.signature);
        },
        E2eeErrorKind.BadSignature,
      ],
    ];
    const page = await alice.client.history({ conversationId: gid, afterSequence: 0n });
    for (const [what, route, mutate, kind] of cases) {
      // bob's keys, seen through the proxy by a client that has verified nothing yet.
      const bobView = await UmbraClient.open({
        baseUrl: dev.baseUrl,
        token: dev.tokenProvider(bob.id),
        storage: bob.client.cfg.storage,
        noPassphrase: true,
        fetch: proxied(route, mutate),
      });
      const err = await bobView.openMessage(page.messages[0]!).catch((e: unknown) => e);
      assert.ok(hasKind(err, kind), `${what}: ${String(err)}`);
      if (route === "/membership") assert.ok(hasKind(err, UmbraErrorKind.MembershipChain), `${what}: ${String(err)}`);
    }
    assert.equal(str(await bob.client.openMessage(page.messages[0]!)), "secret", "through the real server it opens");
  });

  test("an epoch commit is accepted only for a head of the verified chain, signed by a member at it", async () => {
    const alice = await registeredUser(dev, uniqueName("alice"));
    const bob = await registeredUser(dev, uniqueName("bob"));
    const mallory = await registeredUser(dev, uniqueName("mallory"));
    const gid = await dev.groupIdentity(uniqueName("heads"));
    const g = await alice.client.createGroup(gid, { members: [bob.id] });
    await g.send(text("secret"));
    const m = await g.membership();
    const bobCard = (await alice.client.findCards([bob.id])).get(bob.id)!;
    // Commits of epoch 1 that the proxy serves instead of the real one, each validly
    // signed by a real card: alice's naming a head outside the chain, and mallory's (no
    // member) naming the real head.
    const forged = async (who: typeof alice, head: { sequence: bigint; hash: Uint8Array }) => {
      const key = newEpochKey();
      const wrapped = await wrapEpochKeys(gid, 1n, key, [bobCard]);
      const { kp, cardId } = who.client.current();
      return { commit: signEpochCommit(kp, cardId, gid, 1n, key, wrapped, undefined, head, new Date()), wrapped: wrapped[0]! };
    };
    const b64 = (b: Uint8Array) => Buffer.from(b).toString("base64");
    const cases: [string, Awaited<ReturnType<typeof forged>>, (err: unknown) => boolean][] = [
      ["a head outside the chain", await forged(alice, { sequence: 1n, hash: new Uint8Array(32).fill(7) }), (e) => hasKind(e, UmbraErrorKind.MembershipChain) && hasKind(e, E2eeErrorKind.BrokenChain)],
      ["a signer who is no member", await forged(mallory, { sequence: m.sequence, hash: m.head! }), (e) => hasKind(e, E2eeErrorKind.NotMember)],
    ];
    const page = await alice.client.history({ conversationId: gid, afterSequence: 0n });
    for (const [what, f, ok] of cases) {
      const bobView = await UmbraClient.open({
        baseUrl: dev.baseUrl,
        token: dev.tokenProvider(bob.id),
        storage: bob.client.cfg.storage,
        noPassphrase: true,
        fetch: async (input, init) => {
          const res = await fetch(input, init);
          if (!String(input).includes("/epoch-keys")) return res;
          const json = (await res.json()) as { keys: { commit: { commit: unknown; committedBy: string }; wrappedKey: unknown }[] };
          for (const k of json.keys) {
            k.commit.commit = { content: b64(f.commit.content), signature: b64(f.commit.signature) };
            k.commit.committedBy = "";
            k.wrappedKey = { recipientCardId: b64(f.wrapped.recipientCardId), enc: b64(f.wrapped.enc), ciphertext: b64(f.wrapped.ciphertext) };
          }
          return new Response(JSON.stringify(json), { status: res.status, headers: res.headers });
        },
      });
      const err = await bobView.openMessage(page.messages[0]!).catch((e: unknown) => e);
      assert.ok(ok(err), `${what}: ${String(err)}`);
    }
  });
});
