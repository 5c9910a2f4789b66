import { test } from "node:test";
import assert from "node:assert/strict";
import { ristretto255_oprf } from "@noble/curves/ed25519.js";
import { labelled, toHex, utf8Bytes } from "../src/bytes.js";
import { KeyBackupErrorKind } from "../src/errors.js";
import { Blinded, BackupSlot, oprfInput, type Binding } from "../src/backup-oprf.js";
import { BackupKeys, checkPasswordCost, stretch, type RecordParams } from "../src/backup-keys.js";
import { formatRecoveryKey, newRecoveryKey, parseRecoveryKey } from "../src/recovery-key.js";
import { parseKeyBundle } from "../src/keystore.js";
import { LabelBackupAuthKey, LabelBackupEncryptionKey } from "../src/labels.js";
import { flip, h, rejectsBackupKind, repoJSON } from "./helpers.js";

const kb = repoJSON("pkg/keybackup/testdata/vectors.json");

test("the OPRF key of the vectors: RFC 9497 DeriveKeyPair", () => {
  const kp = ristretto255_oprf.voprf.deriveKeyPair(h(kb.oprf_server_seed), utf8Bytes(kb.oprf_server_info));
  assert.equal(toHex(kp.secretKey), kb.oprf_server_private_key);
  assert.equal(toHex(kp.publicKey), kb.oprf_server_public_key);
});

for (const b of kb.backups) {
  test(`section 10.7 vector: ${b.name} — blind, verify the Go service's proof, finalize, derive, open`, async () => {
    const binding: Binding = { app: b.app, identity: b.identity, slot: b.slot };
    const secret = b.slot === BackupSlot.Recovery ? parseRecoveryKey(b.recovery_key) : h(b.secret);
    assert.equal(toHex(secret), b.secret);
    if (b.slot === BackupSlot.Recovery) assert.equal(formatRecoveryKey(secret), b.recovery_key);
    assert.equal(toHex(oprfInput(binding, secret)), b.oprf_input);
    const blinded = Blinded.blind(binding, secret, h(b.blind));
    assert.equal(toHex(blinded.element), b.blinded_element);
    const pk = h(kb.oprf_server_public_key);
    const out = blinded.finalize(h(b.evaluated_element), h(b.proof), pk);
    assert.equal(toHex(out.value), b.oprf_output);
    const params: RecordParams = { version: BigInt(b.version), aead: b.aead, kdf: { time: b.argon2id_time, memoryKiB: b.argon2id_memory_kib, threads: b.argon2id_threads, salt: h(b.argon2id_salt) } };
    if (b.slot === BackupSlot.Password) checkPasswordCost(params.kdf);
    const stretched = await stretch(out, params.kdf);
    assert.equal(toHex(stretched), b.stretched);
    const keys = BackupKeys.fromStretched(out, params, stretched);
    const context = h(b.encryption_key_info).subarray(labelled(LabelBackupEncryptionKey).length);
    assert.equal(toHex(labelled(LabelBackupAuthKey, context)), b.auth_key_info);
    assert.equal(toHex(keys.encryptionKey), b.encryption_key);
    assert.equal(toHex(keys.authKey), b.auth_key);
    assert.equal(toHex(keys.authKeyHash), b.auth_key_hash);
    assert.equal(toHex(keys.associatedData), b.associated_data);
    assert.equal(toHex(keys.seal(h(b.key_bundle), h(b.nonce)).ciphertext), b.ciphertext);
    const bundle = keys.open(h(b.nonce), h(b.ciphertext));
    assert.equal(toHex(bundle), b.key_bundle);
    parseKeyBundle(bundle);

    // Tampering: every kind pkg/keybackup returns for it.
    await rejectsBackupKind(() => keys.open(h(b.nonce), flip(h(b.ciphertext), 0)), KeyBackupErrorKind.Decrypt);
    await rejectsBackupKind(() => keys.open(flip(h(b.nonce), 0), h(b.ciphertext)), KeyBackupErrorKind.Decrypt);
    const otherVersion = BackupKeys.fromStretched(out, { ...params, version: params.version + 1n }, stretched);
    await rejectsBackupKind(() => otherVersion.open(h(b.nonce), h(b.ciphertext)), KeyBackupErrorKind.Decrypt);
    await rejectsBackupKind(() => blinded.finalize(h(b.evaluated_element), flip(h(b.proof), 0), pk), KeyBackupErrorKind.BadProof);
    await rejectsBackupKind(() => blinded.finalize(h(kb.backups[0].evaluated_element === b.evaluated_element ? kb.backups[1].evaluated_element : kb.backups[0].evaluated_element), h(b.proof), pk), KeyBackupErrorKind.BadProof);
    await rejectsBackupKind(() => blinded.finalize(h(b.evaluated_element), h(b.proof), h(b.blinded_element)), KeyBackupErrorKind.BadProof);
    await rejectsBackupKind(() => blinded.finalize(new Uint8Array(32), h(b.proof), pk), KeyBackupErrorKind.Invalid);
    await rejectsBackupKind(() => blinded.finalize(h(b.evaluated_element), h(b.proof).subarray(1), pk), KeyBackupErrorKind.Invalid);
    await rejectsBackupKind(() => blinded.finalize(h(b.evaluated_element), h(b.proof), flip(pk, 31)), KeyBackupErrorKind.Invalid);
  });
}

