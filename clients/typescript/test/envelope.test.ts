import { test } from "node:test";
import assert from "node:assert/strict";
import { Aead, aeadSeal } from "../src/aead.js";
import { concat, labelled, sha, toHex } from "../src/bytes.js";
import { E2eeErrorKind } from "../src/errors.js";
import { decrypt, encrypt, inspectEnvelope, keyWrapInfo, sealSigned, wrapKey, MaxEnvelopeSize } from "../src/envelope.js";
import { parseBytesPair } from "../src/proto.js";
import { EnvelopeHeaderSchema } from "../src/gen/umbra/envelope/v1/envelope_pb.js";
import { Suite } from "../src/hpke.js";
import { KeyPair } from "../src/keys.js";
import { newCard, parseCard } from "../src/card.js";
import { encode } from "../src/proto.js";
import { LabelEnvelopeSignature } from "../src/labels.js";
import { flip, h, rejectsKind, throwsKind } from "./helpers.js";
import { cards, keyFor, keyPairs, v } from "./vectors.js";

const aeadOf = (s: string) => (s === "AEAD_AES_256_GCM" ? Aead.AES_256_GCM : Aead.CHACHA20_POLY1305);

test("section 9 envelopes: every deterministic byte, and decryption by each recipient (Go-made envelopes)", async () => {
  for (const e of v.envelopes) {
    const sender = cards[e.sender_card]!;
    const aead = aeadOf(e.aead);
    for (const s of e.stanzas) assert.equal(toHex(keyWrapInfo(sender.id, cards[s.recipient_card]!.id)), s.info);
    const header = encode(EnvelopeHeaderSchema, {
      version: 1,
      senderCardId: sender.id,
      recipients: e.stanzas.map((s: any) => ({ recipientCardId: cards[s.recipient_card]!.id, suite: cards[s.recipient_card]!.suite, enc: h(s.enc), wrappedKey: h(s.wrapped_key) })),
      aead,
      nonce: h(e.nonce),
      createdAtUnixSeconds: BigInt(e.created_at_unix_seconds),
    });
    assert.equal(toHex(header), e.header, e.name);
    assert.equal(toHex(sha(header)), e.header_hash);
    assert.equal(toHex(labelled(LabelEnvelopeSignature, sha(header), h(e.plaintext))), e.signature_input);
    const signature = keyPairs[e.sender_card]!.sign(h(e.signature_input));
    assert.equal(toHex(signature), e.signature);
    assert.equal(toHex(aeadSeal(aead, h(e.content_key), h(e.nonce), h(e.signed_payload), header)), e.body);
    assert.equal(toHex(sealSigned(aead, h(e.content_key), h(e.nonce), header, h(e.plaintext), signature)), e.envelope);

    const info = inspectEnvelope(h(e.envelope));
    assert.equal(toHex(info.senderCardId), toHex(sender.id));
    assert.equal(info.aead, aead);
    assert.equal(info.createdAtUnixSeconds, BigInt(e.created_at_unix_seconds));
    assert.deepEqual(info.recipientCardIds.map(toHex), e.stanzas.map((s: any) => toHex(cards[s.recipient_card]!.id)));
    for (const s of e.stanzas) {
      const mine = cards[s.recipient_card]!;
      const pt = await decrypt(h(e.envelope), (id) => (toHex(id) === toHex(mine.id) ? keyFor(id) : undefined), sender);
      assert.equal(toHex(pt), e.plaintext, `${e.name} as ${s.recipient_card}`);
    }
  }
});

test("envelopes made here decrypt, to both suites and with both AEADs", async () => {
  const alice = keyPairs["alice-1"]!, aliceCard = cards["alice-1"]!;
  for (const aead of [Aead.CHACHA20_POLY1305, Aead.AES_256_GCM]) {
    for (const pt of [new Uint8Array(0), new TextEncoder().encode("hi"), new Uint8Array(100_000).fill(7)]) {
      const env = await encrypt(alice, aliceCard.id, [cards["bob"]!, cards["carol"]!, aliceCard], pt, { aead });
      for (const who of ["bob", "carol", "alice-1"]) {
        const got = await decrypt(env, (id) => (toHex(id) === toHex(cards[who]!.id) ? keyFor(id) : undefined), aliceCard);
        assert.deepEqual(got, pt);
      }
    }
  }
});

