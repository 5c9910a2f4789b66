// The storages (memory, a Node folder, IndexedDB) keep named values alike, and the pin
// file reads and writes as the Go SDK's does.

import assert from "node:assert/strict";
import { mkdtemp, readdir, readFile, rm, stat } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, test } from "node:test";
import { IDBFactory } from "fake-indexeddb";
import { hasKind, UmbraErrorKind } from "../src/client/errors.js";
import { PinSource, PinStore, encodePinFile, parsePinFile, type PinFile } from "../src/client/pins.js";
import { repoFile } from "./helpers.js";
import { FileStorage } from "../src/storage/file.js";
import { IndexedDBStorage } from "../src/storage/indexeddb.js";
import { MemoryStorage, TRUST, type Storage } from "../src/storage/storage.js";

const kinds: [string, () => Promise<{ s: Storage; done: () => Promise<void> }>][] = [
  ["memory", async () => ({ s: new MemoryStorage(), done: async () => {} })],
  [
    "file",
    async () => {
      const dir = await mkdtemp(join(tmpdir(), "umbra-ts-storage-"));
      return { s: new FileStorage(join(dir, "profile")), done: () => rm(dir, { recursive: true, force: true }) };
    },
  ],
  [
    "indexeddb",
    async () => {
      const s = new IndexedDBStorage("umbra:test", { indexedDB: new IDBFactory() });
      return { s, done: () => s.close() };
    },
  ],
];

for (const [kind, make] of kinds) {
  describe(`${kind} storage`, () => {
    test("keeps, replaces and deletes named values", async () => {
      const { s, done } = await make();
      try {
        assert.equal(await s.get("keystore"), undefined);
        await s.put("keystore", new Uint8Array([1, 2, 3]));
        assert.deepEqual(await s.get("keystore"), new Uint8Array([1, 2, 3]));
        const v = (await s.get("keystore"))!;
        v[0] = 9; // a copy: changing it changes nothing stored
        assert.deepEqual(await s.get("keystore"), new Uint8Array([1, 2, 3]));
        await s.put("keystore", new Uint8Array([4]));
        await s.put(TRUST, new Uint8Array([5, 6]));
        assert.deepEqual(await s.get("keystore"), new Uint8Array([4]));
        assert.deepEqual(await s.get(TRUST), new Uint8Array([5, 6]));
        await s.delete("keystore");
        assert.equal(await s.get("keystore"), undefined);
        assert.deepEqual(await s.get(TRUST), new Uint8Array([5, 6]));
        await s.delete("keystore"); // deleting nothing is no error
        await assert.rejects(s.put("../escape", new Uint8Array([1])), /not usable/);
        await assert.rejects(s.get("a/b"), /not usable/);
      } finally {
        await done();
      }
    });
  });
}

