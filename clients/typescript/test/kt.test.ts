// Key transparency verification (src/kt) against every vector of
// pkg/kt/testdata/vectors.json (docs/wire-format.md 13.7), checked with only what the
// vectors state, as the Go tests check them; then tampered checkpoints, proofs and
// lookups, each refused with pkg/kt's kind; and RFC 9162's proofs and the map's proofs
// of trees built here from their definitions (kt-reference.ts).

import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { create } from "@bufbuild/protobuf";
import { concat, labelled, str, utf8Bytes } from "../src/bytes.js";
import { LogEventKind, LogLeafSchema, LookupProofSchema, MapProofSchema, MapValueSchema, type LookupProof, type MapValue } from "../src/gen/umbra/kt/v1/kt_pb.js";
import { fromBinary, toBinary } from "@bufbuild/protobuf";
import { base64Decode, base64Encode } from "../src/kt/base64.js";
import {
  KtError,
  KtErrorKind,
  checkpointText,
  emptyMapHash,
  encodeLeaf,
  encodeMapValue,
  leafHash,
  logDepth,
  mapKey,
  mapLeafHash,
  nextMapValue,
  openCheckpoint,
  openNote,
  packHashes,
  parseCheckpoint,
  parseLeaf,
  parseMapValue,
  parseVerifierKey,
  sameCheckpoint,
  rootFromInclusionProof,
  unpackHashes,
  valueHash,
  verifierKey,
  verifyConsistency,
  verifyConsistencyProof,
  verifyInclusion,
  verifyLookup,
  verifyMapProof,
  type Checkpoint,
  type SignedCheckpoint,
} from "../src/kt/index.js";
import { sha256 } from "../src/platform.js";
import { signingPublicKey } from "../src/pubkey.js";
import { h, repoJSON } from "./helpers.js";
import { mapHash, mapProof, mth, path, proof, signNote, signerKey, type MapEntry, type NoteSigner } from "./kt-reference.js";

const v = repoJSON("pkg/kt/testdata/vectors.json");
const hs = (list: string[]) => list.map((x) => h(x));

/** isKind asserts that err is a KtError of kind. */
function isKind(kind: KtErrorKind) {
  return (err: unknown) => {
    assert.ok(err instanceof KtError, `want a KtError, got ${String(err)}`);
    assert.equal(err.kind, kind, err.message);
    return true;
  };
}

function lookupOf(l: any): LookupProof {
  return create(LookupProofSchema, {
    identity: l.identity,
    mapValue: l.map_value ? h(l.map_value) : new Uint8Array(0),
    mapProof: create(MapProofSchema, {
      depth: l.depth,
      bitmap: h(l.bitmap),
      siblingHashes: h(l.sibling_hashes),
      otherKey: l.other_key ? h(l.other_key) : new Uint8Array(0),
      otherValueHash: l.other_value_hash ? h(l.other_value_hash) : new Uint8Array(0),
    }),
    leafIndex: BigInt(l.leaf_index),
    leaf: l.leaf ? h(l.leaf) : new Uint8Array(0),
    inclusionHashes: h(l.inclusion_hashes),
  });
}

function clone(p: LookupProof): LookupProof {
  return create(LookupProofSchema, {
    ...p,
    mapValue: p.mapValue.slice(),
    leaf: p.leaf.slice(),
    inclusionHashes: p.inclusionHashes.slice(),
    mapProof: p.mapProof && create(MapProofSchema, { ...p.mapProof, bitmap: p.mapProof.bitmap.slice(), siblingHashes: p.mapProof.siblingHashes.slice() }),
  });
}

async function vectorCheckpoints(): Promise<SignedCheckpoint[]> {
  return Promise.all(v.checkpoints.map((c: any) => openCheckpoint(utf8Bytes(c.signed_note), v.log_key.verifier_key)));
}

