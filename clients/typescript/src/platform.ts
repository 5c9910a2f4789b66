// The platform's own cryptography for X25519, Ed25519, SHA-256 and the body AEADs, where it has them
// and computes exactly what the @noble code computes, which stays the fallback:
//
//   - "node": Node's crypto module (OpenSSL; reached with process.getBuiltinModule, so
//     a browser bundle never names it), called synchronously. Node's WebCrypto is the
//     same OpenSSL behind a hop to libuv's thread pool and back for every call, which
//     costs more than an X25519 or an Ed25519 signature itself; the synchronous calls
//     run on the caller's thread.
//   - "webcrypto": globalThis.crypto.subtle, in browsers (and in Node where its crypto
//     module is not reachable).
//   - "noble": @noble/curves and @noble/hashes, everywhere.
//
// Each platform path is taken only after a self-test, run once on first use:
//
//   - X25519 is a function: the same scalar and u-coordinate give the same 32 bytes
//     everywhere. The self-test checks RFC 7748's vector and that a u-coordinate with
//     its top bit set is read as RFC 7748 says (the bit ignored). An all-zero output
//     (a point of small order) is refused on every path.
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
//   - SHA-256 (Node only; WebCrypto's digest is asynchronous): FIPS 180-2's "abc".
//   - ChaCha20-Poly1305 and AES-256-GCM (Node only, for the same reason): a message
//     sealed with a fixed key, nonce and associated data is @noble/ciphers' ciphertext
//     byte for byte, opens, and does not open with its tag altered.
import { x25519 } from "@noble/curves/ed25519.js";
import { gcm } from "@noble/ciphers/aes.js";
import { chacha20poly1305 } from "@noble/ciphers/chacha.js";
import { equalBytes } from "@noble/curves/utils.js";
import { sha256 as nobleSha256 } from "@noble/hashes/sha2.js";
import { concatBytes as concat, hexToBytes as fromHex } from "@noble/hashes/utils.js";
import { base64Decode, base64Encode } from "@bufbuild/protobuf/wire";

/** CryptoPath names who computes X25519 and Ed25519: Node's crypto module, WebCrypto or @noble. */
export type CryptoPath = "node" | "webcrypto" | "noble";

/** The part of Node's crypto module used here (so that no Node type leaks into the SDK's types). */
interface NodeKeyObject {
  readonly type: string;
}
interface NodeJwk {
  kty: string;
  crv: string;
  x: string;
}
interface NodeHash {
  update(data: Uint8Array): NodeHash;
  digest(): Uint8Array;
}
interface NodeCipher {
  setAAD(aad: Uint8Array, o: { plaintextLength: number }): NodeCipher;
  setAuthTag(tag: Uint8Array): NodeCipher;
  getAuthTag(): Uint8Array;
  update(data: Uint8Array): Uint8Array;
  final(): Uint8Array;
}
interface NodeCrypto {
  createCipheriv(algorithm: string, key: Uint8Array, iv: Uint8Array, o: { authTagLength: number }): NodeCipher;
  createDecipheriv(algorithm: string, key: Uint8Array, iv: Uint8Array, o: { authTagLength: number }): NodeCipher;
  createPrivateKey(o: { key: Uint8Array; format: "der"; type: "pkcs8" }): NodeKeyObject;
  createPublicKey(o: { key: NodeJwk; format: "jwk" }): NodeKeyObject;
  generateKeyPairSync(type: "x25519"): { privateKey: NodeKeyObject; publicKey: NodeKeyObject & { export(o: { format: "jwk" }): NodeJwk } };
  diffieHellman(o: { privateKey: NodeKeyObject; publicKey: NodeKeyObject }): Uint8Array;
  sign(algorithm: null, data: Uint8Array, key: NodeKeyObject): Uint8Array;
  verify(algorithm: null, data: Uint8Array, key: NodeKeyObject, signature: Uint8Array): boolean;
  createHash(algorithm: "sha256"): NodeHash;
}

