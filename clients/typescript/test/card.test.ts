import { test } from "node:test";
import assert from "node:assert/strict";
import { KeyPair } from "../src/keys.js";
import { cardId, endorse, newCard, parseCard, verifyEndorsement, verifyServiceSignature, serviceSign } from "../src/card.js";
import { toHex, labelled, concat } from "../src/bytes.js";
import { E2eeErrorKind } from "../src/errors.js";
import { encode } from "../src/proto.js";
import { CardContentSchema } from "../src/gen/umbra/envelope/v1/envelope_pb.js";
import { Suite } from "../src/hpke.js";
import { LabelCardSelfSignature } from "../src/labels.js";
import { flip, h, throwsKind } from "./helpers.js";
import { cards, keyPairs, suiteOf, v } from "./vectors.js";

test("section 9 key pairs: derived from their seeds and rebuilt from their private keys", async () => {
  for (const k of v.keys) {
    const derived = await KeyPair.derive(suiteOf(k.suite), h(k.seed));
    for (const kp of [derived, keyPairs[k.name]!]) {
      assert.equal(toHex(kp.signingSeed), k.signing_seed, k.name);
      assert.equal(toHex(kp.signingPublicKey), k.signing_public_key, k.name);
      assert.equal(toHex(kp.kemPrivateKey), k.kem_private_key, k.name);
      assert.equal(toHex(kp.kemPublicKey), k.kem_public_key, k.name);
    }
  }
});

test("section 9 cards: content, id, self-signature and service signature", () => {
  for (const c of v.cards) {
    const kp = keyPairs[c.key]!;
    const prev = c.previous_card_id === "" ? undefined : h(c.previous_card_id);
    const made = newCard(kp, c.identity, new Date(Number(c.created_at_unix_seconds) * 1000), prev);
    assert.equal(toHex(made.content), c.content, c.name);
    assert.equal(toHex(made.selfSignature), c.self_signature, c.name);
    const card = cards[c.name]!;
    assert.equal(toHex(card.id), c.card_id);
    assert.equal(toHex(cardId(h(c.content))), c.card_id);
    assert.equal(card.identity, c.identity);
    assert.equal(card.suite, kp.suite);
    assert.equal(card.createdAtUnixSeconds, BigInt(c.created_at_unix_seconds));
    assert.equal(card.previousCardId === undefined ? "" : toHex(card.previousCardId), c.previous_card_id);
    verifyServiceSignature(h(v.service_key.public_key), card.id, h(c.service_signature));
    assert.equal(toHex(serviceSign(h(v.service_key.seed), card.id)), c.service_signature);
    throwsKind(() => verifyServiceSignature(h(v.service_key.public_key), card.id, flip(h(c.service_signature), 5)), E2eeErrorKind.BadSignature);
    throwsKind(() => verifyServiceSignature(h(v.service_key.public_key), flip(card.id, 0), h(c.service_signature)), E2eeErrorKind.BadSignature);
  }
});

test("section 9 endorsement: made and verified", () => {
  for (const e of v.endorsements) {
    const prev = cards[e.previous_card]!, next = cards[e.new_card]!;
    const made = endorse(keyPairs[e.previous_card]!, next);
    assert.equal(toHex(made.content), e.content);
    assert.equal(toHex(made.signature), e.signature);
    verifyEndorsement(prev, next, h(e.content), h(e.signature));
    throwsKind(() => verifyEndorsement(prev, next, h(e.content), flip(h(e.signature), 1)), E2eeErrorKind.BadSignature);
    throwsKind(() => verifyEndorsement(next, prev, h(e.content), h(e.signature)), E2eeErrorKind.Malformed);
    throwsKind(() => verifyEndorsement(prev, cards["bob"]!, h(e.content), h(e.signature)), E2eeErrorKind.Malformed);
    throwsKind(() => verifyEndorsement(prev, next, concat(h(e.content), h("2000")), h(e.signature)), E2eeErrorKind.Malformed);
    throwsKind(() => verifyEndorsement(prev, next, h(e.content), h(e.signature).subarray(1)), E2eeErrorKind.Malformed);
    throwsKind(() => verifyEndorsement(prev, next, new Uint8Array(257), h(e.signature)), E2eeErrorKind.TooLarge);
  }
});

/** resign builds a card content from fields and signs it with kp, so that only the field under test is wrong. */
function resigned(kp: KeyPair, init: Record<string, unknown>): [Uint8Array, Uint8Array] {
  const content = encode(CardContentSchema, {
    version: 1,
    identity: "u_aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
    signingPublicKey: kp.signingPublicKey,
    suite: kp.suite,
    kemPublicKey: kp.kemPublicKey,
    createdAtUnixSeconds: 1793534400n,
    ...init,
  });
  return [content, kp.sign(labelled(LabelCardSelfSignature, content))];
}