describe("the vectors of pkg/kt/testdata/vectors.json", () => {
  test("map keys and the empty subtree", () => {
    assert.deepEqual(emptyMapHash, h(v.map_empty_hash));
    assert.deepEqual(sha256(Uint8Array.of(2)), h(v.map_empty_hash));
    assert.equal(v.map_keys.length, 3);
    for (const k of v.map_keys) {
      assert.deepEqual(labelled("umbra/v1/kt-map-key", str(v.app_id), str(k.identity)), h(k.input), k.identity);
      assert.deepEqual(sha256(h(k.input)), h(k.key));
      assert.deepEqual(mapKey(v.app_id, k.identity), h(k.key));
    }
  });

  test("log entries: fields, canonical bytes, leaf hashes; log and map roots recomputed from them", () => {
    const keys = new Map<string, Uint8Array>(v.map_keys.map((k: any) => [k.identity, h(k.key)]));
    const leaves: Uint8Array[] = [];
    const values = new Map<string, MapValue>();
    let checked = 0;
    for (const e of v.entries) {
      const leaf = h(e.leaf);
      assert.deepEqual(sha256(Uint8Array.of(0), leaf), h(e.leaf_hash));
      assert.deepEqual(leafHash(leaf), h(e.leaf_hash));
      const l = parseLeaf(leaf);
      assert.deepEqual(l.mapKey, keys.get(e.identity));
      assert.equal(`LOG_EVENT_KIND_${LogEventKind[l.kind]}`, e.kind);
      assert.deepEqual(l.cardId, h(e.card_id));
      assert.deepEqual(l.previousCardId, e.previous_card_id ? h(e.previous_card_id) : new Uint8Array(0));
      assert.equal(l.occurredAtUnixNanos, BigInt(e.occurred_at_unix_nanos));
      assert.deepEqual(encodeLeaf(create(LogLeafSchema, { ...l })), leaf, "the leaf is its canonical encoding");
      leaves.push(leaf);
      values.set(e.identity, nextMapValue(values.get(e.identity), l, BigInt(e.index)));
      for (const c of v.checkpoints) {
        if (c.size !== leaves.length) continue;
        assert.deepEqual(mth(leaves), h(c.log_root), `log root of ${c.size}`);
        const entries: MapEntry[] = [...values].map(([id, val]) => ({ key: keys.get(id)!, valueHash: valueHash(encodeMapValue(val)) }));
        assert.deepEqual(mapHash(entries), h(c.map_root), `map root of ${c.size}`);
        checked++;
      }
    }
    assert.equal(checked, v.checkpoints.length);
  });

  test("the log key: seed, public key, verifier key", () => {
    assert.deepEqual(signingPublicKey(h(v.log_key.seed)), h(v.log_key.public_key));
    assert.equal(verifierKey(v.log_key.origin, h(v.log_key.public_key)), v.log_key.verifier_key);
    const k = parseVerifierKey(v.log_key.verifier_key);
    assert.equal(k.name, v.log_key.origin);
    assert.deepEqual(k.publicKey, h(v.log_key.public_key));
    assert.equal(signerKey({ name: v.log_key.origin, seed: h(v.log_key.seed) }), v.log_key.verifier_key);
  });

  test("checkpoints open with the log key and say what the vectors state; the consistency proof verifies", async () => {
    const cps = await vectorCheckpoints();
    v.checkpoints.forEach((c: any, i: number) => {
      const cp = cps[i]!;
      assert.equal(cp.origin, v.log_key.origin);
      assert.equal(cp.size, BigInt(c.size));
      assert.deepEqual(cp.logRoot, h(c.log_root));
      assert.deepEqual(cp.mapRoot, h(c.map_root));
      assert.equal(checkpointText(cp) + "\n", c.signed_note.slice(0, c.signed_note.indexOf("\n\n") + 2));
      assert.equal(cp.sigs.length, 1);
      // The signature is the one a signer with the vector's seed makes.
      assert.deepEqual(signNote(checkpointText(cp), { name: v.log_key.origin, seed: h(v.log_key.seed) }), utf8Bytes(c.signed_note));
    });
    verifyConsistency(cps[0]!, cps[1]!, hs(v.consistency_proof));
    assert.deepEqual(proof(2, v.entries.map((e: any) => h(e.leaf))), hs(v.consistency_proof), "RFC 9162's PROOF(2, D[4])");
  });

  test("a log key rotation's checkpoint (13.5): signed by the log key and its successor, it opens with either alone and is the last checkpoint", async () => {
    const r = v.log_key_rotation;
    assert.deepEqual(signingPublicKey(h(r.new_log_key.seed)), h(r.new_log_key.public_key));
    assert.equal(verifierKey(r.new_log_key.origin, h(r.new_log_key.public_key)), r.new_log_key.verifier_key);
    assert.equal(r.new_log_key.origin, v.log_key.origin, "a rotation keeps the log's origin");
    const signed = utf8Bytes(r.signed_note);
    const last = (await vectorCheckpoints()).at(-1)!;
    for (const keys of [[v.log_key.verifier_key], [r.new_log_key.verifier_key], [v.log_key.verifier_key, r.new_log_key.verifier_key]]) {
      const cp = await openCheckpoint(signed, ...keys);
      assert.ok(sameCheckpoint(cp, last), "the rotation re-signs the same body");
      assert.equal(cp.sigs.length, keys.length);
    }
    // The same key configured twice is one key, not an ambiguity.
    await openCheckpoint(signed, r.new_log_key.verifier_key, r.new_log_key.verifier_key);
    // The bytes are the ones signers with the vector's seeds make, old key first.
    const text = checkpointText(last);
    assert.deepEqual(signNote(text, { name: v.log_key.origin, seed: h(v.log_key.seed) }, { name: r.new_log_key.origin, seed: h(r.new_log_key.seed) }), signed);
    // A key of the same name that signed nothing here is not enough.
    const stranger = signerKey({ name: v.log_key.origin, seed: new Uint8Array(32).fill(7) });
    await assert.rejects(openCheckpoint(signed, stranger), isKind(KtErrorKind.UnknownLogKey));
  });

  test("every lookup verifies, with what the vectors state", async () => {
    const cp = (await vectorCheckpoints())[1]!;
    assert.equal(v.lookups.length, 3);
    for (const l of v.lookups) {
      const got = verifyLookup(cp, v.app_id, l.identity, lookupOf(l));
      if (l.map_value) {
        const vh = valueHash(h(l.map_value));
        assert.deepEqual(vh, h(l.value_hash));
        assert.deepEqual(mapLeafHash(mapKey(v.app_id, l.identity), vh), h(l.map_leaf_hash));
        assert.deepEqual(got.value, parseMapValue(h(l.map_value)));
        assert.equal(got.leafIndex, BigInt(l.leaf_index));
        assert.equal(l.inclusion_hashes, Buffer.from(packHashes(path(l.leaf_index, v.entries.map((e: any) => h(e.leaf))))).toString("hex"));
      } else {
        assert.equal(got.value, undefined, `${l.identity} is absent`);
        assert.equal(got.cardId, undefined);
      }
    }
    // The whole LookupProof as the service sends it: its fields, and it decodes to them.
    for (const l of v.lookups) {
      assert.deepEqual(toBinary(LookupProofSchema, lookupOf(l)), h(l.lookup_proof), `${l.identity}: the encoded LookupProof`);
      verifyLookup(cp, v.app_id, l.identity, fromBinary(LookupProofSchema, h(l.lookup_proof)));
    }
    const [alice, bob, carol] = v.lookups.map((l: any) => verifyLookup(cp, v.app_id, l.identity, lookupOf(l)));
    assert.deepEqual(alice.cardId, h("33".repeat(32)), "alice's current card is the rotated one");
    assert.equal(bob.cardId, undefined, "bob revoked his card");
    assert.equal(bob.leaf?.kind, LogEventKind.REVOCATION);
    assert.equal(carol.value, undefined);
  });
});

