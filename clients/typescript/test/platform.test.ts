// The platform's paths (src/platform.ts: Node's crypto module, WebCrypto) against the
// @noble paths they replace: the same signatures, the same verification answers
// (section 3's rule, edge cases included), the same X25519 outputs, SHA-256 and AEADs.
import { test } from "node:test";
import assert from "node:assert/strict";
import { ed25519, x25519 } from "@noble/curves/ed25519.js";
import { sha256 as nobleSha256, sha512 } from "@noble/hashes/sha2.js";
import { bytesToNumberLE, numberToBytesLE } from "@noble/curves/utils.js";
import { concat, fromHex, randomBytes, toHex } from "../src/bytes.js";
import { gcm } from "@noble/ciphers/aes.js";
import { chacha20poly1305 } from "@noble/ciphers/chacha.js";
import { Aead, aeadOpen, aeadSeal } from "../src/aead.js";
import { KeyPair } from "../src/keys.js";
import { Suite } from "../src/hpke.js";
import {
  ed25519SignPath,
  ed25519VerifyPath,
  ed25519VerifySelfTest,
  platformAead,
  sha256,
  useCryptoPath,
  verifierConforms,
  x25519Path,
  x25519Ephemeral,
  x25519Secret,
  x25519Shared,
} from "../src/platform.js";
import { verifySignature, verifySignatureAsync } from "../src/pubkey.js";

const L = ed25519.Point.Fn.ORDER;
const B = ed25519.Point.BASE;

/** withEveryPath runs fn on Node's crypto module, on WebCrypto, then on @noble. */
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

test("Node 20 passes the self-tests of its crypto module and of WebCrypto: X25519, Ed25519 signing and verification, and the body AEADs run on the first", async () => {
  const paths = async () => [await x25519Path(), await ed25519SignPath(), await ed25519VerifyPath()];
  assert.deepEqual(await paths(), ["node", "node", "node"]);
  assert.notEqual(platformAead("chacha20-poly1305"), undefined, "ChaCha20-Poly1305 on Node's crypto module");
  assert.notEqual(platformAead("aes-256-gcm"), undefined, "AES-256-GCM on Node's crypto module");
  try {
    for (const path of ["webcrypto", "noble"] as const) {
      useCryptoPath(path);
      assert.deepEqual(await paths(), [path, path, path]);
      assert.equal(platformAead("chacha20-poly1305"), undefined, `no platform AEAD on ${path}`);
    }
  } finally {
    useCryptoPath();
  }
});

test("SHA-256 on Node's crypto module is @noble's, in one part or several", async () => {
  for (const size of [0, 3, 64, 1000, 12_000, 100_000]) {
    const m = randomBytes(size);
    const want = toHex(nobleSha256(m));
    await withEveryPath(async (path) => {
      assert.equal(toHex(sha256(m)), want, `${path}, ${size} bytes`);
      assert.equal(toHex(sha256(m.subarray(0, size >> 1), m.subarray(size >> 1))), want, `${path}, ${size} bytes in two parts`);
    });
  }
});

test("the verification self-test: the rule's answer for each signature, which a cofactored verifier does not give", async () => {
  for (const v of ed25519VerifySelfTest) {
    const [key, msg, sig] = [fromHex(v.key), fromHex(v.message), fromHex(v.signature)];
    assert.equal(verifySignature(key, msg, sig), v.valid, `${v.name}: pubkey.ts's verifier`);
    await withEveryPath(async (path) => assert.equal(await verifySignatureAsync(key, msg, sig), v.valid, `${v.name}: ${path}`));
  }
  assert.equal(await verifierConforms(async (k, m, s) => verifySignature(k, m, s)), true);
  // @noble's own verify checks the cofactored equation (with or without ZIP-215's
  // encoding rules): the self-test refuses it, as it would a platform that did.
  assert.equal(await verifierConforms(async (k, m, s) => ed25519.verify(s, m, k)), false);
  assert.equal(await verifierConforms(async (k, m, s) => ed25519.verify(s, m, k, { zip215: false })), false);
});

