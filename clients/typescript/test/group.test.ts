import { test } from "node:test";
import assert from "node:assert/strict";
import { Aead } from "../src/aead.js";
import { concat, labelled, sha, str, toHex, u64 } from "../src/bytes.js";
import { E2eeErrorKind } from "../src/errors.js";
import { WrappedEpochKeySchema } from "../src/gen/umbra/envelope/v1/envelope_pb.js";
import { checkWrappedKeys, epochKeyCommitment, epochKeyWrapInfo, newEpoch, openEpochKey, parseEpochCommit, signEpochCommit, verifyEpochCommit, wrappedKeysDigest, type WrappedKey } from "../src/group-epoch.js";
import { groupMessageKey, inspectGroupMessage, openGroupMessage, sealGroupMessage } from "../src/group-message.js";
import { LabelEpochCommitSignature, LabelEpochKeyCommitment, LabelGroupMessageKey, LabelGroupMessageSignature } from "../src/labels.js";
import { encode } from "../src/proto.js";
import { flip, h, rejectsKind, repoJSON, throwsKind } from "./helpers.js";
import { cards, keyFor, keyPairs } from "./vectors.js";

const gv = repoJSON("pkg/e2ee/testdata/group_vectors.json");
const group: string = gv.group_id;
const only = (name: string) => (id: Uint8Array) => (toHex(id) === toHex(cards[name]!.id) ? keyFor(id) : undefined);
const wrapsOf = (e: any): WrappedKey[] => e.wrapped_keys.map((w: any) => ({ recipientCardId: h(w.recipient_card_id), enc: h(w.enc), ciphertext: h(w.ciphertext) }));

test("section 11.7 epochs: commitment, digest, content, signature, commit hash, and every unwrap (Go-made wraps)", async () => {
  let previous: Uint8Array | undefined;
  for (const e of gv.epochs) {
    const epoch = BigInt(e.epoch);
    const key = h(e.epoch_key);
    const signer = cards[e.signer_card]!;
    assert.equal(toHex(labelled(LabelEpochKeyCommitment, str(group), u64(epoch), key)), e.key_commitment_input);
    assert.equal(toHex(epochKeyCommitment(group, epoch, key)), e.key_commitment);
    const wraps = wrapsOf(e);
    for (const [i, w] of e.wrapped_keys.entries()) {
      assert.equal(w.recipient_card_id, toHex(cards[w.recipient_card]!.id));
      assert.equal(toHex(epochKeyWrapInfo(group, epoch, h(w.recipient_card_id))), w.info);
      assert.equal(toHex(encode(WrappedEpochKeySchema, wraps[i]!)), w.encoding);
    }
    assert.equal(toHex(sha(h(e.wrapped_keys_digest_input))), e.wrapped_keys_digest);
    assert.equal(toHex(wrappedKeysDigest(wraps)), e.wrapped_keys_digest);
    assert.equal(toHex(wrappedKeysDigest([...wraps].reverse())), e.wrapped_keys_digest, "order does not matter");
    assert.equal(e.previous_commit_hash, previous === undefined ? "" : toHex(previous));
    const head = { sequence: BigInt(e.membership_sequence), hash: h(e.membership_hash) };
    const commit = signEpochCommit(keyPairs[e.signer_card]!, signer.id, group, epoch, key, wraps, previous, head, new Date(e.created_at_unix_seconds * 1000));
    assert.equal(toHex(commit.content), e.content);
    assert.equal(toHex(labelled(LabelEpochCommitSignature, commit.content)), e.signature_input);
    assert.equal(toHex(commit.signature), e.signature);
    const c = verifyEpochCommit({ content: h(e.content), signature: h(e.signature) }, group, epoch, signer);
    assert.equal(toHex(c.hash), e.commit_hash);
    assert.equal(c.membership.sequence, head.sequence);
    checkWrappedKeys(c, wraps);
    for (const w of e.wrapped_keys) {
      const got = await openEpochKey(c, wraps.find((x) => toHex(x.recipientCardId) === w.recipient_card_id), only(w.recipient_card));
      assert.equal(toHex(got), e.epoch_key, `epoch ${e.epoch} as ${w.recipient_card}`);
    }
    previous = c.hash;
  }
});