describe("checkpoints that are not signed by the log key are refused", () => {
  const logKey: NoteSigner = { name: "umbra.example/kt", seed: new Uint8Array(32).fill(1) };
  const impostor: NoteSigner = { name: "umbra.example/kt", seed: new Uint8Array(32).fill(2) };
  const witness: NoteSigner = { name: "witness.example", seed: new Uint8Array(32).fill(3) };
  const body: Checkpoint = { origin: logKey.name, size: 42n, logRoot: new Uint8Array(32).fill(0xaa), mapRoot: new Uint8Array(32).fill(0xbb) };
  const text = checkpointText(body);
  const signed = signNote(text, logKey);
  const other = checkpointText({ ...body, size: 43n });
  const otherSigned = new TextDecoder().decode(signNote(other, logKey));
  const spliced = utf8Bytes(text + "\n" + otherSigned.slice(other.length + 1));
  const swap = (b: Uint8Array, from: string, to: string) => utf8Bytes(new TextDecoder().decode(b).replace(from, to));

  test("the log key's checkpoint opens; a witness's cosignature beside it is kept unverified", async () => {
    const cp = await openCheckpoint(signed, signerKey(logKey));
    assert.equal(cp.size, 42n);
    assert.deepEqual(cp.logRoot, body.logRoot);
    const cosigned = await openCheckpoint(signNote(text, logKey, witness), signerKey(logKey));
    assert.equal(cosigned.unverifiedSigs.length, 1);
    assert.equal(cosigned.unverifiedSigs[0]!.name, witness.name);
    const both = await openCheckpoint(signNote(text, witness, logKey), signerKey(logKey), signerKey(witness));
    assert.equal(both.sigs.length, 2);
  });

  const cases: [string, Uint8Array, string[], KtErrorKind][] = [
    ["the size changed", swap(signed, "\n42\n", "\n43\n"), [signerKey(logKey)], KtErrorKind.BadSignature],
    ["another checkpoint's signature", spliced, [signerKey(logKey)], KtErrorKind.BadSignature],
    ["signed by another key of the log's name", signNote(text, impostor), [signerKey(logKey)], KtErrorKind.UnknownLogKey],
    ["signed only by a known key of another name", signNote(text, witness), [signerKey(logKey), signerKey(witness)], KtErrorKind.UnknownLogKey],
    ["no log key known", signed, [], KtErrorKind.UnknownLogKey],
    ["not a note", utf8Bytes("umbra.example/kt\n42\n"), [signerKey(logKey)], KtErrorKind.Malformed],
    ["too large", new Uint8Array(16 * 1024 + 1).fill(0x61), [signerKey(logKey)], KtErrorKind.Malformed],
    ["a control character", swap(signed, "umbra.example/kt\n42", "umbra.example/kt\n4\t2"), [signerKey(logKey)], KtErrorKind.Malformed],
    ["not UTF-8", concat(Uint8Array.of(0xff), signed), [signerKey(logKey)], KtErrorKind.Malformed],
    ["a signature line without the em dash", swap(signed, "\u2014 ", "- "), [signerKey(logKey)], KtErrorKind.Malformed],
    ["a signature in unpadded base64", utf8Bytes(new TextDecoder().decode(signed).replace(/=\n$/, "\n")), [signerKey(logKey)], KtErrorKind.Malformed],
    ["no final newline", signed.subarray(0, signed.length - 1), [signerKey(logKey)], KtErrorKind.Malformed],
    ["a body that is not a checkpoint", signNote("umbra.example/kt\n42\n", logKey), [signerKey(logKey)], KtErrorKind.Malformed],
  ];
  for (const [name, note, keys, kind] of cases) {
    test(name, async () => {
      await assert.rejects(openCheckpoint(note, ...keys), isKind(kind));
    });
  }

  test("a known witness whose cosignature does not verify makes the note bad", async () => {
    const good = new TextDecoder().decode(signNote(text, logKey, witness));
    const lines = good.split("\n");
    const w = lines[lines.length - 2]!;
    const sig = base64Decode(w.slice(w.lastIndexOf(" ") + 1))!;
    sig[10]! ^= 1;
    lines[lines.length - 2] = w.slice(0, w.lastIndexOf(" ") + 1) + base64Encode(sig);
    await assert.rejects(openCheckpoint(utf8Bytes(lines.join("\n")), signerKey(logKey), signerKey(witness)), isKind(KtErrorKind.BadSignature));
    // Without the witness's key the same note opens: its line is not checked.
    await openCheckpoint(utf8Bytes(lines.join("\n")), signerKey(logKey));
  });

  test("a note no known key signed is refused by openNote itself", async () => {
    await assert.rejects(openNote(signed, []), isKind(KtErrorKind.UnknownLogKey));
    await assert.rejects(openNote(signNote(text, witness), [parseVerifierKey(signerKey(logKey))]), isKind(KtErrorKind.UnknownLogKey));
  });

  test("a signed checkpoint over 16 KiB is refused, however well signed", async () => {
    const long: NoteSigner = { name: "o".repeat(16 * 1024), seed: new Uint8Array(32).fill(4) };
    const big = signNote(checkpointText({ ...body, origin: long.name }), long);
    await assert.rejects(openCheckpoint(big, signerKey(long)), isKind(KtErrorKind.Malformed));
  });

  test("more than 100 signature lines are refused", async () => {
    const many = signNote(text, logKey, ...Array.from({ length: 100 }, (_, i) => ({ name: `w${i}`, seed: new Uint8Array(32).fill(i + 10) })));
    await assert.rejects(openCheckpoint(many, signerKey(logKey)), isKind(KtErrorKind.Malformed));
  });

  test("verifier keys that are not valid are refused as configuration", () => {
    const good = signerKey(logKey);
    for (const bad of ["", good.replace("+", " +"), good.slice(0, -2), good.replace(/\+[0-9a-f]{8}\+/, "+00000000+"), "with space+00000000+AQ==", `x+${"0".repeat(8)}+`]) {
      assert.throws(() => parseVerifierKey(bad), (e: unknown) => e instanceof Error && !(e instanceof KtError), bad);
    }
  });
});

