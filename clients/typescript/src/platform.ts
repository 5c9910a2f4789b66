// The platform's WebCrypto (globalThis.crypto.subtle: Node 20+, current browsers) for
// X25519 and Ed25519, which it computes natively and about ten times faster than the
// @noble code; @noble stays the fallback wherever WebCrypto lacks an algorithm or
// answers a self-test differently. Each fast path is taken only where it computes
// exactly what the @noble path computes:
//
//   - X25519 is a function: the same scalar and u-coordinate give the same 32 bytes
//     everywhere. The self-test checks RFC 7748's vector and that a u-coordinate with
//     its top bit set is read as RFC 7748 says (the bit ignored). An all-zero output
//     (a point of small order) is refused on both paths.
//   - Ed25519 signing is deterministic (RFC 8032): one seed and one message have one
//     signature. The self-test checks RFC 8032's vector.
//   - Ed25519 verification is where implementations differ (cofactored or cofactorless
//     equation, k reduced or not, which encodings they refuse). pubkey.ts applies the
//     rules of docs/wire-format.md section 3 that concern encodings itself (S < L, R
//     canonical and not of small order, the key canonical, on the curve and not of
//     small order); what is left is the equation, and the self-test runs the platform's
//     verifier on signatures that tell the cofactorless equation with k reduced mod L
//     (the rule) from the cofactored one and from an unreduced k: the rule's answers
//     or no fast path.
//
// The self-tests run once, on first use.
import { x25519 } from "@noble/curves/ed25519.js";
import { concat, equalBytes, fromHex } from "./bytes.js";

/** A private X25519 key: the platform's CryptoKey, or the 32 bytes on @noble's path. */
export type X25519Secret = CryptoKey | Uint8Array;

const subtle: SubtleCrypto | undefined = globalThis.crypto?.subtle;

// PKCS #8 headers of RFC 8410 (an OneAsymmetricKey with the 32-byte private key as an
// OCTET STRING): the only private key format every WebCrypto imports for these curves.
const pkcs8X25519 = fromHex("302e020100300506032b656e04220420");
const pkcs8Ed25519 = fromHex("302e020100300506032b657004220420");

/** buf returns b as an ArrayBuffer-backed view (what WebCrypto takes), copying only if it is not one. */
function buf(b: Uint8Array): Uint8Array<ArrayBuffer> {
  return b.buffer instanceof ArrayBuffer ? (b as Uint8Array<ArrayBuffer>) : new Uint8Array(b);
}

function selfTest(test: () => Promise<boolean>): () => Promise<boolean> {
  let result: Promise<boolean> | undefined;
  return () => (result ??= subtle === undefined ? Promise.resolve(false) : test().catch(() => false));
}

let disabled = false;

/**
 * usePlatformCrypto turns the WebCrypto fast paths on (the default) or off, for tests
 * that check both paths give the same answers.
 */
export function usePlatformCrypto(on: boolean): void {
  disabled = !on;
}

// RFC 7748 section 6.1.
const x25519Vector = {
  alicePrivate: fromHex("77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a"),
  bobPublic: fromHex("de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f"),
  shared: fromHex("4a5d9d5ba4ce2de1728e3bf480350f25e07e21c947d19e3376f09b3c1e161742"),
};

const x25519Works = selfTest(async () => {
  const s = subtle!;
  const sk = await s.importKey("pkcs8", concat(pkcs8X25519, x25519Vector.alicePrivate) as Uint8Array<ArrayBuffer>, { name: "X25519" }, false, ["deriveBits"]);
  const topBitSet = Uint8Array.from(x25519Vector.bobPublic);
  topBitSet[31]! |= 0x80;
  for (const peer of [x25519Vector.bobPublic, topBitSet]) {
    const pk = await s.importKey("raw", buf(peer), { name: "X25519" }, true, []);
    if (!equalBytes(new Uint8Array(await s.deriveBits({ name: "X25519", public: pk }, sk, 256)), x25519Vector.shared)) return false;
  }
  const kp = (await s.generateKey({ name: "X25519" }, false, ["deriveBits"])) as CryptoKeyPair;
  return (await s.exportKey("raw", kp.publicKey)).byteLength === 32;
});

/** platformX25519 reports whether X25519 runs on WebCrypto (after its self-test). */
export async function platformX25519(): Promise<boolean> {
  return !disabled && (await x25519Works());
}