test("section 11.7 group messages: every byte, and opening the Go-made messages", () => {
  const keys = new Map<bigint, Uint8Array>(gv.epochs.map((e: any) => [BigInt(e.epoch), h(e.epoch_key)]));
  for (const m of gv.messages) {
    const aead = m.aead === "AEAD_AES_256_GCM" ? Aead.AES_256_GCM : Aead.CHACHA20_POLY1305;
    const sender = cards[m.sender_card]!;
    const made = sealGroupMessage(keyPairs[m.sender_card]!, sender.id, group, BigInt(m.epoch), keys.get(BigInt(m.epoch))!, h(m.plaintext), { aead, now: new Date(m.created_at_unix_seconds * 1000), salt: h(m.salt) });
    assert.equal(toHex(made), m.message, m.name);
    const info = inspectGroupMessage(h(m.message));
    assert.equal(toHex(info.headerHash), m.header_hash);
    assert.equal(toHex(labelled(LabelGroupMessageKey, info.headerHash)), m.hkdf_info);
    const { key, nonce } = groupMessageKey(keys.get(BigInt(m.epoch))!, h(m.salt), info.headerHash);
    assert.equal(toHex(key), m.message_key);
    assert.equal(toHex(nonce), m.nonce);
    assert.equal(toHex(labelled(LabelGroupMessageSignature, info.headerHash, h(m.plaintext))), m.signature_input);
    assert.equal(toHex(keyPairs[m.sender_card]!.sign(h(m.signature_input))), m.signature);
    assert.ok(m.message.includes(m.header) && m.message.endsWith(m.body));
    assert.equal(toHex(openGroupMessage(h(m.message), group, (e) => keys.get(e), sender)), m.plaintext);
  }
});