describe("checkpoint bodies", () => {
  const root = "A".repeat(43) + "=";
  const good = checkpointText({ origin: "o", size: 1n, logRoot: new Uint8Array(32), mapRoot: new Uint8Array(32) });
  test("the largest size is read", () => {
    assert.equal(parseCheckpoint(good).size, 1n);
    assert.equal(parseCheckpoint(`o\n18446744073709551615\n${root}\numbra-map ${root}\n`).size, (1n << 64n) - 1n);
  });
  const bad: Record<string, string> = {
    "no map line": `o\n1\n${root}\n`,
    "an extra line": good + "x\n",
    "no final newline": good.slice(0, -1),
    "a leading zero": `o\n01\n${root}\numbra-map ${root}\n`,
    "a negative size": `o\n-1\n${root}\numbra-map ${root}\n`,
    "a size past 2^64 - 1": `o\n18446744073709551616\n${root}\numbra-map ${root}\n`,
    "a short root": `o\n1\nAAAA\numbra-map ${root}\n`,
    "unpadded base64": `o\n1\n${root.slice(0, -1)}\numbra-map ${root}\n`,
    "a root with unused bits set": `o\n1\n${"A".repeat(42)}B=\numbra-map ${root}\n`,
    "another extension": `o\n1\n${root}\nother ${root}\n`,
    "an empty origin": `\n1\n${root}\numbra-map ${root}\n`,
  };
  for (const [name, text] of Object.entries(bad)) {
    test(`refused: ${name}`, () => {
      assert.throws(() => parseCheckpoint(text), isKind(KtErrorKind.Malformed));
    });
  }
});

