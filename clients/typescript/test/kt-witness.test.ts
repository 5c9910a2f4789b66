// Witness cosignatures (src/kt/cosignature.ts) against the vectors of
// pkg/kt/testdata/cosignature_vectors.json (docs/wire-format.md 13.8.1), checked with
// only what the vectors state, as the Go tests check them; tampered cosignatures and
// policies refused with pkg/kt's kinds; a card's log_index proved by its log entry
// (13.9) from the entries of pkg/kt/testdata/vectors.json; and notes signed by two log
// keys of one name (a log key rotation's overlap).

import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { concat, utf8Bytes } from "../src/bytes.js";
import { base64Decode, base64Encode } from "../src/kt/base64.js";
import {
  KtError,
  KtErrorKind,
  NotWitnessedError,
  WitnessPolicy,
  checkpointText,
  cosignedMessage,
  cosignerKeyHash,
  encodeLeaf,
  mergeCosignatures,
  openCheckpoint,
  parseLeaf,
  parseWitnessKey,
  unpackHashes,
  verifyCardPublication,
  verifyCosignature,
  witnessKeyString,
  type Checkpoint,
  type SignedCheckpoint,
} from "../src/kt/index.js";
import { parseWitness } from "../src/client/witness.js";
import { UmbraClient, type ClientConfig } from "../src/client/client.js";
import { MemoryStorage } from "../src/storage/storage.js";
import { sha256 } from "../src/platform.js";
import { sign, signingPublicKey, verifySignature } from "../src/pubkey.js";
import { create } from "@bufbuild/protobuf";
import { LogLeafSchema } from "../src/gen/umbra/kt/v1/kt_pb.js";
import { h, repoJSON } from "./helpers.js";
import { path, signNote, signerKey, type NoteSigner } from "./kt-reference.js";

const cv = repoJSON("pkg/kt/testdata/cosignature_vectors.json");
const v = repoJSON("pkg/kt/testdata/vectors.json");

/** isKind asserts that err is a KtError of kind. */
function isKind(kind: KtErrorKind) {
  return (err: unknown) => {
    assert.ok(err instanceof KtError, `want a KtError, got ${String(err)}`);
    assert.equal(err.kind, kind, err.message);
    return true;
  };
}

/** cosign appends the cosignature of a witness (name, seed) at time ts to a signed checkpoint, as kt.WitnessSigner.Cosign does. */
function cosign(signed: Uint8Array | string, name: string, seed: Uint8Array, ts: bigint, opts: { sigBytes?: (b: Uint8Array) => Uint8Array } = {}): Uint8Array {
  const note = typeof signed === "string" ? signed : new TextDecoder().decode(signed);
  const body = note.slice(0, note.indexOf("\n\n") + 1);
  const hash = cosignerKeyHash(name, signingPublicKey(seed));
  const tsb = new Uint8Array(8);
  new DataView(tsb.buffer).setBigUint64(0, ts);
  let sig = concat(Uint8Array.of(hash >>> 24, (hash >>> 16) & 0xff, (hash >>> 8) & 0xff, hash & 0xff), tsb, sign(seed, cosignedMessage(body, ts)));
  if (opts.sigBytes) sig = opts.sigBytes(sig);
  return utf8Bytes(`${note}\u2014 ${name} ${base64Encode(sig)}\n`);
}

const witness = () => parseWitnessKey(cv.verifier_key);