test("file storage writes files of mode 0600 in a folder of mode 0700, atomically", async () => {
  const dir = await mkdtemp(join(tmpdir(), "umbra-ts-storage-"));
  try {
    const folder = join(dir, "profile");
    const s = new FileStorage(folder);
    await s.put("keystore", new Uint8Array(1000).fill(7));
    await s.put("keystore", new Uint8Array(10).fill(8));
    assert.equal((await stat(join(folder, "keystore"))).mode & 0o777, 0o600);
    assert.equal((await stat(folder)).mode & 0o777, 0o700);
    assert.deepEqual(await readdir(folder), ["keystore"], "no temporary file is left behind");
    assert.deepEqual(new Uint8Array(await readFile(join(folder, "keystore"))), new Uint8Array(10).fill(8));
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test("indexeddb storage keeps values across connections", async () => {
  const factory = new IDBFactory();
  const a = new IndexedDBStorage("umbra:alice", { indexedDB: factory });
  await a.put("keystore", new Uint8Array([1, 2]));
  await a.close();
  const b = new IndexedDBStorage("umbra:alice", { indexedDB: factory });
  assert.deepEqual(await b.get("keystore"), new Uint8Array([1, 2]));
  const other = new IndexedDBStorage("umbra:bob", { indexedDB: factory });
  assert.equal(await other.get("keystore"), undefined, "one database per user");
  await b.close();
  await other.close();
});

// A pin file as the Go SDK writes it (json.MarshalIndent of pins.go's pinFile): times in
// RFC 3339 with nanoseconds and a zone, byte strings in standard base64.
const goPinFile = `{
  "version": 1,
  "service_keys": [
    {
      "key_id": "sk_1",
      "public_key": "gUZkDwJJOvT7xU/jM4jnXcLJN64LdyfMKyr7G3UZmj4=",
      "source": "first-use",
      "retired_at": "2026-12-01T10:00:01Z",
      "pinned_at": "2026-12-06T07:31:03.123456789+01:00"
    },
    {
      "key_id": "sk_2",
      "public_key": "T9CZzNR9eJPf6ewkQU7LDZtUICMqrTDZHEZb4zy+ZcQ=",
      "source": "endorsed",
      "pinned_at": "2026-12-06T06:31:03.5Z"
    }
  ],
  "contacts": {
    "u_bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb": {
      "chain": [
        {
          "card_id": "AQIDBAUGBwgJCgsMDQ4PEBESExQVFhcYGRobHB0eHyA=",
          "signing_key": "zRSzf5VulTGU/3+3Oz2B3MVh1hp1OAlLfD4aZD7l86o=",
          "how": "first-use",
          "at": "2026-12-06T06:31:03.123456789Z"
        }
      ],
      "verified": true,
      "verified_at": "2026-12-06T06:40:00Z",
      "pending": {
        "card_id": "ICEiIyQlJicoKSorLC0uLzAxMjM0NTY3ODk6Ozw9Pj8=",
        "signing_key": "3eO8zsfzpmoRFfRdcg9NwTXDrnxOItyjj9se/WpJX/g=",
        "reason": "not endorsed",
        "at": "2026-12-06T06:41:00Z"
      }
    }
  }
}
`;

test("the pin file reads as the Go SDK writes it, and writes back the same pins", () => {
  const f = parsePinFile(new TextEncoder().encode(goPinFile));
  assert.equal(f.serviceKeys.length, 2);
  assert.equal(f.serviceKeys[0]!.keyId, "sk_1");
  assert.equal(f.serviceKeys[0]!.publicKey.length, 32);
  assert.equal(f.serviceKeys[0]!.retiredAt?.toISOString(), "2026-12-01T10:00:01.000Z");
  assert.equal(f.serviceKeys[0]!.pinnedAt.toISOString(), "2026-12-06T06:31:03.123Z");
  assert.equal(f.serviceKeys[1]!.retiredAt, undefined);
  const bob = f.contacts.get("u_bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb")!;
  assert.equal(bob.chain.length, 1);
  assert.deepEqual(bob.chain[0]!.cardId, Uint8Array.from({ length: 32 }, (_, i) => i + 1));
  assert.equal(bob.verified, true);
  assert.equal(bob.pending?.reason, "not endorsed");
  const again: PinFile = parsePinFile(encodePinFile(f));
  assert.deepEqual(again, f);
  const written = JSON.parse(new TextDecoder().decode(encodePinFile(f)));
  assert.equal(written.contacts["u_bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"].chain[0].card_id, "AQIDBAUGBwgJCgsMDQ4PEBESExQVFhcYGRobHB0eHyA=");
  assert.equal(written.service_keys[1].retired_at, undefined, "a key not retired has no retired_at, as Go's omitzero");
});

test("a damaged pin file is refused with what is wrong", async () => {
  const cases: [string, string, RegExp][] = [
    ["not JSON", "{", /not JSON/],
    ["another version", `{"version": 2}`, /version 2/],
    ["a contact without a card", `{"version": 1, "contacts": {"u_x": {"chain": []}}}`, /no pinned card/],
    ["bad base64", `{"version": 1, "service_keys": [{"key_id": "k", "public_key": "!!", "source": "config", "pinned_at": "2026-01-01T00:00:00Z"}]}`, /base64/],
    ["a bad time", `{"version": 1, "service_keys": [{"key_id": "k", "public_key": "", "source": "config", "pinned_at": "yesterday"}]}`, /RFC 3339/],
    ["an unknown reason", goPinFile.replace('"not endorsed"', '"because"'), /reason "because"/],
  ];
  for (const [name, text, want] of cases) {
    const s = new MemoryStorage();
    await s.put(TRUST, new TextEncoder().encode(text));
    const store = new PinStore(s, [], () => new Date());
    const err = await store.load().catch((e: unknown) => e);
    assert.ok(hasKind(err, UmbraErrorKind.StorageDamaged), `${name}: ${String(err)}`);
    assert.match(String((err as Error).message), want, name);
  }
});

test("pin updates start from the stored file and run one at a time", async () => {
  const s = new MemoryStorage();
  const a = new PinStore(s, [], () => new Date());
  const b = new PinStore(s, [], () => new Date());
  await a.load();
  await b.load();
  const entry = (n: number) => ({ chain: [{ cardId: new Uint8Array(32).fill(n), signingKey: new Uint8Array(32).fill(n), how: "first-use", at: new Date() }], verified: false });
  // Another store (another tab) pins a contact; this one's update keeps it.
  await b.update((f) => void f.contacts.set("u_b", entry(2)));
  await Promise.all([a.update((f) => void f.contacts.set("u_a", entry(1))), a.update((f) => void f.contacts.set("u_c", entry(3)))]);
  await b.load();
  assert.deepEqual([...b.snapshot().contacts.keys()].sort(), ["u_a", "u_b", "u_c"]);
  // A failed update writes nothing and does not block the next one.
  await assert.rejects(a.update(() => Promise.reject(new Error("no"))), /no/);
  await a.update((f) => void f.contacts.delete("u_c"));
  await b.load();
  assert.deepEqual([...b.snapshot().contacts.keys()].sort(), ["u_a", "u_b"]);
  // A configured service key that contradicts the pinned one is refused.
  await a.update((f) => void f.serviceKeys.push({ keyId: "k", publicKey: new Uint8Array(32).fill(1), source: "first-use", pinnedAt: new Date() }));
  const c = new PinStore(s, [{ keyId: "k", publicKey: new Uint8Array(32).fill(2) }], () => new Date());
  const err = await c.load().catch((e: unknown) => e);
  assert.ok(hasKind(err, UmbraErrorKind.UnknownServiceKey), String(err));
});

test("docs/wire-format.md 5.7 names the sources both SDKs write into the pin file", () => {
  const doc = new TextDecoder().decode(repoFile("docs/wire-format.md"));
  const section = doc.slice(doc.indexOf("### 5.7 "), doc.indexOf("#### 5.8 "));
  const item = (field: string) => {
    const m = new RegExp("^- `" + field + "`[,:]([\\s\\S]*?)(?=^- `|^$)", "m").exec(section);
    assert.ok(m, `5.7 has an item for ${field}`);
    return new Set([...m[1]!.matchAll(/`([a-z-]+)`/g)].map((x) => x[1]!));
  };
  // What src/client writes: service keys pinned from the app's configuration, on first
  // use, or by a verified rotation statement; contacts' cards on first use, by a
  // verified endorsement, by the user's acceptance, or under the "warn" policy.
  const serviceKeys = item("service_keys");
  for (const s of [PinSource.Config, PinSource.FirstUse, PinSource.Endorsed]) assert.ok(serviceKeys.has(s), `service_keys' source ${s} is documented`);
  assert.ok(!serviceKeys.has("rotation"), "no SDK writes the source rotation");
  const contacts = item("contacts");
  for (const s of [PinSource.FirstUse, PinSource.Endorsed, PinSource.Accepted, PinSource.Warned]) assert.ok(contacts.has(s), `a chain entry's how ${s} is documented`);
});