describe("RFC 9162 proofs of trees built from the definitions", () => {
  const leaves = Array.from({ length: 40 }, (_, i) => utf8Bytes(`leaf ${i}`));
  const cp = (n: number): Checkpoint => ({ origin: "t", size: BigInt(n), logRoot: mth(leaves.slice(0, n)), mapRoot: emptyMapHash });

  test("every inclusion proof of trees of 1 to 40 entries verifies, and no other index, size or path does", () => {
    for (let n = 1; n <= 40; n++) {
      const tree = leaves.slice(0, n);
      for (let m = 0; m < n; m++) {
        const p = path(m, tree);
        verifyInclusion(cp(n), BigInt(m), tree[m]!, p);
        assert.equal(rootFromInclusionProof(BigInt(m), BigInt(n), leafHash(tree[m]!), [...p, p[0] ?? new Uint8Array(32)]), undefined, "one hash too many");
        if (p.length > 0) {
          assert.equal(rootFromInclusionProof(BigInt(m), BigInt(n), leafHash(tree[m]!), p.slice(1)), undefined, "one hash too few");
          for (let i = 0; i < p.length; i++) {
            const t = p.map((x) => x.slice());
            t[i]![0]! ^= 1;
            assert.throws(() => verifyInclusion(cp(n), BigInt(m), tree[m]!, t), isKind(KtErrorKind.BadProof));
          }
        }
        if (m + 1 < n) assert.throws(() => verifyInclusion(cp(n), BigInt(m + 1), tree[m]!, p), isKind(KtErrorKind.BadProof), `entry ${m} as ${m + 1} of ${n}`);
        assert.throws(() => verifyInclusion(cp(n), BigInt(m), utf8Bytes("other"), p), isKind(KtErrorKind.BadProof));
      }
      assert.throws(() => verifyInclusion(cp(n), BigInt(n), leaves[n]!, []), isKind(KtErrorKind.BadProof), "an index past the tree");
    }
  });

  test("every consistency proof between trees of 1 to 40 entries verifies, and no tampered one does", () => {
    for (let n = 1; n <= 40; n++) {
      for (let m = 1; m <= n; m++) {
        const p = proof(m, leaves.slice(0, n));
        verifyConsistency(cp(m), cp(n), m === n ? [] : p);
        if (m === n) continue;
        assert.equal(verifyConsistencyProof(BigInt(m), BigInt(n), [...p, p[0]!], cp(m).logRoot, cp(n).logRoot), false, "one hash too many");
        assert.equal(verifyConsistencyProof(BigInt(m), BigInt(n), p.slice(0, -1), cp(m).logRoot, cp(n).logRoot), false, "one hash too few");
        for (let i = 0; i < p.length; i++) {
          const t = p.map((x) => x.slice());
          t[i]![31]! ^= 1;
          assert.throws(() => verifyConsistency(cp(m), cp(n), t), isKind(KtErrorKind.Inconsistent), `${m} to ${n}, hash ${i}`);
        }
        // A rewritten log: the same sizes, one entry changed.
        const rewritten = [...leaves.slice(0, n)];
        rewritten[m - 1] = utf8Bytes("rewritten");
        assert.throws(() => verifyConsistency(cp(m), { ...cp(n), logRoot: mth(rewritten) }, proof(m, rewritten)), isKind(KtErrorKind.Inconsistent));
      }
    }
  });

  test("checkpoints that cannot be of one log are inconsistent", () => {
    const p = proof(3, leaves.slice(0, 7));
    assert.throws(() => verifyConsistency(cp(7), cp(3), p), isKind(KtErrorKind.Inconsistent), "a log that shrank");
    assert.throws(() => verifyConsistency(cp(7), { ...cp(7), mapRoot: new Uint8Array(32) }, []), isKind(KtErrorKind.Inconsistent), "one size, two map roots");
    assert.throws(() => verifyConsistency(cp(7), { ...cp(7), logRoot: mth(leaves.slice(1, 8)) }, []), isKind(KtErrorKind.Inconsistent), "one size, two log roots");
    assert.throws(() => verifyConsistency(cp(3), { ...cp(7), origin: "other" }, p), isKind(KtErrorKind.Inconsistent), "two origins");
    assert.throws(() => verifyConsistency(cp(7), cp(7), [p[0]!]), isKind(KtErrorKind.Malformed), "a proof between equal sizes");
    assert.throws(() => verifyConsistency(cp(3), cp(7), [new Uint8Array(31)]), isKind(KtErrorKind.Malformed), "a short hash");
    assert.throws(() => verifyConsistency(cp(3), cp(7), Array.from({ length: 129 }, () => new Uint8Array(32))), isKind(KtErrorKind.Malformed), "too many hashes");
    verifyConsistency({ ...cp(0), logRoot: sha256(new Uint8Array(0)) }, cp(7), []);
    assert.throws(() => verifyConsistency(cp(0), cp(7), p), isKind(KtErrorKind.Inconsistent), "a proof from the empty log");
  });
});