// Node's crypto module, where the SDK runs in Node (20.16 and later have
// getBuiltinModule): asked for by a name no bundler resolves, on an object no page has,
// so a browser bundle neither includes nor names a Node module (clients/web's
// tests/bundle.test.mjs checks that).
const nodeCrypto: NodeCrypto | undefined = (() => {
  const proc = (globalThis as { process?: { getBuiltinModule?: (id: string) => unknown } }).process;
  try {
    return proc?.getBuiltinModule?.("crypto") as NodeCrypto | undefined;
  } catch {
    return undefined;
  }
})();

const subtle: SubtleCrypto | undefined = globalThis.crypto?.subtle;

/** A private key prepared for Node's crypto module. */
class NodeKey {
  constructor(readonly key: NodeKeyObject) {}
}

/** A private X25519 key: Node's key object, WebCrypto's CryptoKey, or the 32 bytes on @noble's path. */
export type X25519Secret = NodeKey | CryptoKey | Uint8Array;

/** An Ed25519 key prepared for signing or verification on a platform path. */
export type Ed25519Key = NodeKey | CryptoKey;

// PKCS #8 headers of RFC 8410 (an OneAsymmetricKey with the 32-byte private key as an
// OCTET STRING): the only private key format every WebCrypto imports for these curves.
const pkcs8X25519 = fromHex("302e020100300506032b656e04220420");
const pkcs8Ed25519 = fromHex("302e020100300506032b657004220420");

/** buf returns b as an ArrayBuffer-backed view (what WebCrypto takes), copying only if it is not one. */
function buf(b: Uint8Array): Uint8Array<ArrayBuffer> {
  return b.buffer instanceof ArrayBuffer ? (b as Uint8Array<ArrayBuffer>) : new Uint8Array(b);
}

/** plain copies a Node Buffer into a Uint8Array of its own (a Buffer may share a pool). */
function plain(b: Uint8Array): Uint8Array {
  return new Uint8Array(b);
}

/** nodePublicKey imports a raw 32-byte public key of crv into Node (a JWK: far cheaper than DER in OpenSSL 3). */
function nodePublicKey(crv: "X25519" | "Ed25519", raw: Uint8Array): NodeKeyObject {
  return nodeCrypto!.createPublicKey({ key: { kty: "OKP", crv, x: base64Encode(raw, "url") }, format: "jwk" });
}

function nodePrivateKey(header: Uint8Array, raw: Uint8Array): NodeKey {
  return new NodeKey(nodeCrypto!.createPrivateKey({ key: concat(header, raw), format: "der", type: "pkcs8" }));
}

/** once runs a self-test once; a test that throws has failed. */
function once(test: () => boolean | Promise<boolean>): () => Promise<boolean> {
  let result: Promise<boolean> | undefined;
  return () =>
    (result ??= (async () => {
      try {
        return await test();
      } catch {
        return false;
      }
    })());
}

let forced: CryptoPath | undefined;

/**
 * useCryptoPath makes X25519 and Ed25519 run on path only (@noble where path fails its
 * self-test), or, with no argument, on the first of Node's crypto module, WebCrypto
 * and @noble that passes (the default): for tests that check every path gives the
 * same answers.
 */
export function useCryptoPath(path?: CryptoPath): void {
  forced = path;
}

/** choose returns the first of the platform paths whose self-test passes, or "noble". */
async function choose(tests: { node: () => Promise<boolean>; webcrypto: () => Promise<boolean> }): Promise<CryptoPath> {
  if ((forced === undefined || forced === "node") && nodeCrypto !== undefined && (await tests.node())) return "node";
  if ((forced === undefined || forced === "webcrypto") && subtle !== undefined && (await tests.webcrypto())) return "webcrypto";
  return "noble";
}

// RFC 7748 section 6.1.
const x25519Vector = {
  alicePrivate: fromHex("77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a"),
  bobPublic: fromHex("de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f"),
  shared: fromHex("4a5d9d5ba4ce2de1728e3bf480350f25e07e21c947d19e3376f09b3c1e161742"),
};