/** signWith makes R ‖ S for key scalar a (public key A) with R given: S = r + k·a, for the R = [r]B given. */
function signatureFor(R: Uint8Array, A: Uint8Array, a: bigint, r: bigint, message: Uint8Array): Uint8Array {
  const k = bytesToNumberLE(sha512(concat(R, A, message))) % L;
  return concat(R, numberToBytesLE((r + k * a) % L, 32));
}

test("verifySignatureAsync gives verifySignature's answer on every path, edge cases included", async () => {
  const seed = randomBytes(32);
  const { scalar: a, pointBytes: A } = ed25519.utils.getExtendedPublicKey(seed);
  const msg = new TextEncoder().encode("a message");
  const good = ed25519.sign(msg, seed);
  const withS = (s: bigint) => concat(good.subarray(0, 32), numberToBytesLE(s, 32));
  const S = bytesToNumberLE(good.subarray(32));
  const identity = fromHex("0100000000000000000000000000000000000000000000000000000000000000");
  const setTop = (b: Uint8Array) => {
    const c = Uint8Array.from(b);
    c[31]! |= 0x80;
    return c;
  };
  // A y-coordinate of at least p: p + 1 (the identity's y, written non-canonically).
  const yAboveP = fromHex("eeffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f");
  const notOnCurve = (() => {
    for (let i = 2; ; i++) {
      const b = numberToBytesLE(BigInt(i), 32);
      try {
        ed25519.Point.fromBytes(b, false);
      } catch {
        return b;
      }
    }
  })();
  const smallOrder = [
    "0100000000000000000000000000000000000000000000000000000000000000",
    "ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
    "0000000000000000000000000000000000000000000000000000000000000000",
    "0000000000000000000000000000000000000000000000000000000000000080",
    "26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc05",
    "26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc85",
    "c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac037a",
    "c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac03fa",
  ].map(fromHex);
  const r = bytesToNumberLE(randomBytes(32)) % L;
  const R = B.multiply(r).toBytes();

  const cases: [string, Uint8Array, Uint8Array, Uint8Array, boolean][] = [
    ["valid", A, msg, good, true],
    ["valid, made here with R = [r]B", A, msg, signatureFor(R, A, a, r, msg), true],
    ["another message", A, new TextEncoder().encode("another"), good, false],
    ["S + L (not reduced)", A, msg, withS(S + L), false],
    ["S = L", A, msg, withS(L), false],
    ["S = 2^256 - 1", A, msg, concat(good.subarray(0, 32), new Uint8Array(32).fill(255)), false],
    // Go's crypto/ed25519 alone accepts this one: [S]B − [k]A is the identity, R's value.
    ["R the identity, the equation holding", A, msg, signatureFor(identity, A, a, 0n, msg), false],
    ...smallOrder.map((p, i): [string, Uint8Array, Uint8Array, Uint8Array, boolean] => [`R of small order ${i}`, A, msg, concat(p, good.subarray(32)), false]),
    ["R not canonical: y at least p", A, msg, concat(yAboveP, good.subarray(32)), false],
    ["R not canonical: x = 0 with the sign bit", A, msg, concat(setTop(identity), good.subarray(32)), false],
    ["R not a point", A, msg, concat(notOnCurve, good.subarray(32)), false],
    ["R with the sign bit flipped", A, msg, concat(setTop(good.subarray(0, 32)), good.subarray(32)), (good[31]! & 0x80) !== 0],
    ["key the identity, the equation holding", identity, msg, concat(B.multiply(7n).toBytes(), numberToBytesLE(7n, 32)), false],
    ...smallOrder.map((p, i): [string, Uint8Array, Uint8Array, Uint8Array, boolean] => [`key of small order ${i}`, p, msg, good, false]),
    ["key not canonical", yAboveP, msg, good, false],
    ["key not a point", notOnCurve, msg, good, false],
    ["key with the sign bit flipped", setTop(A), msg, good, (A[31]! & 0x80) !== 0],
    ["signature of 63 bytes", A, msg, good.subarray(0, 63), false],
    ["key of 31 bytes", A.subarray(0, 31), msg, good, false],
    ["all zeros", A, msg, new Uint8Array(64), false],
  ];
  for (const [name, key, m, sig, want] of cases) {
    assert.equal(verifySignature(key, m, sig), want, `${name}: verifySignature`);
    await withEveryPath(async (path) => assert.equal(await verifySignatureAsync(key, m, sig), want, `${name}: verifySignatureAsync on ${path}`));
  }
});