describe("map proofs of maps built from the definition", () => {
  const keys = Array.from({ length: 200 }, (_, i) => sha256(utf8Bytes(`key ${i}`)));
  const entries: MapEntry[] = keys.slice(0, 150).map((key, i) => ({ key, valueHash: sha256(utf8Bytes(`value ${i}`)) }));
  const root = mapHash(entries);

  test("every present key and every absent key verifies, and nothing else does", () => {
    for (const [i, key] of keys.entries()) {
      const p = mapProof(entries, key);
      if (i < 150) {
        // verifyMapProof hashes the value: present entries are proved against a tree
        // whose value hashes are those of the values.
        const value = utf8Bytes(`v${i}`);
        const withValues = entries.map((e, j) => (j === i ? { key, valueHash: valueHash(value) } : e));
        const r = mapHash(withValues);
        const pv = mapProof(withValues, key);
        verifyMapProof(r, key, value, pv);
        assert.throws(() => verifyMapProof(r, key, utf8Bytes("other"), pv), isKind(KtErrorKind.BadProof), "another value");
        assert.throws(() => verifyMapProof(r, key, undefined, pv), isKind(KtErrorKind.BadProof), "present said absent");
      } else {
        verifyMapProof(root, key, undefined, p);
        assert.throws(() => verifyMapProof(root, key, utf8Bytes("v"), p), (e) => e instanceof KtError, "absent said present");
      }
      for (let s = 0; s < p.siblingHashes.length; s += 32) {
        const flipped = p.siblingHashes.slice();
        flipped[s + 31]! ^= 1;
        const t = create(MapProofSchema, { ...p, siblingHashes: flipped });
        assert.throws(() => verifyMapProof(root, key, undefined, t), (e) => e instanceof KtError);
      }
    }
  });

  test("a malformed or misleading proof is refused with its kind", () => {
    const absent = keys[160]!;
    const p = mapProof(entries, absent);
    assert.ok(p.otherKey.length === 32 || p.depth > 0);
    const edits: [string, (q: any) => void, KtErrorKind][] = [
      ["depth past 256", (q) => ((q.depth = 257), (q.bitmap = new Uint8Array(33))), KtErrorKind.Malformed],
      ["a bitmap of the wrong length", (q) => (q.bitmap = concat(q.bitmap, Uint8Array.of(0))), KtErrorKind.Malformed],
      ["a bit set past the depth", (q) => ((q.depth = 1), (q.bitmap = Uint8Array.of(0xc0)), (q.siblingHashes = new Uint8Array(64))), KtErrorKind.Malformed],
      ["one sibling too many", (q) => (q.siblingHashes = concat(q.siblingHashes, new Uint8Array(32))), KtErrorKind.Malformed],
      ["more sibling hashes than the depth", (q) => (q.siblingHashes = new Uint8Array((q.depth + 1) * 32)), KtErrorKind.Malformed],
      ["sibling hashes a byte short", (q) => (q.siblingHashes = concat(q.siblingHashes, new Uint8Array(32)).subarray(1)), KtErrorKind.Malformed],
      ["sibling hashes a byte long", (q) => (q.siblingHashes = concat(q.siblingHashes, Uint8Array.of(0))), KtErrorKind.Malformed],
      ["another key with a short value hash", (q) => ((q.otherKey = keys[0]), (q.otherValueHash = new Uint8Array(31))), KtErrorKind.Malformed],
      ["the absent key as the other key", (q) => ((q.otherKey = absent), (q.otherValueHash = new Uint8Array(32))), KtErrorKind.BadProof],
      ["another key off the path", (q) => ((q.otherKey = absent.map((b: number) => b ^ 0xff)), (q.otherValueHash = new Uint8Array(32))), KtErrorKind.BadProof],
      ["one level shallower", (q) => ((q.depth = q.depth - 1), (q.bitmap = q.bitmap.slice(0, (q.depth + 7) >> 3))), KtErrorKind.Malformed],
    ];
    for (const [name, edit, kind] of edits) {
      const q: any = create(MapProofSchema, { ...p, bitmap: p.bitmap.slice(), siblingHashes: p.siblingHashes.slice() });
      edit(q);
      assert.throws(() => verifyMapProof(root, absent, undefined, q), (e: unknown) => e instanceof KtError && (e.kind === kind || (name === "one level shallower" && e.kind === KtErrorKind.BadProof)), name);
    }
    const present = mapProof(entries, keys[3]!);
    assert.throws(() => verifyMapProof(root, keys[3]!, utf8Bytes("x"), create(MapProofSchema, { ...present, otherKey: keys[4]!, otherValueHash: new Uint8Array(32) })), isKind(KtErrorKind.Malformed));
    // The empty map proves every key absent, and nothing present.
    // A present key's own leaf passed off as "another" entry on its path: without the
    // key check, the absence of a present key would verify.
    const presentKey = keys[5]!;
    const pp = mapProof(entries, presentKey);
    assert.equal(pp.otherKey.length, 0);
    const posing = create(MapProofSchema, { ...pp, otherKey: presentKey, otherValueHash: entries[5]!.valueHash });
    assert.throws(() => verifyMapProof(root, presentKey, undefined, posing), isKind(KtErrorKind.BadProof));
    verifyMapProof(emptyMapHash, absent, undefined, create(MapProofSchema, {}));
    verifyMapProof(emptyMapHash, absent, undefined, undefined);
    assert.throws(() => verifyMapProof(emptyMapHash, absent, utf8Bytes("x"), undefined), isKind(KtErrorKind.BadProof));
  });
});

describe("packed hashes", () => {
  test("split into 32-byte hashes, bounded, and a length not a multiple of 32 refused", () => {
    const hashes = [new Uint8Array(32).fill(1), new Uint8Array(32).fill(2), new Uint8Array(32).fill(3)];
    const packed = packHashes(hashes);
    assert.equal(packed.length, 96);
    assert.deepEqual(unpackHashes("test", packed, 3), hashes);
    assert.deepEqual(unpackHashes("test", new Uint8Array(0), 0), []);
    assert.throws(() => unpackHashes("test", packed, 2), isKind(KtErrorKind.Malformed));
    assert.throws(() => unpackHashes("test", packed.subarray(1), 3), isKind(KtErrorKind.Malformed));
    assert.throws(() => unpackHashes("test", concat(packed, Uint8Array.of(0)), 4), isKind(KtErrorKind.Malformed));
    assert.deepEqual([0n, 1n, 2n, 3n, 4n, 5n, 1_000_000n, 1n << 40n].map(logDepth), [0, 0, 1, 2, 2, 3, 20, 40]);
  });
});