/** x25519SelfTest checks a path's X25519 on RFC 7748's vector, with the peer's top bit clear and set, and its key generation. */
async function x25519SelfTest(path: "node" | "webcrypto"): Promise<boolean> {
  const sk = await x25519SecretOn(path, x25519Vector.alicePrivate);
  const topBitSet = Uint8Array.from(x25519Vector.bobPublic);
  topBitSet[31]! |= 0x80;
  for (const peer of [x25519Vector.bobPublic, topBitSet]) {
    if (!equalBytes(await x25519Shared(sk, peer), x25519Vector.shared)) return false;
  }
  const eph = await x25519EphemeralOn(path);
  return eph.publicKey.length === 32 && equalBytes(await x25519Shared(sk, eph.publicKey), x25519.getSharedSecret(x25519Vector.alicePrivate, eph.publicKey));
}

const x25519Tests = { node: once(() => x25519SelfTest("node")), webcrypto: once(() => x25519SelfTest("webcrypto")) };

/** x25519Path returns the path X25519 runs on (after its self-test). */
export function x25519Path(): Promise<CryptoPath> {
  return choose(x25519Tests);
}

async function x25519SecretOn(path: CryptoPath, raw: Uint8Array): Promise<X25519Secret> {
  switch (path) {
    case "node":
      return nodePrivateKey(pkcs8X25519, raw);
    case "webcrypto":
      return subtle!.importKey("pkcs8", concat(pkcs8X25519, raw) as Uint8Array<ArrayBuffer>, { name: "X25519" }, false, ["deriveBits"]);
    default:
      return Uint8Array.from(raw);
  }
}

async function x25519EphemeralOn(path: CryptoPath): Promise<{ secret: X25519Secret; publicKey: Uint8Array }> {
  switch (path) {
    case "node": {
      const kp = nodeCrypto!.generateKeyPairSync("x25519");
      return { secret: new NodeKey(kp.privateKey), publicKey: base64Decode(kp.publicKey.export({ format: "jwk" }).x) };
    }
    case "webcrypto": {
      const kp = (await subtle!.generateKey({ name: "X25519" }, false, ["deriveBits"])) as CryptoKeyPair;
      return { secret: kp.privateKey, publicKey: new Uint8Array(await subtle!.exportKey("raw", kp.publicKey)) };
    }
    default: {
      const secret = x25519.utils.randomSecretKey();
      return { secret, publicKey: x25519.getPublicKey(secret) };
    }
  }
}

/** x25519Secret prepares a 32-byte X25519 private key for x25519Shared. */
export async function x25519Secret(raw: Uint8Array): Promise<X25519Secret> {
  if (raw.length !== 32) throw new Error(`X25519 private key of ${raw.length} bytes`);
  return x25519SecretOn(await x25519Path(), raw);
}

/** x25519Ephemeral returns a fresh X25519 key pair: the private key prepared, the public key's 32 bytes. */
export async function x25519Ephemeral(): Promise<{ secret: X25519Secret; publicKey: Uint8Array }> {
  return x25519EphemeralOn(await x25519Path());
}

/**
 * x25519Shared is X25519(secret, peer), on the path that prepared secret; it throws if
 * the result is all zeros (peer is a point of small order).
 */