test("group messages and epoch commits refuse tampering with pkg/e2ee's error kinds", async (t) => {
  const e1 = gv.epochs[0];
  const m = gv.messages[0];
  const msg = h(m.message), key = h(e1.epoch_key);
  const sender = cards[m.sender_card]!;
  const keys = (e: bigint) => (e === 1n ? key : undefined);
  const msgCases: [string, () => unknown, E2eeErrorKind][] = [
    ["too large", () => openGroupMessage(new Uint8Array(67_110_913), group, keys, sender), E2eeErrorKind.TooLarge],
    ["trailing byte", () => openGroupMessage(concat(msg, h("00")), group, keys, sender), E2eeErrorKind.Malformed],
    ["body flipped", () => openGroupMessage(flip(msg, msg.length - 30), group, keys, sender), E2eeErrorKind.Decrypt],
    ["other group", () => openGroupMessage(msg, "g_hhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhh", keys, sender), E2eeErrorKind.WrongGroup],
    ["other sender", () => openGroupMessage(msg, group, keys, cards["bob"]), E2eeErrorKind.WrongSender],
    ["no key of the epoch", () => openGroupMessage(msg, group, () => undefined, sender), E2eeErrorKind.WrongEpoch],
    ["another epoch's key", () => openGroupMessage(msg, group, () => h(gv.epochs[1].epoch_key), sender), E2eeErrorKind.Decrypt],
    ["unknown AEAD", () => sealGroupMessage(keyPairs["alice-1"]!, sender.id, group, 1n, key, new Uint8Array(1), { aead: 7 as Aead }), E2eeErrorKind.UnknownSuite],
    ["signed by another key", () => openGroupMessage(sealGroupMessage(keyPairs["bob"]!, sender.id, group, 1n, key, new Uint8Array(1)), group, keys, sender), E2eeErrorKind.BadSignature],
  ];
  for (const [name, fn, kind] of msgCases) await t.test(name, () => throwsKind(fn, kind));

  const signed = { content: h(e1.content), signature: h(e1.signature) };
  const signer = cards[e1.signer_card]!;
  const c = verifyEpochCommit(signed, group, 1n, signer);
  const wraps = wrapsOf(e1);
  const commitCases: [string, () => unknown, E2eeErrorKind][] = [
    ["commit too large", () => parseEpochCommit({ content: new Uint8Array(1025), signature: signed.signature }), E2eeErrorKind.TooLarge],
    ["commit with an unknown field", () => parseEpochCommit({ content: concat(signed.content, h("7801")), signature: signed.signature }), E2eeErrorKind.Malformed],
    ["short signature", () => parseEpochCommit({ content: signed.content, signature: signed.signature.subarray(1) }), E2eeErrorKind.Malformed],
    ["tampered signature", () => verifyEpochCommit({ content: signed.content, signature: flip(signed.signature, 0) }, group, 1n, signer), E2eeErrorKind.BadSignature],
    ["other group", () => verifyEpochCommit(signed, "g_hhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhh", 1n, signer), E2eeErrorKind.WrongGroup],
    ["other epoch", () => verifyEpochCommit(signed, group, 2n, signer), E2eeErrorKind.WrongEpoch],
    ["other signer", () => verifyEpochCommit(signed, group, 1n, cards["bob"]), E2eeErrorKind.WrongSender],
    ["a wrap left out", () => checkWrappedKeys(c, wraps.slice(1)), E2eeErrorKind.BadSignature],
    ["a wrap altered", () => checkWrappedKeys(c, [{ ...wraps[0]!, ciphertext: flip(wraps[0]!.ciphertext, 0) }, ...wraps.slice(1)]), E2eeErrorKind.BadSignature],
    ["two wraps for one card", () => wrappedKeysDigest([wraps[0]!, wraps[0]!]), E2eeErrorKind.Malformed],
  ];
  for (const [name, fn, kind] of commitCases) await t.test(name, () => throwsKind(fn, kind));
  const carolWrap = wraps.find((w) => toHex(w.recipientCardId) === toHex(cards["carol"]!.id))!;
  await t.test("a wrap to a card not ours", () => rejectsKind(openEpochKey(c, carolWrap, only("bob")), E2eeErrorKind.NotMember));
  await t.test("a wrap of the other suite's size", () => rejectsKind(openEpochKey(c, { ...carolWrap, enc: wraps[0]!.enc }, only("carol")), E2eeErrorKind.Malformed));
  await t.test("a wrap that does not open", () => rejectsKind(openEpochKey(c, { ...carolWrap, ciphertext: flip(carolWrap.ciphertext, 3) }, only("carol")), E2eeErrorKind.Decrypt));
  await t.test("a wrapped key that is not the committed one", async () => {
    // A commit signed for one key, with a wrap (to carol) of another: the key commitment catches it.
    const other = await newEpoch(keyPairs["alice-1"]!, cards["alice-1"]!.id, group, 1n, undefined, c.membership, [cards["carol"]!]);
    const forged = verifyEpochCommit(signEpochCommit(keyPairs["alice-1"]!, cards["alice-1"]!.id, group, 1n, key, other.wrappedKeys, undefined, c.membership, new Date()), group, 1n, cards["alice-1"]);
    await rejectsKind(openEpochKey(forged, other.wrappedKeys[0], only("carol")), E2eeErrorKind.BadSignature);
  });
});

test("an epoch made here opens for every member, of both suites", async () => {
  const recipients = [cards["alice-1"]!, cards["bob"]!, cards["carol"]!];
  const head = { sequence: 4n, hash: new Uint8Array(32).fill(1) };
  const ep = await newEpoch(keyPairs["bob"]!, cards["bob"]!.id, group, 3n, new Uint8Array(32).fill(2), head, recipients);
  const c = verifyEpochCommit(ep.commit, group, 3n, cards["bob"]);
  checkWrappedKeys(c, ep.wrappedKeys);
  for (const [i, r] of recipients.entries()) {
    const name = Object.keys(cards).find((n) => cards[n] === r)!;
    assert.deepEqual(await openEpochKey(c, ep.wrappedKeys[i], only(name)), ep.key);
  }
  const msg = sealGroupMessage(keyPairs["carol"]!, cards["carol"]!.id, group, 3n, ep.key, new TextEncoder().encode("hello"), { aead: Aead.AES_256_GCM });
  assert.equal(new TextDecoder().decode(openGroupMessage(msg, group, () => ep.key, cards["carol"])), "hello");
});