describe("the vectors of pkg/kt/testdata/cosignature_vectors.json", () => {
  test("the witness key: seed, public key, key ID, verifier key and private key", () => {
    assert.deepEqual(signingPublicKey(h(cv.seed)), h(cv.public_key));
    assert.deepEqual(concat(utf8Bytes(cv.witness_name), Uint8Array.of(0x0a, 0x04), h(cv.public_key)), h(cv.key_id_input));
    assert.deepEqual(sha256(h(cv.key_id_input)).subarray(0, 4), h(cv.key_id));
    assert.equal(cosignerKeyHash(cv.witness_name, h(cv.public_key)).toString(16).padStart(8, "0"), cv.key_id);
    assert.equal(witnessKeyString(cv.witness_name, h(cv.public_key)), cv.verifier_key);
    const k = witness();
    assert.equal(k.name, cv.witness_name);
    assert.deepEqual(k.publicKey, h(cv.public_key));
    // PRIVATE+KEY+<name>+<key ID>+base64(0x04 ‖ seed)
    const parts = cv.private_key.split("+");
    assert.deepEqual(parts.slice(0, 4), ["PRIVATE", "KEY", cv.witness_name, cv.key_id]);
    assert.deepEqual(base64Decode(parts.slice(4).join("+")), concat(Uint8Array.of(4), h(cv.seed)));
  });

  test("the signed message, the signature, and the cosigned checkpoint, byte for byte", async () => {
    const ts = BigInt(cv.timestamp);
    const body = cv.checkpoint_signed_note.slice(0, cv.checkpoint_signed_note.indexOf("\n\n") + 1);
    assert.equal(new TextDecoder().decode(cosignedMessage(body, ts)), cv.signed_message);
    assert.ok(verifySignature(h(cv.public_key), utf8Bytes(cv.signed_message), h(cv.signature)));
    assert.deepEqual(sign(h(cv.seed), utf8Bytes(cv.signed_message)), h(cv.signature), "Ed25519 is deterministic: the same signature");
    assert.deepEqual(cosign(cv.checkpoint_signed_note, cv.witness_name, h(cv.seed), ts), utf8Bytes(cv.cosigned_note));
    assert.equal(cv.cosigned_note, cv.checkpoint_signed_note + cv.signature_line);
    // The checkpoint is the one of 4 entries of vectors.json.
    assert.equal(cv.checkpoint_signed_note, v.checkpoints[1].signed_note);
  });

  test("the cosignature verifies with its time; the log key still opens the cosigned checkpoint; the policy passes", async () => {
    assert.equal(await verifyCosignature(utf8Bytes(cv.cosigned_note), witness()), BigInt(cv.timestamp));
    const cp = await openCheckpoint(utf8Bytes(cv.cosigned_note), v.log_key.verifier_key);
    assert.equal(cp.size, 4n);
    assert.equal(cp.unverifiedSigs.length, 1, "the cosignature is a line of an unknown key to the log's verifier");
    const policy = new WitnessPolicy(cv.policy_quorum, [cv.verifier_key]);
    const valid = await policy.check(utf8Bytes(cv.cosigned_note), new Date(cv.timestamp * 1000));
    assert.equal(cv.policy_verified, true);
    assert.equal(valid.length, 1);
    assert.equal(valid[0]!.time, BigInt(cv.timestamp));
    await assert.rejects(policy.check(utf8Bytes(cv.checkpoint_signed_note), new Date(cv.timestamp * 1000)), (e: unknown) => e instanceof NotWitnessedError && isKind(KtErrorKind.NotWitnessed)(e));
  });
});

