// Cards and trust end to end against a real umbra dev: publish, find with full
// verification, rotate with endorsement, revoke, history, reset with a grant; pins,
// key changes (both fingerprints, refuse and warn), safety numbers, verified contacts,
// pinned service keys; and a tampering proxy whose cards are refused.

import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { UmbraClient } from "../src/client/client.js";
import { hasKind, KeyChangedError, UmbraErrorKind } from "../src/client/errors.js";
import { CardService, CardStatus } from "../src/gen/umbra/card/v1/card_pb.js";
import { MemoryStorage } from "../src/storage/storage.js";
import { RestTransport } from "../src/transport/rest.js";
import { safetyNumber } from "../src/trust.js";
import { registeredUser, openUser, uniqueName } from "./support/clients.js";
import { DevServer } from "./support/devserver.js";

describe("cards and trust against umbra dev", () => {
  let dev: DevServer;
  before(async () => {
    dev = await DevServer.start();
  });
  after(async () => {
    await dev?.stop();
  });

  test("register publishes a verified card that others find, once", async () => {
    const alice = await registeredUser(dev, uniqueName("alice"));
    const bob = await registeredUser(dev, uniqueName("bob"));
    const found = await bob.client.findCards([alice.id, "u_" + "z".repeat(32)]);
    assert.equal(found.size, 1, "an identity without a card is absent");
    const card = found.get(alice.id)!;
    assert.equal(card.identity, alice.id);
    assert.equal(card.status, CardStatus.ACTIVE);
    assert.deepEqual(card.id, alice.client.current().cardId);
    assert.match(card.fingerprint, /^([0-9a-f]{4} ){5}[0-9a-f]{4}$/);
    assert.deepEqual((await bob.client.cardById(card.id)).id, card.id);
    const err = await alice.client.register().catch((e: unknown) => e);
    assert.ok(hasKind(err, UmbraErrorKind.AlreadyRegistered), String(err));
    // Another device of alice without her keys cannot publish over her active card.
    const other = await openUser(dev, alice.name);
    const err2 = await other.client.register().catch((e: unknown) => e);
    assert.ok(hasKind(err2, UmbraErrorKind.AlreadyRegistered), String(err2));
    assert.equal(await new MemoryStorage().get("keystore"), undefined);
    assert.equal(other.client.hasPrivateKey, false, "the refused keys are not kept");
  });

  test("rotation is endorsed, followed by contacts, and listed in the history", async () => {
    const alice = await registeredUser(dev, uniqueName("alice"));
    const bob = await registeredUser(dev, uniqueName("bob"));
    const first = (await bob.client.trustedCards([alice.id])).get(alice.id)!;
    const rotated = await alice.client.rotateKeys();
    assert.equal(rotated.endorsed, true);
    assert.deepEqual(rotated.previousCardId, first.id);
    assert.ok(alice.client.ks!.keyFor(first.id), "the old key stays for old messages");
    const now = (await bob.client.trustedCards([alice.id])).get(alice.id)!;
    assert.deepEqual(now.id, rotated.id);
    assert.equal(now.endorsed, true, "chained by an endorsement bob verified");
    const ct = await bob.client.contact(alice.id);
    assert.deepEqual(
      ct.chain.map((c) => c.how),
      ["first-use", "endorsed"],
    );
    const history = await bob.client.cardHistory(alice.id);
    assert.equal(history.length, 2);
    assert.deepEqual(history[0]!.id, rotated.id, "newest first");
    assert.equal(history[0]!.endorsed, true);
    assert.equal(history[1]!.status, CardStatus.SUPERSEDED);
    assert.ok(history[1]!.supersededAt);
    assert.equal((await bob.client.verifyEndorsement(history[0]!)).endorsed, true);
    const err = await bob.client.verifyEndorsement(history[1]!).catch((e: unknown) => e);
    assert.ok(hasKind(err, UmbraErrorKind.BadEndorsement), String(err));
  });

  test("a reset is a key change, refused with both fingerprints until accepted", async () => {
    const alice = await registeredUser(dev, uniqueName("alice"));
    const changes: KeyChangedError[] = [];
    const events: KeyChangedError[] = [];
    const bob = await registeredUser(dev, uniqueName("bob"), { onKeyChange: (c) => changes.push(c) });
    bob.client.addEventListener("keychange", (e) => events.push((e as CustomEvent<KeyChangedError>).detail));
    const old = (await bob.client.trustedCards([alice.id])).get(alice.id)!;
    // alice lost every key: the app backend gives her a reset grant.
    const lost = await openUser(dev, alice.name);
    const grant = await dev.issueResetGrant(alice.id);
    const reset = await lost.client.resetKeys(grant);
    assert.equal(reset.keyReset, true);
    const err = await bob.client.trustedCards([alice.id]).catch((e: unknown) => e);
    assert.ok(err instanceof KeyChangedError, String(err));
    assert.ok(hasKind(err, UmbraErrorKind.KeyChanged));
    assert.equal(err.reason, "reset");
    assert.equal(err.identity, alice.id);
    assert.deepEqual(err.oldCardId, old.id);
    assert.deepEqual(err.newCardId, reset.id);
    assert.equal(err.oldFingerprint, old.fingerprint);
    assert.equal(err.newFingerprint, reset.fingerprint);
    assert.equal(changes.length, 1);
    assert.equal(events.length, 1);
    const ct = await bob.client.contact(alice.id);
    assert.equal(ct.pending?.reason, "reset");
    assert.deepEqual(ct.pending?.cardId, reset.id);
    // The safety number to compare is the one with the new key, which alice computes too.
    assert.equal(ct.pending?.safetyNumber, await lost.client.safetyNumber(bob.id));
    assert.notEqual(ct.safetyNumber, ct.pending?.safetyNumber);
    const accepted = await bob.client.acceptKeyChange(alice.id);
    assert.deepEqual(accepted.newCardId, reset.id);
    assert.deepEqual((await bob.client.trustedCards([alice.id])).get(alice.id)!.id, reset.id);
    const none = await bob.client.acceptKeyChange(alice.id).catch((e: unknown) => e);
    assert.ok(hasKind(none, UmbraErrorKind.NoKeyChange), String(none));
  });

  test("under the warn policy a key change is pinned and reported, except for a verified contact", async () => {
    const alice = await registeredUser(dev, uniqueName("alice"));
    const carol = await registeredUser(dev, uniqueName("carol"));
    const changes: KeyChangedError[] = [];
    const bob = await registeredUser(dev, uniqueName("bob"), { keyChangePolicy: "warn", onKeyChange: (c) => changes.push(c) });
    await bob.client.trustedCards([alice.id, carol.id]);
    // bob verifies carol (after comparing the safety number), not alice.
    const sn = await bob.client.safetyNumber(carol.id);
    assert.equal(sn, await carol.client.safetyNumber(bob.id), "both sides compute the same number");
    assert.equal(sn, safetyNumber(bob.id, bob.client.current().kp.signingPublicKey, carol.id, carol.client.current().kp.signingPublicKey));
    const wrong = await bob.client.verifyContact(carol.id, "1".repeat(60)).catch((e: unknown) => e);
    assert.ok(wrong instanceof Error && /not the safety number/.test(wrong.message), String(wrong));
    await bob.client.verifyContact(carol.id, sn.replace(/ /g, ""));
    assert.equal((await bob.client.contact(carol.id)).verified, true);
    for (const u of [alice, carol]) {
      const lost = await openUser(dev, u.name);
      await lost.client.resetKeys(await dev.issueResetGrant(u.id));
    }
    const err = await bob.client.trustedCards([alice.id, carol.id]).catch((e: unknown) => e);
    assert.ok(err instanceof KeyChangedError && err.identity === carol.id && err.verified, String(err));
    assert.equal(changes.length, 2, "both changes reported");
    const ct = await bob.client.contact(alice.id);
    assert.equal(ct.chain[ct.chain.length - 1]!.how, "warned", "alice's new card pinned under warn");
    assert.equal(ct.pending, undefined);
  });

  test("revoke, then a new card is a reset that needs a grant", async () => {
    const alice = await registeredUser(dev, uniqueName("alice"));
    const bob = await registeredUser(dev, uniqueName("bob"));
    const id = alice.client.current().cardId;
    await alice.client.revokeCard();
    assert.equal((await bob.client.findCards([alice.id])).size, 0);
    const revoked = await bob.client.cardById(id);
    assert.equal(revoked.status, CardStatus.REVOKED);
    assert.ok(revoked.revokedAt);
    const err = await alice.client.publishCard().catch((e: unknown) => e);
    assert.ok(hasKind(err, UmbraErrorKind.ResetGrantRequired), String(err));
    assert.deepEqual(alice.client.current().cardId, id, "the keystore is back as it was");
    const card = await alice.client.resetKeys(await dev.issueResetGrant(alice.id));
    assert.deepEqual(alice.client.current().cardId, card.id);
    assert.ok(alice.client.ks!.keyFor(id), "the revoked card's key stays for old messages");
    await alice.client.unregister();
    assert.equal(alice.client.hasPrivateKey, false);
    const noKey = await alice.client.rotateKeys().catch((e: unknown) => e);
    assert.ok(hasKind(noKey, UmbraErrorKind.NoPrivateKey), String(noKey));
  });

  test("service keys: shipped keys are trusted, another key is refused", async () => {
    const alice = await registeredUser(dev, uniqueName("alice"));
    const t = new RestTransport({ baseUrl: dev.baseUrl });
    const keys = (await t.unary(CardService.method.getServiceKey, {}, { auth: "none" })).keys;
    const shipped = await openUser(dev, uniqueName("bob"), { serviceKeys: keys.map((k) => ({ keyId: k.keyId, publicKey: k.publicKey })) });
    assert.equal((await shipped.client.findCards([alice.id])).size, 1);
    const forged = await openUser(dev, uniqueName("bob"), { serviceKeys: [{ keyId: "another-key", publicKey: keys[0]!.publicKey }] });
    const err = await forged.client.findCards([alice.id]).catch((e: unknown) => e);
    assert.ok(hasKind(err, UmbraErrorKind.UnknownServiceKey), String(err));
    // First use pins every listed key into the pin file.
    const tofu = await openUser(dev, uniqueName("bob"));
    await tofu.client.findCards([alice.id]);
    assert.deepEqual(
      tofu.client.pins.snapshot().serviceKeys.map((k) => [k.keyId, k.source]),
      keys.map((k) => [k.keyId, "first-use"]),
    );
  });

  test("a tampering proxy's cards are refused", async () => {
    const alice = await registeredUser(dev, uniqueName("alice"));
    // Lookups go through SearchCardsWithProofs: the proxy changes the card beside the proof.
    const tamper = (mutate: (card: Record<string, unknown>) => void): typeof fetch => async (input, init) => {
      const res = await fetch(input, init);
      if (!String(input).includes("/v1/cards:search-with-proofs")) return res;
      const json = (await res.json()) as { results: { card?: Record<string, unknown> }[] };
      for (const r of json.results) if (r.card) mutate(r.card);
      return new Response(JSON.stringify(json), { status: res.status, headers: res.headers });
    };
    const flip = (b64: unknown) => {
      const b = Buffer.from(String(b64), "base64");
      b[b.length - 1] ^= 1;
      return b.toString("base64");
    };
    const cases: [string, (c: Record<string, unknown>) => void, UmbraErrorKind][] = [
      ["service signature", (c) => (c["serviceSignature"] = flip(c["serviceSignature"])), UmbraErrorKind.UntrustedCard],
      ["self-signature", (c) => (c["selfSignature"] = flip(c["selfSignature"])), UmbraErrorKind.UntrustedCard],
      ["content", (c) => (c["content"] = flip(c["content"])), UmbraErrorKind.UntrustedCard],
      // Another id is not the card the map names.
      ["card id", (c) => (c["cardId"] = flip(c["cardId"])), UmbraErrorKind.UnprovedCard],
      ["identity it is filed under", (c) => (c["identity"] = "u_" + "q".repeat(32)), UmbraErrorKind.UntrustedCard],
    ];
    // The directory must have the card proved first (a checkpoint after alice's).
    await (await openUser(dev, uniqueName("bob"))).client.findCards([alice.id]);
    for (const [what, mutate, kind] of cases) {
      const bob = await UmbraClient.open({
        baseUrl: dev.baseUrl,
        token: dev.tokenProvider(await dev.identity("tamper-bob")),
        storage: new MemoryStorage(),
        noPassphrase: true,
        fetch: tamper(mutate),
      });
      const err = await bob.findCards([alice.id]).catch((e: unknown) => e);
      assert.ok(hasKind(err, kind), `${what}: ${String(err)}`);
    }
  });
});
