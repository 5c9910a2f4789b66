// HPKE of the two suites (src/hpke.ts): RFC 9180's and draft-ietf-hpke-pq's vectors,
// X-Wing as @noble/post-quantum computes it, and the Go SDK's envelopes opened on
// WebCrypto's and @noble's paths too (the envelope tests open them on the default,
// Node's crypto module).
import { test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { ml_kem768_x25519 } from "@noble/post-quantum/hybrid.js";
import { fromHex, randomBytes, toHex } from "../src/bytes.js";
import { decrypt } from "../src/envelope.js";
import { Suite, deriveKemPrivateKey, hpkeOpen, hpkeSeal, kemPublicKey } from "../src/hpke.js";
import { KeyPair } from "../src/keys.js";
import { useCryptoPath } from "../src/platform.js";
import { cards, suiteOf, v } from "./vectors.js";

const h = fromHex;
const vectors = JSON.parse(readFileSync(new URL("../../test/testdata/hpke_vectors.json", import.meta.url), "utf8"));

async function withEveryPath(fn: (path: string) => Promise<void>): Promise<void> {
  try {
    for (const path of ["node", "webcrypto", "noble"] as const) {
      useCryptoPath(path);
      await fn(path);
    }
  } finally {
    useCryptoPath();
  }
}

for (const [name, suite] of [["x25519", Suite.X25519], ["mlkem768_x25519", Suite.MLKEM768_X25519]] as const) {
  test(`HPKE vector, ${name}: DeriveKeyPair, Seal with fixed randomness, Open`, async () => {
    const vec = vectors[name];
    const sk = await deriveKemPrivateKey(suite, h(vec.ikmR));
    assert.equal(toHex(kemPublicKey(suite, sk)), vec.pkRm);
    assert.equal(toHex(kemPublicKey(suite, h(vec.skRm))), vec.pkRm);
    const e = vec.encryptions[0];
    await withEveryPath(async (path) => {
      const sealed = await hpkeSeal(suite, h(vec.pkRm), h(vec.info), h(e.pt), { ekm: h(vec.ikmE), aad: h(e.aad) });
      assert.equal(toHex(sealed.enc), vec.enc, path);
      assert.equal(toHex(sealed.ciphertext), e.ct, path);
      // A fresh copy of the private key: prepared keys are kept per key object.
      assert.equal(toHex(await hpkeOpen(suite, h(vec.skRm), h(vec.enc), h(vec.info), h(e.ct), h(e.aad))), e.pt, path);
      await assert.rejects(hpkeOpen(suite, h(vec.skRm), h(vec.enc), h(vec.info), h(e.ct)), `${path}: another aad`);
    });
  });
}

test("the hybrid KEM encapsulates as @noble/post-quantum's ml_kem768_x25519, and opens what it seals", async () => {
  await withEveryPath(async (path) => {
    for (let i = 0; i < 4; i++) {
      const kp = KeyPair.generate(Suite.MLKEM768_X25519);
      const eseed = randomBytes(64);
      const info = randomBytes(91), key = randomBytes(32);
      const sealed = await hpkeSeal(Suite.MLKEM768_X25519, kp.kemPublicKey, info, key, { ekm: eseed });
      assert.equal(toHex(sealed.enc), toHex(ml_kem768_x25519.encapsulate(kp.kemPublicKey, eseed).cipherText), path);
      const fresh = await hpkeSeal(Suite.MLKEM768_X25519, kp.kemPublicKey, info, key);
      for (const s of [sealed, fresh]) assert.equal(toHex(await hpkeOpen(kp.suite, kp.kemPrivateKey, s.enc, info, s.ciphertext)), toHex(key), path);
    }
  });
});

test("section 9 envelopes open on WebCrypto's and @noble's paths as on Node's crypto module", async () => {
  try {
    for (const path of ["webcrypto", "noble"] as const) {
      useCryptoPath(path);
      for (const e of v.envelopes) {
        for (const s of e.stanzas) {
          const mine = cards[s.recipient_card]!;
          const k = v.keys.find((k: any) => k.name === v.cards.find((c: any) => c.name === s.recipient_card).key);
          // Fresh key pairs: their keys are prepared with the paths of now.
          const kp = KeyPair.fromPrivateKeys(suiteOf(k.suite), h(k.signing_seed), h(k.kem_private_key));
          const pt = await decrypt(h(e.envelope), (id) => (toHex(id) === toHex(mine.id) ? kp : undefined), cards[e.sender_card]!);
          assert.equal(toHex(pt), e.plaintext, `${e.name} as ${s.recipient_card} on ${path}`);
        }
      }
    }
  } finally {
    useCryptoPath();
  }
});