describe("cosignatures that must not count", () => {
  const ts = BigInt(cv.timestamp);
  const at = new Date(cv.timestamp * 1000);
  const seed = h(cv.seed);
  const base = cv.checkpoint_signed_note as string;
  const other = new Uint8Array(32).fill(9);
  const flipAt = (i: number) => (b: Uint8Array) => {
    const c = b.slice();
    c[i]! ^= 1;
    return c;
  };
  const otherBody = new TextDecoder().decode(signNote(checkpointText({ origin: "umbra.example/kt", size: 5n, logRoot: new Uint8Array(32), mapRoot: new Uint8Array(32) }), { name: "umbra.example/kt", seed: h(v.log_key.seed) }));
  const cases: [string, Uint8Array, KtErrorKind][] = [
    ["a signature with a bit flipped", cosign(base, cv.witness_name, seed, ts, { sigBytes: flipAt(40) }), KtErrorKind.BadCosignature],
    ["another time than the one signed", cosign(base, cv.witness_name, seed, ts, { sigBytes: flipAt(11) }), KtErrorKind.BadCosignature],
    ["a cosignature of another body", utf8Bytes(base + new TextDecoder().decode(cosign(otherBody, cv.witness_name, seed, ts)).split("\n\n")[1]!.split("\n").slice(1).join("\n")), KtErrorKind.BadCosignature],
    ["71 bytes after the key ID", cosign(base, cv.witness_name, seed, ts, { sigBytes: (b) => b.subarray(0, b.length - 1) }), KtErrorKind.BadCosignature],
    ["a time past 2^63 - 1, validly signed", cosign(base, cv.witness_name, seed, 1n << 63n), KtErrorKind.BadCosignature],
    ["another witness's key under the same name", cosign(base, cv.witness_name, other, ts), KtErrorKind.NotWitnessed],
    ["no cosignature", utf8Bytes(base), KtErrorKind.NotWitnessed],
    ["a cosigned note that is not a checkpoint", cosign(new TextDecoder().decode(signNote("umbra.example/kt\n4\n", { name: "umbra.example/kt", seed: h(v.log_key.seed) })), cv.witness_name, seed, ts), KtErrorKind.BadCosignature],
    ["not a note", utf8Bytes(base.slice(0, base.indexOf("\n\n") + 1)), KtErrorKind.Malformed],
  ];
  for (const [name, note, kind] of cases) {
    test(name, async () => {
      await assert.rejects(verifyCosignature(note, witness()), isKind(kind));
      const policy = new WitnessPolicy(1, [cv.verifier_key]);
      await assert.rejects(policy.check(note, at), isKind(kind === KtErrorKind.Malformed ? kind : KtErrorKind.NotWitnessed));
    });
  }

  test("of two lines of one witness, the first is the one verified", async () => {
    const good = cosign(base, cv.witness_name, seed, ts);
    const badFirst = cosign(cosign(base, cv.witness_name, seed, ts, { sigBytes: flipAt(40) }), cv.witness_name, seed, ts);
    assert.equal(await verifyCosignature(cosign(good, cv.witness_name, seed, ts, { sigBytes: flipAt(40) }), witness()), ts);
    await assert.rejects(verifyCosignature(badFirst, witness()), isKind(KtErrorKind.BadCosignature));
  });

  test("a cosignature from more than 5 minutes in the future does not count; from under 5 minutes it does", async () => {
    const policy = new WitnessPolicy(1, [cv.verifier_key]);
    const note = utf8Bytes(cv.cosigned_note);
    const err = await policy.check(note, new Date(at.getTime() - 5 * 60 * 1000 - 1000)).catch((e: unknown) => e);
    assert.ok(err instanceof NotWitnessedError, String(err));
    assert.ok(isKind(KtErrorKind.BadCosignature)(err.missing.get(cv.witness_name)));
    assert.equal((await policy.check(note, new Date(at.getTime() - 4 * 60 * 1000))).length, 1);
  });
});

describe("witness policies", () => {
  const ts = BigInt(cv.timestamp);
  const at = new Date(cv.timestamp * 1000);
  const base = cv.checkpoint_signed_note as string;
  const ws = [1, 2, 3].map((i) => ({ name: `witness.test/w${i}`, seed: new Uint8Array(32).fill(0x40 + i) }));
  const keys = ws.map((w) => witnessKeyString(w.name, signingPublicKey(w.seed)));

  test("k of n: counted per witness, once however many lines; other keys ignored", async () => {
    const two = cosign(cosign(base, ws[0]!.name, ws[0]!.seed, ts), ws[1]!.name, ws[1]!.seed, ts);
    assert.equal((await new WitnessPolicy(2, keys).check(two, at)).length, 2);
    const err = await new WitnessPolicy(3, keys).check(two, at).catch((e: unknown) => e);
    assert.ok(err instanceof NotWitnessedError && err.valid.length === 2 && err.quorum === 3, String(err));
    assert.ok(isKind(KtErrorKind.NotWitnessed)(err.missing.get(ws[2]!.name)));
    const twice = cosign(cosign(base, ws[0]!.name, ws[0]!.seed, ts), ws[0]!.name, ws[0]!.seed, ts + 1n);
    await assert.rejects(new WitnessPolicy(2, keys).check(twice, at), isKind(KtErrorKind.NotWitnessed));
    const stranger = cosign(base, "witness.test/stranger", new Uint8Array(32).fill(0x7f), ts);
    await assert.rejects(new WitnessPolicy(1, keys).check(stranger, at), isKind(KtErrorKind.NotWitnessed));
  });

  test("bad policies are refused as configuration", () => {
    assert.throws(() => new WitnessPolicy(0, keys), /quorum 0 of 3/);
    assert.throws(() => new WitnessPolicy(4, keys), /quorum 4 of 3/);
    const sameKey = witnessKeyString("witness.test/alias", signingPublicKey(ws[0]!.seed));
    assert.throws(() => new WitnessPolicy(1, [keys[0]!, sameKey]), /same public key/);
    assert.throws(() => parseWitnessKey(v.log_key.verifier_key), /algorithm 0x01/, "a log key is not a witness key");
    assert.throws(() => parseWitnessKey(keys[0]!.replace(/\+[0-9a-f]{8}\+/, "+00000000+")), /key ID/);
    assert.throws(() => parseWitnessKey("no-plus"), /not <name>/);
    assert.throws(() => parseWitnessKey(keys[0]!.slice(0, -4)), /base64 of 33 bytes/);
    assert.equal(parseWitness(`${keys[0]}@http://127.0.0.1:8091`).url, "http://127.0.0.1:8091");
    assert.throws(() => parseWitness(`${keys[0]}@ftp://x`), /not http/);
    assert.throws(() => parseWitness(keys[0]!), /not <verifier key>@<URL>/);
  });

  test("mergeCosignatures adds the lines a note lacks, and sets apart notes of another body", () => {
    const a = cosign(base, ws[0]!.name, ws[0]!.seed, ts);
    const b = cosign(base, ws[1]!.name, ws[1]!.seed, ts);
    const otherBody = utf8Bytes(v.checkpoints[0].signed_note);
    const { merged, differing } = mergeCosignatures(utf8Bytes(base), a, b, a, otherBody);
    assert.equal(new TextDecoder().decode(merged), new TextDecoder().decode(cosign(cosign(base, ws[0]!.name, ws[0]!.seed, ts), ws[1]!.name, ws[1]!.seed, ts)));
    assert.deepEqual(differing, [otherBody]);
  });
});