/** x25519Secret prepares a 32-byte X25519 private key for x25519Shared. */
export async function x25519Secret(raw: Uint8Array): Promise<X25519Secret> {
  if (raw.length !== 32) throw new Error(`X25519 private key of ${raw.length} bytes`);
  if (!(await platformX25519())) return Uint8Array.from(raw);
  return subtle!.importKey("pkcs8", concat(pkcs8X25519, raw) as Uint8Array<ArrayBuffer>, { name: "X25519" }, false, ["deriveBits"]);
}

/** x25519Ephemeral returns a fresh X25519 key pair: the private key prepared, the public key's 32 bytes. */
export async function x25519Ephemeral(): Promise<{ secret: X25519Secret; publicKey: Uint8Array }> {
  if (!(await platformX25519())) {
    const secret = x25519.utils.randomSecretKey();
    return { secret, publicKey: x25519.getPublicKey(secret) };
  }
  const kp = (await subtle!.generateKey({ name: "X25519" }, false, ["deriveBits"])) as CryptoKeyPair;
  return { secret: kp.privateKey, publicKey: new Uint8Array(await subtle!.exportKey("raw", kp.publicKey)) };
}

/** x25519Shared is X25519(secret, peer); it throws if the result is all zeros (peer is a point of small order). */
export async function x25519Shared(secret: X25519Secret, peer: Uint8Array): Promise<Uint8Array> {
  if (peer.length !== 32) throw new Error(`X25519 public key of ${peer.length} bytes`);
  let out: Uint8Array;
  if (secret instanceof Uint8Array) {
    out = x25519.getSharedSecret(secret, peer);
  } else {
    const pk = await subtle!.importKey("raw", buf(peer), { name: "X25519" }, true, []);
    out = new Uint8Array(await subtle!.deriveBits({ name: "X25519", public: pk }, secret, 256));
  }
  if (out.every((b) => b === 0)) throw new Error("X25519 with a point of small order");
  return out;
}

// RFC 8032 section 7.1, TEST 2.
const ed25519Vector = {
  seed: fromHex("4ccd089b28ff96da9db6c346ec114e0f5b8a319f35aba624da8cf6ed4fb8a6fb"),
  message: fromHex("72"),
  signature: fromHex(
    "92a009a9f0d4cab8720e820b5f642540a2b27b5416503f8fb3762223ebdb69da085ac1e43e15996e458f3613d0f11d8c387b2eaeb4302aeeb00d291612bb0c00",
  ),
};

const ed25519SignWorks = selfTest(async () => {
  const key = await subtle!.importKey("pkcs8", concat(pkcs8Ed25519, ed25519Vector.seed) as Uint8Array<ArrayBuffer>, { name: "Ed25519" }, false, ["sign"]);
  return equalBytes(new Uint8Array(await subtle!.sign({ name: "Ed25519" }, key, buf(ed25519Vector.message))), ed25519Vector.signature);
});

/** ed25519SigningKey prepares a 32-byte Ed25519 seed for ed25519Sign, or returns undefined where WebCrypto cannot sign. */
export async function ed25519SigningKey(seed: Uint8Array): Promise<CryptoKey | undefined> {
  if (disabled || !(await ed25519SignWorks())) return undefined;
  return subtle!.importKey("pkcs8", concat(pkcs8Ed25519, seed) as Uint8Array<ArrayBuffer>, { name: "Ed25519" }, false, ["sign"]);
}

/** ed25519Sign signs message with a key from ed25519SigningKey. */
export async function ed25519Sign(key: CryptoKey, message: Uint8Array): Promise<Uint8Array> {
  return new Uint8Array(await subtle!.sign({ name: "Ed25519" }, key, buf(message)));
}

/**
 * The signatures the verification self-test checks, and the answer of the rule of
 * section 3 for each (Go's crypto/ed25519 and libsodium give the same). The key
 * 3d40… is RFC 8032's; ec15… is a key of prime order; bd13… is a key with a torsion
 * component of order 8 (canonical and not of small order, so it passes the checks of
 * "Public keys"). These inputs pass every check pubkey.ts makes before the platform's
 * verifier is called, so only the equation decides. test/platform.test.ts checks each
 * answer against pubkey.ts's own verifier.
 */
