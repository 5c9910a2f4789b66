import { test } from "node:test";
import assert from "node:assert/strict";
import { concat, labelled, toHex } from "../src/bytes.js";
import { E2eeErrorKind } from "../src/errors.js";
import { LabelMembershipStatementSignature } from "../src/labels.js";
import { Membership, MembershipKind, MembershipRole, parseMembershipStatement, serviceRemoveStatement, signMembershipStatement, verifyMembershipStatement, type MembershipStatement, type SignedStatement } from "../src/group-membership.js";
import { flip, h, repoJSON, throwsKind } from "./helpers.js";
import { cards, keyPairs } from "./vectors.js";

const mv = repoJSON("pkg/e2ee/testdata/membership_vectors.json");
const group: string = mv.group_id;
const signedOf = (s: any): SignedStatement => ({ content: h(s.content), signature: s.signature === "" ? new Uint8Array(0) : h(s.signature) });
const verified = (s: any): MembershipStatement => verifyMembershipStatement(signedOf(s), group, s.signer_card === "" ? undefined : cards[s.signer_card]);

test("section 12.5 membership vectors: each statement re-made byte for byte, verified, and the chain applied", () => {
  const m = new Membership(group);
  let prev: Uint8Array | undefined;
  for (const s of mv.statements) {
    const st = verified(s);
    assert.equal(MembershipKind[st.kind], s.kind);
    assert.equal(toHex(st.hash), s.hash);
    assert.equal(st.sequence, BigInt(s.sequence));
    assert.equal(st.previousHash === undefined ? undefined : toHex(st.previousHash), prev === undefined ? undefined : toHex(prev));
    const change = { kind: st.kind, subjects: [...st.subjects], role: st.role, invitationHash: st.invitationHash, expiresAtUnixSeconds: st.expiresAtUnixSeconds };
    const when = new Date(Number(st.createdAtUnixSeconds) * 1000);
    const again = s.signer_card === ""
      ? serviceRemoveStatement(group, st.sequence, st.previousHash, st.subjects[0]!, when)
      : signMembershipStatement(keyPairs[s.signer_card]!, cards[s.signer_card]!.id, st.signer, group, st.sequence, st.previousHash, change, when);
    assert.equal(toHex(again.content), s.content, `statement ${s.sequence}`);
    assert.equal(toHex(again.signature), s.signature);
    if (s.signer_card !== "") assert.equal(toHex(labelled(LabelMembershipStatementSignature, again.content)), s.signature_input);
    m.apply(st);
    prev = st.hash;
  }
  assert.deepEqual(m.members().map((id) => ({ identity: id, role: `MEMBERSHIP_ROLE_${MembershipRole[m.role(id)]}` })), mv.members);
  assert.equal(m.sequence, BigInt(mv.statements.length));
  assert.equal(toHex(m.head!), mv.statements.at(-1).hash);
  // Carol: invited at 2, member from 3 until bob removed her at 5, again from 6 to 7.
  const carol = "u_cccccccccccccccccccccccccccccccc";
  assert.deepEqual([1n, 2n, 3n, 4n, 5n, 6n, 7n, 8n].map((q) => m.memberAt(carol, q)), [false, false, true, true, false, true, false, false]);
  assert.ok(m.wasMember("u_aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa") && !m.memberAt("u_aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", 8n));
});

