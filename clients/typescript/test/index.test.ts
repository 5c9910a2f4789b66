import { test } from "node:test";
import assert from "node:assert/strict";
import * as sdk from "../src/index.js";

test("the package entry point exports the core", async () => {
  for (const name of ["encrypt", "decrypt", "parseCard", "newCard", "KeyPair", "Keystore", "newEpoch", "openEpochKey", "sealGroupMessage", "openGroupMessage", "Membership", "signMembershipStatement", "Blinded", "BackupKeys", "parseRecoveryKey", "safetyNumber", "verifyServiceKeyRotation", "E2eeError", "KeyBackupError"]) {
    assert.ok(name in sdk, name);
  }
  // The whole flow through the entry point: a card, an envelope to it, decrypted.
  const kp = sdk.KeyPair.generate();
  const { content, selfSignature } = sdk.newCard(kp, "u_aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", new Date());
  const card = sdk.parseCard(content, selfSignature);
  const env = await sdk.encrypt(kp, card.id, [card], new TextEncoder().encode("to myself"));
  assert.equal(new TextDecoder().decode(await sdk.decrypt(env, () => kp, card)), "to myself");
});