export async function x25519Shared(secret: X25519Secret, peer: Uint8Array): Promise<Uint8Array> {
  if (peer.length !== 32) throw new Error(`X25519 public key of ${peer.length} bytes`);
  let out: Uint8Array;
  if (secret instanceof Uint8Array) {
    out = x25519.getSharedSecret(secret, peer);
  } else if (secret instanceof NodeKey) {
    out = plain(nodeCrypto!.diffieHellman({ privateKey: secret.key, publicKey: nodePublicKey("X25519", peer) }));
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

async function ed25519SigningKeyOn(path: "node" | "webcrypto", seed: Uint8Array): Promise<Ed25519Key> {
  return path === "node"
    ? nodePrivateKey(pkcs8Ed25519, seed)
    : subtle!.importKey("pkcs8", concat(pkcs8Ed25519, seed) as Uint8Array<ArrayBuffer>, { name: "Ed25519" }, false, ["sign"]);
}

async function ed25519SignSelfTest(path: "node" | "webcrypto"): Promise<boolean> {
  const key = await ed25519SigningKeyOn(path, ed25519Vector.seed);
  return equalBytes(await ed25519Sign(key, ed25519Vector.message), ed25519Vector.signature);
}

const ed25519SignTests = { node: once(() => ed25519SignSelfTest("node")), webcrypto: once(() => ed25519SignSelfTest("webcrypto")) };

/** ed25519SignPath returns the path Ed25519 signing runs on (after its self-test). */
export function ed25519SignPath(): Promise<CryptoPath> {
  return choose(ed25519SignTests);
}

/** ed25519SigningKey prepares a 32-byte Ed25519 seed for ed25519Sign, or returns undefined where only @noble can sign. */
export async function ed25519SigningKey(seed: Uint8Array): Promise<Ed25519Key | undefined> {
  const path = await ed25519SignPath();
  return path === "noble" ? undefined : ed25519SigningKeyOn(path, seed);
}

/** ed25519Sign signs message with a key from ed25519SigningKey. */
export async function ed25519Sign(key: Ed25519Key, message: Uint8Array): Promise<Uint8Array> {
  if (key instanceof NodeKey) return plain(nodeCrypto!.sign(null, message, key.key));
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

async function ed25519VerifyingKeyOn(path: "node" | "webcrypto", pub: Uint8Array): Promise<Ed25519Key> {
  return path === "node" ? new NodeKey(nodePublicKey("Ed25519", pub)) : subtle!.importKey("raw", buf(pub), { name: "Ed25519" }, true, ["verify"]);
}

const ed25519VerifyTests = {
  node: once(() => verifierConforms(async (key, message, sig) => ed25519Verify(await ed25519VerifyingKeyOn("node", key), message, sig))),
  webcrypto: once(() => verifierConforms(async (key, message, sig) => ed25519Verify(await ed25519VerifyingKeyOn("webcrypto", key), message, sig))),
};

/** ed25519VerifyPath returns the path Ed25519 verification runs on (after its self-test). */
export function ed25519VerifyPath(): Promise<CryptoPath> {
  return choose(ed25519VerifyTests);
}

/** ed25519VerifyingKey imports a 32-byte Ed25519 public key for ed25519Verify on path (not "noble"). */
export function ed25519VerifyingKey(path: "node" | "webcrypto", pub: Uint8Array): Promise<Ed25519Key> {
  return ed25519VerifyingKeyOn(path, pub);
}

/** ed25519Verify is the platform's Ed25519 verification; call it only as pubkey.ts does, after its checks. */
export async function ed25519Verify(key: Ed25519Key, message: Uint8Array, sig: Uint8Array): Promise<boolean> {
  if (key instanceof NodeKey) return nodeCrypto!.verify(null, message, key.key, sig);
  return subtle!.verify({ name: "Ed25519" }, key, buf(sig), buf(message));
}

// FIPS 180-2, appendix B.1: SHA-256("abc").
const sha256Vector = fromHex("ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");

/** nodeSha256 is Node's SHA-256 of the concatenation of parts where it passes its self-test, or undefined. */
const nodeSha256: ((parts: Uint8Array[]) => Uint8Array) | undefined = (() => {
  if (nodeCrypto === undefined) return undefined;
  const hash = (parts: Uint8Array[]) => {
    const h = nodeCrypto.createHash("sha256");
    for (const p of parts) h.update(p);
    return plain(h.digest());
  };
  try {
    return equalBytes(hash([Uint8Array.of(0x61), Uint8Array.of(0x62, 0x63)]), sha256Vector) ? hash : undefined;
  } catch {
    return undefined;
  }
})();

/**
 * sha256 is SHA-256 of the concatenation of parts: Node's (about ten times faster on a
 * message header of a few kilobytes) where useCryptoPath allows it, @noble's otherwise.
 * Synchronous: Node's module is reached without an import, and its self-test runs when
 * this module loads.
 */
export function sha256(...parts: Uint8Array[]): Uint8Array {
  if (nodeSha256 !== undefined && (forced === undefined || forced === "node")) return nodeSha256(parts);
  if (parts.length === 1) return nobleSha256(parts[0]!);
  const h = nobleSha256.create();
  for (const p of parts) h.update(p);
  return h.digest();
}

/** The body AEADs of section 3 by their names in OpenSSL: 32-byte key, 12-byte nonce, 16-byte tag appended. */
export type AeadName = "chacha20-poly1305" | "aes-256-gcm";

/** An AEAD: seal appends the tag (into output when given), open returns undefined when the ciphertext does not authenticate. */
export interface PlatformAead {
  seal(key: Uint8Array, nonce: Uint8Array, plaintext: Uint8Array, aad: Uint8Array, output?: Uint8Array): Uint8Array;
  open(key: Uint8Array, nonce: Uint8Array, ciphertext: Uint8Array, aad: Uint8Array): Uint8Array | undefined;
}

const tagSize = 16;

function nodeAead(name: AeadName): PlatformAead {
  const c = nodeCrypto!;
  return {
    seal(key, nonce, plaintext, aad, output) {
      const cipher = c.createCipheriv(name, key, nonce, { authTagLength: tagSize });
      cipher.setAAD(aad, { plaintextLength: plaintext.length });
      const body = cipher.update(plaintext);
      cipher.final();
      const out = output ?? new Uint8Array(plaintext.length + tagSize);
      out.set(body);
      out.set(cipher.getAuthTag(), plaintext.length);
      return out;
    },
    open(key, nonce, ciphertext, aad) {
      if (ciphertext.length < tagSize) return undefined;
      const n = ciphertext.length - tagSize;
      const decipher = c.createDecipheriv(name, key, nonce, { authTagLength: tagSize });
      decipher.setAAD(aad, { plaintextLength: n });
      decipher.setAuthTag(ciphertext.subarray(n));
      const body = decipher.update(ciphertext.subarray(0, n));
      try {
        decipher.final(); // throws when the tag does not match
      } catch {
        body.fill(0);
        return undefined;
      }
      return plain(body);
    },
  };
}

/** aeadSelfTest checks a Node AEAD against @noble/ciphers on fixed inputs (a plaintext of 100 bytes, 33 bytes of associated data). */
function aeadSelfTest(name: AeadName, a: PlatformAead): boolean {
  const fill = (n: number, start: number) => Uint8Array.from({ length: n }, (_, i) => (start + 7 * i) & 0xff);
  const [key, nonce, plaintext, aad] = [fill(32, 1), fill(12, 2), fill(100, 3), fill(33, 4)];
  const want = (name === "chacha20-poly1305" ? chacha20poly1305(key, nonce, aad) : gcm(key, nonce, aad)).encrypt(plaintext);
  const got = a.seal(key, nonce, plaintext, aad);
  const opened = a.open(key, nonce, got, aad);
  const tampered = Uint8Array.from(got);
  tampered[tampered.length - 1]! ^= 1;
  return equalBytes(got, want) && opened !== undefined && equalBytes(opened, plaintext) && a.open(key, nonce, tampered, aad) === undefined;
}

const nodeAeads: ReadonlyMap<AeadName, PlatformAead> = new Map(
  nodeCrypto === undefined
    ? []
    : (["chacha20-poly1305", "aes-256-gcm"] as const).flatMap((name): [AeadName, PlatformAead][] => {
        const a = nodeAead(name);
        try {
          return aeadSelfTest(name, a) ? [[name, a]] : [];
        } catch {
          return [];
        }
      }),
);

/**
 * platformAead returns the AEAD name on Node's crypto module where it passed its
 * self-test and useCryptoPath allows it (many times faster than @noble/ciphers on a
 * body whose associated data is a header of several kilobytes), or undefined.
 */
export function platformAead(name: AeadName): PlatformAead | undefined {
  return forced === undefined || forced === "node" ? nodeAeads.get(name) : undefined;
}