describe("lookups that a malicious server could change are refused", () => {
  const byId = Object.fromEntries(v.lookups.map((l: any) => [l.identity, lookupOf(l)])) as Record<string, LookupProof>;
  const [a, b, c] = v.lookups.map((l: any) => l.identity as string) as [string, string, string];
  const leaf = (i: number) => h(v.entries[i].leaf);
  const allLeaves = v.entries.map((e: any) => h(e.leaf)) as Uint8Array[];
  const older = encodeMapValue(create(MapValueSchema, { version: 1, cardId: h("11".repeat(32)), cardLogIndex: 0n, latestLogIndex: 0n }));
  const cases: [string, string, string, ((p: LookupProof) => void) | undefined, KtErrorKind][] = [
    ["the older card served as current", a, a, (p) => ((p.mapValue = older), (p.leafIndex = 0n), (p.leaf = leaf(0)), (p.inclusionHashes = packHashes(path(0, allLeaves)))), KtErrorKind.BadProof],
    ["a present identity said absent", a, a, (p) => ((p.mapValue = new Uint8Array(0)), (p.leaf = new Uint8Array(0)), (p.inclusionHashes = new Uint8Array(0)), (p.leafIndex = 0n)), KtErrorKind.BadProof],
    ["a revoked identity said absent", b, b, (p) => ((p.mapValue = new Uint8Array(0)), (p.leaf = new Uint8Array(0)), (p.inclusionHashes = new Uint8Array(0)), (p.leafIndex = 0n)), KtErrorKind.BadProof],
    ["an absent identity said present with another's entry", c, a, (p) => (p.identity = c), KtErrorKind.BadProof],
    ["the proof names another identity", a, b, undefined, KtErrorKind.BadProof],
    ["the log entry of another identity", a, a, (p) => (p.leaf = leaf(1)), KtErrorKind.BadProof],
    ["the log entry of the replaced card", a, a, (p) => ((p.leaf = leaf(0)), (p.leafIndex = 0n), (p.inclusionHashes = packHashes(path(0, allLeaves)))), KtErrorKind.BadProof],
    ["a log entry not in the log", a, a, (p) => (p.leaf = encodeLeaf(create(LogLeafSchema, { ...parseLeaf(leaf(2)), occurredAtUnixNanos: 99n }))), KtErrorKind.BadProof],
    ["an inclusion proof hash changed", a, a, (p) => p.inclusionHashes.set(new Uint8Array(32).fill(9), 0), KtErrorKind.BadProof],
    ["an inclusion proof hash dropped", a, a, (p) => (p.inclusionHashes = p.inclusionHashes.subarray(32)), KtErrorKind.BadProof],
    ["a revocation served as a publication", b, b, (p) => ((p.leaf = leaf(1)), (p.leafIndex = 1n), (p.inclusionHashes = packHashes(path(1, allLeaves)))), KtErrorKind.BadProof],
    ["a map sibling changed", a, a, (p) => p.mapProof!.siblingHashes.set(new Uint8Array(32).fill(7), 0), KtErrorKind.BadProof],
    ["a map value that is not canonical", a, a, (p) => (p.mapValue = concat(p.mapValue, Uint8Array.of(0x08, 0x01))), KtErrorKind.Malformed],
    ["a log entry that is not canonical", a, a, (p) => (p.leaf = concat(p.leaf, Uint8Array.of(0x08, 0x01))), KtErrorKind.Malformed],
    ["an absent identity's proof with a log entry", c, c, (p) => (p.leaf = leaf(0)), KtErrorKind.Malformed],
    ["inclusion hashes a byte short", a, a, (p) => (p.inclusionHashes = p.inclusionHashes.subarray(1)), KtErrorKind.Malformed],
    ["inclusion hashes a byte long", a, a, (p) => (p.inclusionHashes = concat(p.inclusionHashes, Uint8Array.of(0))), KtErrorKind.Malformed],
    ["more inclusion hashes than the log tree's depth", a, a, (p) => (p.inclusionHashes = new Uint8Array((logDepth(4n) + 1) * 32)), KtErrorKind.Malformed],
  ];
  for (const [name, identity, from, edit, kind] of cases) {
    test(name, async () => {
      const cp = (await vectorCheckpoints())[1]!;
      const p = clone(byId[from]!);
      edit?.(p);
      assert.throws(() => verifyLookup(cp, v.app_id, identity, p), isKind(kind));
    });
  }

  test("a proof labelled with another identity is refused, though it proves the one asked", async () => {
    const cp = (await vectorCheckpoints())[1]!;
    const p = clone(byId[a]!);
    p.identity = b;
    assert.throws(() => verifyLookup(cp, v.app_id, a, p), isKind(KtErrorKind.BadProof));
  });

  test("the lookups of another app, or against a map that does not hold alice's rotation, are refused", async () => {
    const [first, cp] = await vectorCheckpoints();
    assert.throws(() => verifyLookup(cp!, "another_app", a, byId[a]), isKind(KtErrorKind.BadProof));
    assert.throws(() => verifyLookup({ ...cp!, mapRoot: first!.mapRoot }, v.app_id, a, byId[a]), isKind(KtErrorKind.BadProof));
    assert.throws(() => verifyLookup({ ...cp!, size: 2n, logRoot: first!.logRoot }, v.app_id, a, byId[a]), isKind(KtErrorKind.BadProof), "an entry past a smaller checkpoint");
    assert.throws(() => verifyLookup(cp!, v.app_id, a, undefined), isKind(KtErrorKind.BadProof), "no proof");
  });
});