describe("a card's log_index proved by its log entry (13.9)", () => {
  const leaves = v.entries.map((e: any) => h(e.leaf)) as Uint8Array[];
  let cp: SignedCheckpoint;
  const at = async () => (cp ??= await openCheckpoint(utf8Bytes(v.checkpoints[1].signed_note), v.log_key.verifier_key));

  test("every publication of the vectors' log is proved at the checkpoint of 4 entries, with the lookups' own inclusion proofs", async () => {
    const c = await at();
    let proved = 0;
    for (const e of v.entries) {
      const i = BigInt(e.index);
      if (e.kind === "LOG_EVENT_KIND_REVOCATION") {
        await assert.rejects(async () => verifyCardPublication(c, v.app_id, e.identity, h(e.card_id), i, h(e.leaf), path(e.index, leaves)), isKind(KtErrorKind.BadProof));
        continue;
      }
      const leaf = verifyCardPublication(c, v.app_id, e.identity, h(e.card_id), i, h(e.leaf), path(e.index, leaves));
      assert.deepEqual(leaf.cardId, h(e.card_id));
      proved++;
    }
    assert.equal(proved, 3);
    // The inclusion proof of alice's rotation is the one her lookup carries.
    const alice = v.lookups.find((l: any) => l.leaf_index === 2);
    assert.deepEqual(path(2, leaves), unpackHashes("inclusion proof", h(alice.inclusion_hashes), 2));
  });

  test("a wrong log_index, identity, card, leaf or proof proves nothing", async () => {
    const c = await at();
    const e = v.entries[0];
    const ok = () => [c, v.app_id, e.identity, h(e.card_id), 0n, h(e.leaf), path(0, leaves)] as const;
    const cases: [string, Parameters<typeof verifyCardPublication>, KtErrorKind][] = [
      ["the entry of another card (log_index 1)", [c, v.app_id, e.identity, h(e.card_id), 1n, h(v.entries[1].leaf), path(1, leaves)], KtErrorKind.BadProof],
      ["another identity", [c, v.app_id, v.entries[1].identity, h(e.card_id), 0n, h(e.leaf), path(0, leaves)], KtErrorKind.BadProof],
      ["another app", [c, "app_other", e.identity, h(e.card_id), 0n, h(e.leaf), path(0, leaves)], KtErrorKind.BadProof],
      ["another card id", [c, v.app_id, e.identity, h("44".repeat(32)), 0n, h(e.leaf), path(0, leaves)], KtErrorKind.BadProof],
      ["a leaf index past the checkpoint", [c, v.app_id, e.identity, h(e.card_id), 4n, h(e.leaf), path(0, leaves)], KtErrorKind.BadProof],
      ["the leaf under another index's proof", [c, v.app_id, e.identity, h(e.card_id), 0n, h(e.leaf), path(1, leaves)], KtErrorKind.BadProof],
      ["a forged leaf (the inclusion proof fails)", [c, v.app_id, e.identity, h(e.card_id), 0n, encodeLeaf(create(LogLeafSchema, { ...parseLeaf(h(e.leaf)), cardId: h("44".repeat(32)) })), path(0, leaves)], KtErrorKind.BadProof],
    ];
    verifyCardPublication(...ok());
    for (const [name, args, kind] of cases) {
      assert.throws(() => verifyCardPublication(...args), isKind(kind), name);
    }
  });
});

