import { test } from "node:test";
import assert from "node:assert/strict";
import { writeFileSync, mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { concat, toHex, utf8Bytes } from "../src/bytes.js";
import { E2eeErrorKind } from "../src/errors.js";
import { KeystoreFileSchema, KeystoreHeaderSchema } from "../src/gen/umbra/envelope/v1/keystore_pb.js";
import { Keystore, KeystoreMagic, encodeKeyBundle, parseKeyBundle } from "../src/keystore.js";
import { encode, parseBytesPair, parseStrict } from "../src/proto.js";
import { flip, h, rejectsKind, repoFile, repoJSON, throwsKind } from "./helpers.js";
import { cards, keyPairs } from "./vectors.js";

const kb = repoJSON("pkg/keybackup/testdata/vectors.json");
const pass = utf8Bytes("correct horse battery staple");
const cheap = { time: 1, memoryKiB: 8192, threads: 1 };
const goFile = repoFile("clients/typescript/test/testdata/alice.keystore");
const goPlain = repoFile("clients/typescript/test/testdata/alice-unencrypted.keystore");

test("key bundles of the backup vectors (made by Go) parse and encode back byte for byte", () => {
  for (const b of kb.backups) {
    const bundle = parseKeyBundle(h(b.key_bundle));
    assert.equal(bundle.identity, "u_aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa");
    assert.equal(toHex(encodeKeyBundle(bundle)), b.key_bundle);
  }
  const two = parseKeyBundle(h(kb.backups[1].key_bundle));
  assert.equal(toHex(two.currentCardId!), toHex(cards["alice-2"]!.id));
  assert.deepEqual(two.keys[0]!.keyPair.kemPrivateKey, keyPairs["alice-1"]!.kemPrivateKey);
  assert.equal(two.keys[0]!.supersededAtUnixSeconds, 1793620800n);
});

test("a keystore file written by the Go SDK opens, encrypted and not", async () => {
  for (const [file, p] of [[goFile, pass], [goPlain, undefined]] as const) {
    const ks = await Keystore.open(file, p);
    assert.equal(ks.identity, "u_aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa");
    assert.equal(toHex(ks.current()!.cardId), toHex(cards["alice-2"]!.id));
    assert.equal(toHex(ks.keyBundle()), kb.backups[1].key_bundle);
    assert.deepEqual(ks.keyFor(cards["alice-1"]!.id)!.signingSeed, keyPairs["alice-1"]!.signingSeed);
    assert.equal(ks.encrypted, p !== undefined);
  }
});

test("a keystore written here opens again, and rotation keeps the old key", async () => {
  let t = 1793534400;
  const ks = await Keystore.create({ identity: "u_aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", passphrase: pass, argon2id: cheap, now: () => new Date(t * 1000) });
  ks.setCurrent(keyPairs["alice-1"]!, cards["alice-1"]!.id);
  ks.setCurrent(keyPairs["alice-1"]!, cards["alice-1"]!.id); // the same again: no-op
  t = 1793620800;
  ks.setCurrent(keyPairs["alice-2"]!, cards["alice-2"]!.id);
  throwsKind(() => ks.setCurrent(keyPairs["alice-1"]!, cards["alice-1"]!.id), E2eeErrorKind.Malformed);
  // The same keys and times as the Go-made bundle of the second backup vector.
  assert.equal(toHex(ks.keyBundle()), kb.backups[1].key_bundle);
  const file = ks.toFile();
  const again = await Keystore.open(file, pass);
  assert.equal(toHex(again.keyBundle()), kb.backups[1].key_bundle);
  assert.notDeepEqual(again.toFile(), file, "a fresh nonce on every write");
  // Left for the Go side to open: `go run` of a program calling keystore.Open on it
  // (done by hand when this was written; the client helper's interop tests do it live).
  const dir = mkdtempSync(join(tmpdir(), "umbra-ks-"));
  writeFileSync(join(dir, "ts.keystore"), file, { mode: 0o600 });
  const plain = await Keystore.create({ keyBundle: h(kb.backups[0].key_bundle), noPassphrase: true });
  assert.equal(toHex((await Keystore.open(plain.toFile())).keyBundle()), kb.backups[0].key_bundle);
});

/** rebuild re-encodes a keystore file with its header changed by edit. */
function rebuild(file: Uint8Array, edit: (hdr: any) => void): Uint8Array {
  const [header, sealed] = parseBytesPair("file", file.subarray(KeystoreMagic.length));
  const hdr = parseStrict(KeystoreHeaderSchema, header!, "header") as any;
  edit(hdr);
  return concat(KeystoreMagic, encode(KeystoreFileSchema, { header: encode(KeystoreHeaderSchema, hdr), keyBundle: sealed! }));
}

test("opening refuses damaged and altered keystores with pkg/e2ee's error kinds", async (t) => {
  const magicLen = KeystoreMagic.length;
  const cases: [string, () => Promise<unknown>, E2eeErrorKind][] = [
    ["wrong passphrase", () => Keystore.open(goFile, utf8Bytes("wrong")), E2eeErrorKind.Passphrase],
    ["no passphrase", () => Keystore.open(goFile), E2eeErrorKind.Passphrase],
    ["a passphrase for an unencrypted keystore", () => Keystore.open(goPlain, pass), E2eeErrorKind.Passphrase],
    ["no magic", () => Keystore.open(goFile.subarray(1), pass), E2eeErrorKind.Malformed],
    ["too large", () => Keystore.open(new Uint8Array((1 << 20) + 4097), pass), E2eeErrorKind.TooLarge],
    ["trailing byte", () => Keystore.open(concat(goFile, h("00")), pass), E2eeErrorKind.Malformed],
    ["sealed bundle altered", () => Keystore.open(flip(goFile, goFile.length - 3), pass), E2eeErrorKind.Decrypt],
    ["nonce altered", () => Keystore.open(rebuild(goFile, (x) => (x.nonce = flip(x.nonce, 0))), pass), E2eeErrorKind.Decrypt],
    ["Argon2id time altered", () => Keystore.open(rebuild(goFile, (x) => (x.argon2id.time = 2)), pass), E2eeErrorKind.Passphrase],
    ["Argon2id threads out of bounds", () => Keystore.open(rebuild(goFile, (x) => (x.argon2id.threads = 65)), pass), E2eeErrorKind.Malformed],
    ["short salt", () => Keystore.open(rebuild(goFile, (x) => (x.argon2id.salt = new Uint8Array(15))), pass), E2eeErrorKind.Malformed],
    ["short key check", () => Keystore.open(rebuild(goFile, (x) => (x.keyCheck = new Uint8Array(15))), pass), E2eeErrorKind.Malformed],
    ["unknown protection", () => Keystore.open(rebuild(goFile, (x) => (x.protection = 3)), pass), E2eeErrorKind.UnknownSuite],
    ["version 2", () => Keystore.open(rebuild(goFile, (x) => (x.version = 2)), pass), E2eeErrorKind.Malformed],
    ["unencrypted with a nonce", () => Keystore.open(rebuild(goPlain, (x) => (x.nonce = new Uint8Array(12))), undefined), E2eeErrorKind.Malformed],
    ["unencrypted with a non-canonical bundle", () => Keystore.open(concat(goPlain, h("2a00")).subarray(0, goPlain.length), undefined).then(() => Keystore.open(flip(goPlain, magicLen + 6), undefined)), E2eeErrorKind.Malformed],
    ["create without a passphrase", () => Keystore.create({ identity: "u_aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa" }), E2eeErrorKind.Passphrase],
    ["create with a bad identity", () => Keystore.create({ identity: "alice", noPassphrase: true }), E2eeErrorKind.Malformed],
    ["create with another identity's bundle", () => Keystore.create({ identity: "u_bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb", noPassphrase: true, keyBundle: h(kb.backups[0].key_bundle) }), E2eeErrorKind.Malformed],
  ];
  for (const [name, fn, kind] of cases) await t.test(name, () => rejectsKind(fn, kind));
  await t.test("bundles: unknown suite, duplicate card, superseded current", () => {
    const b = parseKeyBundle(h(kb.backups[1].key_bundle));
    throwsKind(() => parseKeyBundle(encodeKeyBundle({ ...b, keys: [b.keys[0]!, b.keys[0]!] })), E2eeErrorKind.Malformed);
    throwsKind(() => parseKeyBundle(encodeKeyBundle({ ...b, currentCardId: b.keys[0]!.cardId })), E2eeErrorKind.Malformed);
    throwsKind(() => parseKeyBundle(encodeKeyBundle({ ...b, currentCardId: undefined })), E2eeErrorKind.Malformed);
    throwsKind(() => parseKeyBundle(concat(h(kb.backups[1].key_bundle), h("2a00"))), E2eeErrorKind.Malformed);
    // Suite 3 in the first StoredKey: its "10 01" becomes "10 03".
    const raw = h(kb.backups[0].key_bundle);
    const i = toHex(raw).indexOf("1001", 140) / 2;
    raw[i + 1] = 3;
    throwsKind(() => parseKeyBundle(raw), E2eeErrorKind.UnknownSuite);
  });
});