test("signAsync makes sign's signature on every path", async () => {
  await withEveryPath(async (path) => {
    for (const size of [0, 1, 64, 1100, 100_000]) {
      const kp = KeyPair.generate(Suite.X25519);
      const m = randomBytes(size);
      assert.equal(toHex(await kp.signAsync(m)), toHex(kp.sign(m)), `${path}, ${size} bytes`);
    }
  });
});

test("X25519 on the platform paths computes noble's X25519; a point of small order is refused on every path", async () => {
  const smallOrderU = ["0000000000000000000000000000000000000000000000000000000000000000", "0100000000000000000000000000000000000000000000000000000000000000", "ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f"];
  await withEveryPath(async (path) => {
    for (let i = 0; i < 8; i++) {
      const sk = randomBytes(32), peer = x25519.getPublicKey(randomBytes(32));
      const want = toHex(x25519.getSharedSecret(sk, peer));
      assert.equal(toHex(await x25519Shared(await x25519Secret(sk), peer)), want, path);
      const topBit = Uint8Array.from(peer);
      topBit[31]! |= 0x80;
      assert.equal(toHex(await x25519Shared(await x25519Secret(sk), topBit)), want, `${path}, top bit set`);
      const eph = await x25519Ephemeral();
      assert.equal(toHex(await x25519Shared(await x25519Secret(sk), eph.publicKey)), toHex(x25519.getSharedSecret(sk, eph.publicKey)), `${path}: ephemeral public key`);
    }
    for (const u of smallOrderU) await assert.rejects(x25519Shared(await x25519Secret(randomBytes(32)), fromHex(u)), `${path}: ${u}`);
  });
});

test("the body AEADs on Node's crypto module seal as @noble/ciphers does and open only what authenticates", async () => {
  for (const aead of [Aead.CHACHA20_POLY1305, Aead.AES_256_GCM]) {
    for (const [size, aadSize] of [[0, 0], [1, 12_000], [1100, 0], [1100, 12_000], [100_000, 91]]) {
      const key = randomBytes(32), nonce = randomBytes(12), pt = randomBytes(size!), aad = randomBytes(aadSize!);
      const noble = aead === Aead.CHACHA20_POLY1305 ? chacha20poly1305(key, nonce, aad) : gcm(key, nonce, aad);
      const want = toHex(noble.encrypt(pt));
      await withEveryPath(async (path) => {
        const what = `${Aead[aead]} on ${path}, ${size} bytes, ${aadSize} of associated data`;
        const sealed = aeadSeal(aead, key, nonce, pt, aad);
        assert.equal(toHex(sealed), want, what);
        const into = new Uint8Array(size! + 16);
        assert.equal(aeadSeal(aead, key, nonce, pt, aad, into), into, `${what}: into the output given`);
        assert.equal(toHex(into), want, `${what}: into the output given`);
        assert.equal(toHex(aeadOpen(aead, key, nonce, sealed, aad)!), toHex(pt), what);
        for (const i of [0, sealed.length - 1]) {
          const bad = Uint8Array.from(sealed);
          bad[i]! ^= 1;
          assert.equal(aeadOpen(aead, key, nonce, bad, aad), undefined, `${what}: byte ${i} altered`);
        }
        assert.equal(aeadOpen(aead, key, nonce, sealed, randomBytes(aadSize! + 1)), undefined, `${what}: other associated data`);
        assert.equal(aeadOpen(aead, key, nonce, sealed.subarray(0, 15), aad), undefined, `${what}: shorter than a tag`);
      });
    }
  }
});