export const ed25519VerifySelfTest: readonly { name: string; key: string; message: string; signature: string; valid: boolean }[] = [
  {
    name: "RFC 8032 test 2",
    key: "3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c",
    message: "72",
    signature: "92a009a9f0d4cab8720e820b5f642540a2b27b5416503f8fb3762223ebdb69da085ac1e43e15996e458f3613d0f11d8c387b2eaeb4302aeeb00d291612bb0c00",
    valid: true,
  },
  {
    name: "RFC 8032 test 2, another message",
    key: "3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c",
    message: "73",
    signature: "92a009a9f0d4cab8720e820b5f642540a2b27b5416503f8fb3762223ebdb69da085ac1e43e15996e458f3613d0f11d8c387b2eaeb4302aeeb00d291612bb0c00",
    valid: false,
  },
  {
    name: "R with a torsion component: valid only by the cofactored equation",
    key: "ec159a80e5b0cf8dfa78414a4e66a66ef8981ff2f3186f4a009842746b0cfbe3",
    message: "746f7273696f6e2052",
    signature: "b8a50b547d8565a0cb18bc3f2cd83332a177b158d39c3bff2274422cf1693028c6c481e070ccff89b8097bdd88caff3da7191bb058dc093ca1d803089e153f0a",
    valid: false,
  },
  {
    name: "mixed-order key, k mod L a multiple of 8 and the unreduced k not: valid with k reduced",
    key: "bd13166a63a9ab0de97ae4f88de9970598d9e2459e170c3ccd438da8cb09f67d",
    message: "6d697865642032",
    signature: "5075c354b872f6da94d37ec731690ccfd59f3e2a319d436007b8b027b6dc487f95d656972fb823af6abf1534e778e968fb3b48712f90899831f7b0dd71a5700f",
    valid: true,
  },
  {
    name: "mixed-order key, k mod L not a multiple of 8 and the unreduced k one: valid only cofactored or unreduced",
    key: "bd13166a63a9ab0de97ae4f88de9970598d9e2459e170c3ccd438da8cb09f67d",
    message: "6d697865642036",
    signature: "5075c354b872f6da94d37ec731690ccfd59f3e2a319d436007b8b027b6dc487f0ecdd54e18c64b1dcede4beef6d1cf864d3ffb664e0eed355dfc3299bb2c2c05",
    valid: false,
  },
  {
    name: "mixed-order key, R with a torsion component: valid by the cofactorless equation",
    key: "bd13166a63a9ab0de97ae4f88de9970598d9e2459e170c3ccd438da8cb09f67d",
    message: "6d6978656420522030",
    signature: "622b055faac3a58dbffe0504db73296f203468c9e06e95d4e1484ce9516468d0dbee3692cea1d48f2dfe3e2969a7d81f0a954e6cc3933701bebf28f29f4bc60d",
    valid: true,
  },
];

/**
 * verifierConforms runs an Ed25519 verifier on the self-test's signatures and reports
 * whether it gave the rule's answer to each.
 */
export async function verifierConforms(verify: (key: Uint8Array, message: Uint8Array, sig: Uint8Array) => Promise<boolean>): Promise<boolean> {
  for (const v of ed25519VerifySelfTest) {
    if ((await verify(fromHex(v.key), fromHex(v.message), fromHex(v.signature))) !== v.valid) return false;
  }
  return true;
}

const ed25519VerifyWorks = selfTest(() =>
  verifierConforms(async (key, message, sig) => subtle!.verify({ name: "Ed25519" }, await ed25519VerifyingKey(key), buf(sig), buf(message))),
);

/** platformEd25519Verify reports whether Ed25519 verification runs on WebCrypto (after its self-test). */
export async function platformEd25519Verify(): Promise<boolean> {
  return !disabled && (await ed25519VerifyWorks());
}

/** ed25519VerifyingKey imports a 32-byte Ed25519 public key for ed25519Verify. */
export function ed25519VerifyingKey(pub: Uint8Array): Promise<CryptoKey> {
  return subtle!.importKey("raw", buf(pub), { name: "Ed25519" }, true, ["verify"]);
}

/** ed25519Verify is the platform's Ed25519 verification; call it only as pubkey.ts does, after its checks. */
export function ed25519Verify(key: CryptoKey, message: Uint8Array, sig: Uint8Array): Promise<boolean> {
  return subtle!.verify({ name: "Ed25519" }, key, buf(sig), buf(message));
}