describe("base64 as Go reads it", () => {
  test("padding is required, the unused bits are ignored unless strict", () => {
    assert.deepEqual(base64Decode("YQ=="), utf8Bytes("a"));
    assert.equal(base64Decode("YQ"), undefined);
    assert.equal(base64Decode("Y Q=="), undefined);
    assert.equal(base64Decode("YQ=a"), undefined);
    assert.equal(base64Decode("YQ==YQ=="), undefined);
    assert.deepEqual(base64Decode("YR=="), utf8Bytes("a"));
    assert.equal(base64Decode("YR==", true), undefined);
    assert.deepEqual(base64Decode("YW\nJj"), utf8Bytes("abc"));
    assert.deepEqual(base64Decode(""), new Uint8Array(0));
    for (let n = 0; n < 40; n++) {
      const b = sha256(Uint8Array.of(n)).subarray(0, n % 33);
      assert.deepEqual(base64Decode(base64Encode(b), true), b);
      assert.equal(base64Encode(b), Buffer.from(b).toString("base64"));
    }
  });
});

describe("a map that disagrees with its log is refused", () => {
  // A log of leaves and a map a malicious server wrote as it liked (pkg/kt's
  // TestLookupRefusesAMapThatDisagreesWithTheLog), built from the definitions.
  const app = "app_test";
  const pub = LogEventKind.PUBLICATION;
  const card = (b: number) => new Uint8Array(32).fill(b);
  const leafOf = (identity: string, kind: LogEventKind, c: number, at: bigint) =>
    encodeLeaf(create(LogLeafSchema, { version: 1, mapKey: mapKey(app, identity), kind, cardId: card(c), occurredAtUnixNanos: at }));
  const value = (v: { cardId?: Uint8Array; cardLogIndex?: bigint; latestLogIndex?: bigint }) => encodeMapValue(create(MapValueSchema, { version: 1, ...v }));
  function forged(leaves: Uint8Array[], mapValue: Uint8Array, leafIndex: number): { cp: Checkpoint; p: LookupProof } {
    const key = mapKey(app, "alice");
    const entries: MapEntry[] = [{ key, valueHash: valueHash(mapValue) }, { key: mapKey(app, "zed"), valueHash: valueHash(value({ cardId: card(7) })) }];
    const cp: Checkpoint = { origin: "test", size: BigInt(leaves.length), logRoot: mth(leaves), mapRoot: mapHash(entries) };
    const p = create(LookupProofSchema, {
      identity: "alice",
      mapValue,
      mapProof: mapProof(entries, key),
      leafIndex: BigInt(leafIndex),
      leaf: leaves[leafIndex]!,
      inclusionHashes: packHashes(path(leafIndex, leaves)),
    });
    return { cp, p };
  }

  test("the honest construction verifies", () => {
    const { cp, p } = forged([leafOf("alice", pub, 9, 1n)], value({ cardId: card(9) }), 0);
    assert.deepEqual(verifyLookup(cp, app, "alice", p).cardId, card(9));
  });

  const cases: [string, Uint8Array[], Uint8Array, number][] = [
    ["the entry is another identity's publication of the card", [leafOf("bob", pub, 9, 1n)], value({ cardId: card(9) }), 0],
    ["the entry is the revocation of the card the map says is current", [leafOf("alice", LogEventKind.REVOCATION, 9, 1n)], value({ cardId: card(9) }), 0],
    ["the entry publishes another card", [leafOf("alice", pub, 8, 1n)], value({ cardId: card(9) }), 0],
    ["no card, but the latest entry is a publication", [leafOf("alice", pub, 9, 1n)], value({}), 0],
    ["an entry past the checkpoint", [leafOf("alice", pub, 9, 1n)], value({ cardId: card(9), latestLogIndex: 5n }), 0],
    ["the entry proved is not the one the map names", [leafOf("alice", pub, 9, 1n), leafOf("alice", pub, 9, 1n)], value({ cardId: card(9), cardLogIndex: 1n, latestLogIndex: 1n }), 0],
    ["no card, and the entry proved is not the latest", [leafOf("alice", LogEventKind.REVOCATION, 9, 1n), leafOf("alice", LogEventKind.REVOCATION, 9, 2n)], value({ latestLogIndex: 1n }), 0],
  ];
  for (const [name, leaves, mapValue, index] of cases) {
    test(name, () => {
      const { cp, p } = forged(leaves, mapValue, index);
      assert.throws(() => verifyLookup(cp, app, "alice", p), isKind(KtErrorKind.BadProof));
    });
  }
});