test("decrypt refuses tampered and foreign envelopes with pkg/e2ee's error kinds", async (t) => {
  const alice = keyPairs["alice-1"]!, aliceCard = cards["alice-1"]!, bob = cards["bob"]!;
  const env = await encrypt(alice, aliceCard.id, [bob], new TextEncoder().encode("secret"));
  const bobKeys = (id: Uint8Array) => (toHex(id) === toHex(bob.id) ? keyPairs["bob"] : undefined);
  const info = inspectEnvelope(env);
  const cases: [string, Uint8Array | (() => Promise<unknown>), E2eeErrorKind][] = [
    ["too large", new Uint8Array(MaxEnvelopeSize + 1), E2eeErrorKind.TooLarge],
    ["empty", new Uint8Array(0), E2eeErrorKind.Malformed],
    ["trailing byte", concat(env, h("00")), E2eeErrorKind.Malformed],
    ["unknown field", concat(env, h("1a0100")), E2eeErrorKind.Malformed],
    ["truncated", env.subarray(0, env.length - 1), E2eeErrorKind.Malformed],
    ["header version 0 (non-canonical)", flip(env, 4), E2eeErrorKind.Malformed],
    ["header sender card id changed", flip(env, 10), E2eeErrorKind.WrongSender],
    ["body flipped", flip(env, env.length - 20), E2eeErrorKind.Decrypt],
    ["tag flipped", flip(env, env.length - 1), E2eeErrorKind.Decrypt],
    ["wrong sender card", () => decrypt(env, bobKeys, cards["carol"]), E2eeErrorKind.WrongSender],
    ["no sender card", () => decrypt(env, bobKeys, undefined), E2eeErrorKind.WrongSender],
    ["not a recipient", () => decrypt(env, (id) => (toHex(id) === toHex(cards["carol"]!.id) ? keyPairs["carol"] : undefined), aliceCard), E2eeErrorKind.NotRecipient],
    ["a key of the wrong suite for the stanza", () => decrypt(env, () => keyPairs["carol"], aliceCard), E2eeErrorKind.Malformed],
    ["another key under our card id", () => decrypt(env, () => keyPairs["alice-1"], aliceCard), E2eeErrorKind.Decrypt],
  ];
  for (const [name, input, kind] of cases) {
    await t.test(name, () => rejectsKind(typeof input === "function" ? input() : decrypt(input, bobKeys, aliceCard), kind));
  }
  assert.equal(info.recipientCardIds.length, 1);

  await t.test("re-encrypted by a recipient to another card: bad signature", async () => {
    // Bob, a recipient, takes alice's signed payload and seals it afresh to carol under
    // a header of his own that still names alice's card: the signature covers the
    // original header, so carol refuses it.
    const carol = cards["carol"]!;
    const pt = new TextEncoder().encode("secret");
    const [origHeader] = parseBytesPair("envelope", env);
    const sig = alice.sign(labelled(LabelEnvelopeSignature, sha(origHeader!), pt));
    const key = new Uint8Array(32).fill(1), nonce = new Uint8Array(12).fill(2);
    const { enc, ciphertext } = await wrapKey("content key", key, carol, keyWrapInfo(aliceCard.id, carol.id));
    const header = encode(EnvelopeHeaderSchema, {
      version: 1, senderCardId: aliceCard.id,
      recipients: [{ recipientCardId: carol.id, suite: carol.suite, enc, wrappedKey: ciphertext }],
      aead: Aead.CHACHA20_POLY1305, nonce, createdAtUnixSeconds: 1793707200n,
    });
    const forged = sealSigned(Aead.CHACHA20_POLY1305, key, nonce, header, pt, sig);
    await rejectsKind(decrypt(forged, () => keyPairs["carol"], aliceCard), E2eeErrorKind.BadSignature);
  });
});

test("a small-order encapsulated key fails to open (decrypt), not a crash", async () => {
  const carol = cards["carol"]!, aliceCard = cards["alice-1"]!;
  const env = await encrypt(keyPairs["alice-1"]!, aliceCard.id, [carol], new Uint8Array(5));
  // Replace carol's enc with the X25519 point u = 0 and re-encode: decapsulation must fail.
  const hdr = inspectEnvelope(env);
  assert.equal(hdr.recipientSuites[0], Suite.X25519);
  const header = encode(EnvelopeHeaderSchema, {
    version: 1, senderCardId: aliceCard.id,
    recipients: [{ recipientCardId: carol.id, suite: Suite.X25519, enc: new Uint8Array(32), wrappedKey: new Uint8Array(48) }],
    aead: Aead.CHACHA20_POLY1305, nonce: new Uint8Array(12), createdAtUnixSeconds: 1n,
  });
  const forged = sealSigned(Aead.CHACHA20_POLY1305, new Uint8Array(32), new Uint8Array(12), header, new Uint8Array(1), new Uint8Array(64));
  await rejectsKind(decrypt(forged, () => keyPairs["carol"], aliceCard), E2eeErrorKind.Decrypt);
});

test("encrypt refuses bad inputs", async () => {
  const alice = keyPairs["alice-1"]!, aliceCard = cards["alice-1"]!;
  await rejectsKind(encrypt(alice, aliceCard.id, [], new Uint8Array(1)), E2eeErrorKind.Malformed);
  await rejectsKind(encrypt(alice, aliceCard.id.subarray(1), [cards["bob"]!], new Uint8Array(1)), E2eeErrorKind.Malformed);
  await rejectsKind(encrypt(alice, aliceCard.id, [cards["bob"]!, cards["bob"]!], new Uint8Array(1)), E2eeErrorKind.Malformed);
  await rejectsKind(encrypt(alice, aliceCard.id, [cards["bob"]!], new Uint8Array(1), { aead: 3 as Aead }), E2eeErrorKind.UnknownSuite);
  await rejectsKind(encrypt(keyPairs["bob"]!, aliceCard.id, [aliceCard], new Uint8Array(1)), E2eeErrorKind.WrongSender);
  throwsKind(() => inspectEnvelope(h("0a00")), E2eeErrorKind.Malformed);
  // A fresh hybrid card made here is a valid recipient too.
  const kp = KeyPair.generate(Suite.MLKEM768_X25519);
  const c = newCard(kp, "u_dddddddddddddddddddddddddddddddd", new Date());
  const card = parseCard(c.content, c.selfSignature);
  const env = await encrypt(alice, aliceCard.id, [card], new Uint8Array(3));
  assert.deepEqual(await decrypt(env, () => kp, aliceCard), new Uint8Array(3));
});