test("parseCard refuses what section 5.1 refuses, with the right kind", async (t) => {
  const carol = v.cards.find((c: any) => c.name === "carol");
  const content = h(carol.content), sig = h(carol.self_signature);
  const kp = keyPairs["carol"]!, hybrid = keyPairs["bob"]!;
  const smallOrderEd = h("0100000000000000000000000000000000000000000000000000000000000000");
  const cases: [string, () => unknown, E2eeErrorKind][] = [
    ["too large", () => parseCard(new Uint8Array(4097), sig), E2eeErrorKind.TooLarge],
    ["truncated", () => parseCard(content.subarray(0, content.length - 1), sig), E2eeErrorKind.Malformed],
    ["unknown field", () => parseCard(concat(content, h("4001")), sig), E2eeErrorKind.Malformed],
    ["non-minimal varint", () => parseCard(concat(h("088100"), content.subarray(2)), sig), E2eeErrorKind.Malformed],
    ["fields out of order", () => parseCard(concat(content.subarray(2), content.subarray(0, 2)), sig), E2eeErrorKind.Malformed],
    ["version 2", () => parseCard(...resigned(kp, { version: 2 })), E2eeErrorKind.Malformed],
    ["bad identity", () => parseCard(...resigned(kp, { identity: "u_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA" })), E2eeErrorKind.Malformed],
    ["group identity", () => parseCard(...resigned(kp, { identity: "g_aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa" })), E2eeErrorKind.Malformed],
    ["no creation time", () => parseCard(...resigned(kp, { createdAtUnixSeconds: 0n })), E2eeErrorKind.Malformed],
    ["negative creation time", () => parseCard(...resigned(kp, { createdAtUnixSeconds: -5n })), E2eeErrorKind.Malformed],
    ["short previous id", () => parseCard(...resigned(kp, { previousCardId: new Uint8Array(31) })), E2eeErrorKind.Malformed],
    ["small-order signing key", () => parseCard(...resigned(kp, { signingPublicKey: smallOrderEd })), E2eeErrorKind.Malformed],
    ["non-canonical signing key", () => parseCard(...resigned(kp, { signingPublicKey: h("edffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f") })), E2eeErrorKind.Malformed],
    ["unknown suite", () => parseCard(...resigned(kp, { suite: 3 })), E2eeErrorKind.UnknownSuite],
    ["no suite", () => parseCard(...resigned(kp, { suite: 0 })), E2eeErrorKind.UnknownSuite],
    ["KEM key of the other suite's length", () => parseCard(...resigned(kp, { kemPublicKey: hybrid.kemPublicKey })), E2eeErrorKind.Malformed],
    ["small-order X25519 key", () => parseCard(...resigned(kp, { kemPublicKey: h("e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800") })), E2eeErrorKind.Malformed],
    ["non-canonical X25519 key", () => parseCard(...resigned(kp, { kemPublicKey: h("eeffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f") })), E2eeErrorKind.Malformed],
    ["X25519 key with the top bit", () => parseCard(...resigned(kp, { kemPublicKey: flip(kp.kemPublicKey, 31).map((b, i) => (i === 31 ? b | 0x80 : b)) })), E2eeErrorKind.Malformed],
    ["hybrid key failing the ML-KEM modulus check", () => parseCard(...resigned(hybrid, { kemPublicKey: concat(h("ffffff"), hybrid.kemPublicKey.subarray(3)) })), E2eeErrorKind.Malformed],
    ["hybrid key with a small-order X25519 half", () => parseCard(...resigned(hybrid, { kemPublicKey: concat(hybrid.kemPublicKey.subarray(0, 1184), new Uint8Array(32)) })), E2eeErrorKind.Malformed],
    ["short self-signature", () => parseCard(content, sig.subarray(0, 63)), E2eeErrorKind.Malformed],
    ["tampered self-signature", () => parseCard(content, flip(sig, 0)), E2eeErrorKind.BadSignature],
    ["S + L", () => parseCard(content, concat(sig.subarray(0, 32), addL(sig.subarray(32)))), E2eeErrorKind.BadSignature],
    ["tampered content", () => parseCard(...([resigned(kp, {})[0], sig] as const)), E2eeErrorKind.BadSignature],
  ];
  for (const [name, fn, kind] of cases) await t.test(name, () => throwsKind(fn, kind));
});

/** addL returns S + L as 32 little-endian bytes (a non-reduced S). */
function addL(s: Uint8Array): Uint8Array {
  const L = 2n ** 252n + 27742317777372353535851937790883648493n;
  let n = 0n;
  for (let i = 31; i >= 0; i--) n = (n << 8n) | BigInt(s[i]!);
  n += L;
  const out = new Uint8Array(32);
  for (let i = 0; i < 32; i++) { out[i] = Number(n & 0xffn); n >>= 8n; }
  return out;
}

test("a new card of each suite parses; newCard refuses a bad identity", () => {
  for (const suite of [Suite.MLKEM768_X25519, Suite.X25519]) {
    const kp = KeyPair.generate(suite);
    const { content, selfSignature } = newCard(kp, "u_bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb", new Date());
    const card = parseCard(content, selfSignature);
    assert.deepEqual(card.kemPublicKey, kp.kemPublicKey);
    throwsKind(() => newCard(kp, "bob", new Date()), E2eeErrorKind.Malformed);
  }
});