test("a fresh blind, a service evaluation (noble's, standing in for the Go service), and a round trip", async () => {
  const keys = ristretto255_oprf.voprf.generateKeyPair();
  const binding: Binding = { app: "app_aaaaaaaaaaaaaaaaaaaaaaaaaa", identity: "u_aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", slot: BackupSlot.Password };
  const pw = utf8Bytes("hunter2 is not a password");
  const a = Blinded.blind(binding, pw), b = Blinded.blind(binding, pw);
  assert.notDeepEqual(a.element, b.element, "a fresh blind each time");
  const ev = ristretto255_oprf.voprf.blindEvaluate(keys.secretKey, keys.publicKey, a.element);
  const evb = ristretto255_oprf.voprf.blindEvaluate(keys.secretKey, keys.publicKey, b.element);
  const outA = a.finalize(ev.evaluated, ev.proof, keys.publicKey);
  assert.deepEqual(outA.value, b.finalize(evb.evaluated, evb.proof, keys.publicKey).value, "the same output for the same password");
  const params: RecordParams = { version: 1n, aead: 1, kdf: { time: 1, memoryKiB: 8192, threads: 1, salt: new Uint8Array(32).fill(3) } };
  const k = await BackupKeys.derive(outA, params);
  const sealed = k.seal(new Uint8Array([1, 2, 3]));
  assert.deepEqual(k.open(sealed.nonce, sealed.ciphertext), new Uint8Array([1, 2, 3]));
});

test("bad inputs: weak parameters, bad bindings, recovery key typos", async () => {
  await rejectsBackupKind(() => checkPasswordCost({ time: 1, memoryKiB: 65536 }), KeyBackupErrorKind.WeakParams);
  checkPasswordCost({ time: 1, memoryKiB: 2 * 1024 * 1024 });
  await rejectsBackupKind(() => oprfInput({ app: "", identity: "u_a", slot: 1 }, utf8Bytes("x")), KeyBackupErrorKind.Invalid);
  await rejectsBackupKind(() => oprfInput({ app: "a", identity: "u_a", slot: 3 as BackupSlot }, utf8Bytes("x")), KeyBackupErrorKind.Invalid);
  await rejectsBackupKind(() => oprfInput({ app: "a", identity: "u_a", slot: 1 }, new Uint8Array(1025)), KeyBackupErrorKind.Invalid);
  const good = kb.backups[1].recovery_key as string;
  assert.deepEqual(parseRecoveryKey(` ${good.toLowerCase().replaceAll("-", " ")}\n`), parseRecoveryKey(good));
  assert.deepEqual(parseRecoveryKey(good.replaceAll("0", "O").replaceAll("1", "l")), parseRecoveryKey(good));
  const typo = good.slice(0, 5) + (good[5] === "X" ? "Y" : "X") + good.slice(6);
  for (const bad of [typo, good.slice(0, -1), good + "0", good.replace("H", "U"), good.replace("4", "*")]) {
    await rejectsBackupKind(() => parseRecoveryKey(bad), KeyBackupErrorKind.RecoveryKey);
  }
  const k = newRecoveryKey();
  assert.deepEqual(parseRecoveryKey(formatRecoveryKey(k)), k);
});