describe("checkpoints signed by two log keys of one name (a log key rotation's overlap)", () => {
  const origin = "umbra.example/kt";
  const oldKey: NoteSigner = { name: origin, seed: new Uint8Array(32).fill(0x11) };
  const newKey: NoteSigner = { name: origin, seed: new Uint8Array(32).fill(0x22) };
  const stranger: NoteSigner = { name: origin, seed: new Uint8Array(32).fill(0x33) };
  const body: Checkpoint = { origin, size: 7n, logRoot: new Uint8Array(32).fill(1), mapRoot: new Uint8Array(32).fill(2) };
  const both = signNote(checkpointText(body), oldKey, newKey);
  const reversed = signNote(checkpointText(body), newKey, oldKey);

  for (const [name, keys] of [
    ["only the old key trusted", [signerKey(oldKey)]],
    ["only the new key trusted", [signerKey(newKey)]],
    ["both trusted", [signerKey(oldKey), signerKey(newKey)]],
    ["both trusted, and a stranger", [signerKey(stranger), signerKey(newKey), signerKey(oldKey)]],
  ] as const) {
    test(`a note signed by both opens: ${name}`, async () => {
      for (const note of [both, reversed]) {
        const cp = await openCheckpoint(note, ...keys);
        assert.equal(cp.size, 7n);
        assert.equal(cp.sigs.length + cp.unverifiedSigs.length, 2);
      }
    });
  }

  test("a note signed by one of two trusted keys opens", async () => {
    for (const s of [oldKey, newKey]) await openCheckpoint(signNote(checkpointText(body), s), signerKey(oldKey), signerKey(newKey));
  });

  test("a note signed by keys of the log's name none of which is trusted is refused", async () => {
    await assert.rejects(openCheckpoint(both, signerKey(stranger)), isKind(KtErrorKind.UnknownLogKey));
    await assert.rejects(openCheckpoint(signNote(checkpointText(body), stranger), signerKey(oldKey), signerKey(newKey)), isKind(KtErrorKind.UnknownLogKey));
  });

  test("a trusted key's line that does not verify refuses the note, even beside a good one", async () => {
    const lines = new TextDecoder().decode(both).split("\n");
    const last = lines[lines.length - 2]!;
    const sig = base64Decode(last.slice(last.lastIndexOf(" ") + 1))!;
    sig[30]! ^= 1;
    lines[lines.length - 2] = last.slice(0, last.lastIndexOf(" ") + 1) + base64Encode(sig);
    const tampered = utf8Bytes(lines.join("\n"));
    await assert.rejects(openCheckpoint(tampered, signerKey(oldKey), signerKey(newKey)), isKind(KtErrorKind.BadSignature));
    // With only the old key trusted, the new key's line is not checked.
    await openCheckpoint(tampered, signerKey(oldKey));
  });
});

describe("witness configuration", () => {
  const open = (cfg: Partial<ClientConfig>) =>
    UmbraClient.open({ baseUrl: "http://127.0.0.1:9", token: async () => "t", storage: new MemoryStorage(), noPassphrase: true, ...cfg });
  const key = witnessKeyString("witness.test/cfg", signingPublicKey(new Uint8Array(32).fill(0x31)));

  test("a client opens with witnesses; bad ones are refused when it opens, naming what is wrong", async () => {
    await open({ witnesses: [{ key, url: "http://127.0.0.1:8091" }], witnessQuorum: 1 });
    await assert.rejects(open({ witnesses: [{ key: "not a key", url: "http://127.0.0.1:8091" }] }), /config\.witnesses: .*not <name>\+<key ID>\+<key>/);
    await assert.rejects(open({ witnesses: [{ key: v.log_key.verifier_key, url: "http://127.0.0.1:8091" }] }), /config\.witnesses: .*a log key \(0x01\) is not a witness key/);
    await assert.rejects(open({ witnesses: [{ key, url: "127.0.0.1:8091" }] }), /not http:\/\/ or https:\/\//);
    await assert.rejects(open({ witnesses: [{ key, url: "http://a" }], witnessQuorum: 2 }), /quorum 2 of 1/);
    await assert.rejects(open({ witnessQuorum: 1 }), /witnessQuorum without config\.witnesses/);
  });
});
