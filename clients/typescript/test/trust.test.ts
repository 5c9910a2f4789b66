import { test } from "node:test";
import assert from "node:assert/strict";
import { labelled, toHex, str, u16 } from "../src/bytes.js";
import { E2eeErrorKind } from "../src/errors.js";
import { LabelSafetyNumber } from "../src/labels.js";
import { parseServiceKeyRotation, safetyNumber, safetyNumberHalf, signServiceKeyRotation, verifyServiceKeyRotation } from "../src/trust.js";
import { signingPublicKey } from "../src/pubkey.js";
import { flip, h, repoJSON, throwsKind } from "./helpers.js";
import { cards } from "./vectors.js";

const tv = repoJSON("pkg/e2ee/testdata/trust_vectors.json");

test("trust vectors: safety numbers", () => {
  for (const s of tv.safety_numbers) {
    const a = cards[s.card_a]!, b = cards[s.card_b]!;
    assert.equal(toHex(labelled(LabelSafetyNumber, u16(1), str(a.identity), a.signingKey)), s.first_hash_input_a);
    assert.equal(toHex(labelled(LabelSafetyNumber, u16(1), str(b.identity), b.signingKey)), s.first_hash_input_b);
    assert.equal(safetyNumberHalf(a.identity, a.signingKey), s.half_a);
    assert.equal(safetyNumberHalf(b.identity, b.signingKey), s.half_b);
    assert.equal(safetyNumber(a.identity, a.signingKey, b.identity, b.signingKey), s.safety_number);
    assert.equal(safetyNumber(b.identity, b.signingKey, a.identity, a.signingKey), s.safety_number);
  }
  const a = cards["alice-1"]!;
  throwsKind(() => safetyNumber(a.identity, a.signingKey, a.identity, cards["bob"]!.signingKey), E2eeErrorKind.Malformed);
  throwsKind(() => safetyNumberHalf(a.identity, new Uint8Array(32)), E2eeErrorKind.Malformed);
});

test("trust vectors: service key rotation", () => {
  const r = tv.service_key_rotation;
  assert.equal(toHex(signingPublicKey(h(r.new_seed))), r.new_public_key);
  const made = signServiceKeyRotation(h("5e".repeat(32)), r.previous_key_id, r.new_key_id, h(r.new_public_key), new Date(r.created_at_unix_seconds * 1000));
  assert.equal(toHex(made.content), r.content);
  assert.equal(toHex(labelled("umbra/v1/card-service-key-rotation", made.content)), r.signature_input);
  assert.equal(toHex(made.signature), r.signature);
  const got = verifyServiceKeyRotation(r.previous_key_id, h(r.previous_public_key), h(r.content), h(r.signature));
  assert.equal(got.newKeyId, r.new_key_id);
  assert.equal(toHex(got.newPublicKey), r.new_public_key);
  assert.equal(got.createdAtUnixSeconds, BigInt(r.created_at_unix_seconds));
  throwsKind(() => verifyServiceKeyRotation(r.previous_key_id, h(r.previous_public_key), h(r.content), flip(h(r.signature), 3)), E2eeErrorKind.BadSignature);
  throwsKind(() => verifyServiceKeyRotation(r.previous_key_id, h(r.new_public_key), h(r.content), h(r.signature)), E2eeErrorKind.BadSignature);
  throwsKind(() => verifyServiceKeyRotation("service-key-0", h(r.previous_public_key), h(r.content), h(r.signature)), E2eeErrorKind.Malformed);
  throwsKind(() => parseServiceKeyRotation(flip(h(r.content), 1)), E2eeErrorKind.Malformed);
  throwsKind(() => parseServiceKeyRotation(new Uint8Array(257)), E2eeErrorKind.TooLarge);
});