test("a chain with a statement dropped, repeated, reordered or forged is refused with the right kind", async (t) => {
  const sts = mv.statements.map(verified);
  const applyAll = (list: MembershipStatement[]) => {
    const m = new Membership(group);
    list.forEach((s) => m.apply(s));
    return m;
  };
  const cases: [string, () => unknown, E2eeErrorKind][] = [
    ["dropped", () => applyAll([sts[0], sts[2]]), E2eeErrorKind.BrokenChain],
    ["repeated", () => applyAll([sts[0], sts[1], sts[1]]), E2eeErrorKind.BrokenChain],
    ["reordered", () => applyAll([sts[0], sts[2], sts[1]]), E2eeErrorKind.BrokenChain],
    ["another group's membership", () => new Membership("g_hhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhh").apply(sts[0]), E2eeErrorKind.WrongGroup],
    ["forged signature", () => verifyMembershipStatement({ content: h(mv.statements[1].content), signature: flip(h(mv.statements[1].signature), 2) }, group, cards["alice-1"]), E2eeErrorKind.BadSignature],
    ["signer card of another identity", () => verifyMembershipStatement(signedOf(mv.statements[1]), group, cards["bob"]), E2eeErrorKind.WrongSender],
    ["other group", () => verifyMembershipStatement(signedOf(mv.statements[1]), "g_hhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhh", cards["alice-1"]), E2eeErrorKind.WrongGroup],
    ["unknown field", () => parseMembershipStatement({ content: concat(h(mv.statements[0].content), h("6801")), signature: h(mv.statements[0].signature) }), E2eeErrorKind.Malformed],
    ["too large", () => parseMembershipStatement({ content: new Uint8Array(49153), signature: new Uint8Array(64) }), E2eeErrorKind.TooLarge],
  ];
  for (const [name, fn, kind] of cases) await t.test(name, () => throwsKind(fn, kind));

  const alice = keyPairs["alice-1"]!, aliceCard = cards["alice-1"]!;
  const bob = keyPairs["bob"]!, bobCard = cards["bob"]!;
  const A = "u_aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", B = "u_bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb", C = "u_cccccccccccccccccccccccccccccccc";
  const now = new Date(1793710800 * 1000);
  const create = parseMembershipStatement(signMembershipStatement(alice, aliceCard.id, A, group, 1n, undefined, { kind: MembershipKind.CREATE, subjects: [B] }, now));
  const next = (signer: "alice" | "bob", change: any) => {
    const [kp, card, id] = signer === "alice" ? [alice, aliceCard, A] : [bob, bobCard, B];
    return parseMembershipStatement(signMembershipStatement(kp, card.id, id, group, 2n, create.hash, change, now));
  };
  const rules: [string, () => MembershipStatement, E2eeErrorKind][] = [
    ["a member who is not an admin adds", () => next("bob", { kind: MembershipKind.ADD, subjects: [C] }), E2eeErrorKind.NotAuthorized],
    ["a member removes the owner", () => next("bob", { kind: MembershipKind.REMOVE, subjects: [A] }), E2eeErrorKind.NotAuthorized],
    ["adding a member again", () => next("alice", { kind: MembershipKind.ADD, subjects: [B] }), E2eeErrorKind.InvalidChange],
    ["removing a non-member", () => next("alice", { kind: MembershipKind.REMOVE, subjects: [C] }), E2eeErrorKind.InvalidChange],
    ["the owner leaves without a successor", () => next("alice", { kind: MembershipKind.LEAVE }), E2eeErrorKind.InvalidChange],
    ["accepting an invitation never made", () => next("bob", { kind: MembershipKind.ACCEPT_INVITATION, invitationHash: new Uint8Array(32) }), E2eeErrorKind.NotAuthorized],
    ["the service removes the owner", () => parseMembershipStatement(serviceRemoveStatement(group, 2n, create.hash, A, now)), E2eeErrorKind.NotAuthorized],
    ["unbanning someone not banned", () => next("alice", { kind: MembershipKind.UNBAN, subjects: [C] }), E2eeErrorKind.InvalidChange],
  ];
  for (const [name, st, kind] of rules) {
    await t.test(name, () => {
      const m = new Membership(group);
      m.apply(create);
      const before = m.members();
      throwsKind(() => m.apply(st()), kind);
      assert.deepEqual(m.members(), before, "nothing changes when a statement is refused");
      assert.equal(m.sequence, 1n);
    });
  }
  await t.test("an unsigned statement of another kind than SERVICE_REMOVE is the service overstepping", () => {
    const signed = signMembershipStatement(alice, aliceCard.id, A, group, 2n, create.hash, { kind: MembershipKind.ADD, subjects: [C] }, now);
    // The same ADD without signer, card or signature: re-encode with those fields empty.
    const st = parseMembershipStatement(signed);
    const raw = toHex(st.content).replace(toHex(new TextEncoder().encode(A)), "").replace("3222", "").replace("3a20" + toHex(aliceCard.id), "");
    throwsKind(() => parseMembershipStatement({ content: h(raw), signature: new Uint8Array(0) }), E2eeErrorKind.NotAuthorized);
  });
});
