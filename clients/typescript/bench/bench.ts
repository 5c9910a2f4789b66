// The SDK's benchmarks in Node, next to the Go SDK's measured in the same run
// (docs/benchmarks.md, "TypeScript SDK"). Run from clients/typescript:
//
//	npm run bench                        # the TypeScript side only
//	npm run bench -- --go                # and the Go SDK's matching benchmarks, interleaved
//	npm run bench -- --go --e2e          # and a 100-member group rotation end to end
//
// Options: --runs=N rounds (default 9), --ms=N milliseconds per operation per round and
// side (default 500), --filter=REGEX (operations by name), --json=FILE (every figure),
// --path=node|webcrypto|noble (X25519 and Ed25519 on that path only: src/platform.ts).
//
// Interleaved: in each round, each operation runs on one side then at once on the other
// (Go first in odd rounds, TypeScript first in even ones), so that both sides of a
// comparison meet the same load of a shared machine. Go's side is the compiled test
// binary of pkg/e2ee (or pkg/sdk) running that one benchmark for --ms. The table gives
// each side's median over the rounds and its range, and the ratio TypeScript / Go as
// the median of the rounds' ratios (each round's pair measured together), with its
// range; and the same ratio of CPU time per operation (the process's user and system
// time, every thread: pkg/e2ee's benchmarks report it as cpu-ns/op), which a busy
// machine inflates far less than wall time.
//
// What is measured, on a 1 KiB plaintext, as pkg/e2ee's BenchmarkEncrypt and
// BenchmarkDecrypt do (same operations, same sizes, cards of one suite):
//   encrypt   encrypt(): a content key wrapped with HPKE to each recipient card,
//             the header, its SHA-256, the Ed25519 signature, the body AEAD;
//   decrypt   decrypt() as the first recipient: the strict parse, one HPKE
//             decapsulation, the body, the signature's verification;
//   new-epoch newEpoch(): a fresh key wrapped to 100 cards, the digest of the wraps,
//             the signed commit (BenchmarkNewEpoch, members=100; Go wraps on GOMAXPROCS
//             goroutines, and on one in the row marked so);
//   key-wrap, key-unwrap, mlkem768: the parts that a suite decides, to say where the
//             time goes (BenchmarkKeyWrap, BenchmarkMLKEM768): the content key wrapped
//             with HPKE to one card and opened by its key, and ML-KEM-768 alone with a
//             prepared key (@noble/post-quantum; Go's crypto/mlkem);
//   kt-verify-lookup  verifyLookup() of one card's lookup proof shaped as one with
//             1,000,000 identities in the map and the log (20 map siblings, a log
//             entry and its inclusion proof of 20 hashes), built here with random
//             hashes and the roots they lead to: the client's verification per card
//             (pkg/kt's BenchmarkLookupProof/verify, whose 1,000,000-entry directory
//             takes about 20 s to build, so no Go row is run beside it);
//   kt-witness-check  WitnessPolicy.check() of one checkpoint with three witnesses'
//             cosignatures, two of them required: the client's own work per new
//             checkpoint when it requires witnesses (their round trip aside);
//   rotate    (--e2e) Group.rotate() of a 100-member group against `umbra dev`, by a
//             client that verified the membership chain before: GetEpochState, the
//             members' cards fetched and verified, new-epoch, StageEpochKeys and
//             CommitEpoch (BenchmarkGroupRotation/members=100/rotate, against an
//             in-process node over gRPC where the TypeScript client goes through the
//             REST gateway of a separate `umbra dev`). Wall time only: the server's
//             work is in another process on one side and not on the other.
import { execFile } from "node:child_process";
import { readFileSync } from "node:fs";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { cpus, loadavg, tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { KeyPair, Suite, decrypt, encrypt, equalBytes, newCard, newEpoch, parseCard, type Card } from "../src/index.js";
import { ml_kem768 } from "@noble/post-quantum/ml-kem.js";
import { keyWrapInfo } from "../src/envelope.js";
import { hpkeOpen, hpkeSeal } from "../src/hpke.js";
import { ed25519SignPath, ed25519VerifyPath, useCryptoPath, x25519Path, type CryptoPath } from "../src/platform.js";
import { create, fromJson, toJson, type JsonValue } from "@bufbuild/protobuf";
import { LogEventKind, LogLeafSchema, LookupProofSchema, MapValueSchema } from "../src/gen/umbra/kt/v1/kt_pb.js";
import {
  WitnessPolicy,
  checkpointText,
  cosignedMessage,
  cosignerKeyHash,
  encodeLeaf,
  encodeMapValue,
  leafHash,
  mapKey,
  mapLeafHash,
  mapNodeHash,
  packHashes,
  rootFromInclusionProof,
  valueHash,
  verifyLookup,
  witnessKeyString,
} from "../src/kt/index.js";
import { sign, signingPublicKey } from "../src/pubkey.js";

const run = promisify(execFile);

/** A Go benchmark: which test binary, the -test.bench pattern that runs it alone, and its name in the output. */
interface GoBench {
  readonly bin: "e2ee" | "sdk";
  readonly pattern: string;
  readonly name: string;
  /** The -test.benchtime; --ms by default. */
  readonly benchtime?: string;
}

interface Op {
  /** name, as in the table: op/size/suite. */
  readonly name: string;
  /** The Go benchmarks of the same operation; the first is the comparison, any other shown in a row of its own. */
  readonly go: readonly { bench: GoBench; label?: string }[];
  /** Whether CPU time is comparable (not where a server does part of the work). */
  readonly cpu: boolean;
  setup(): Promise<() => Promise<unknown>>;
}

const suites = [
  { label: "hybrid", suite: Suite.MLKEM768_X25519, goImpl: "umbra-hybrid", goSuite: "SUITE_MLKEM768_X25519" },
  { label: "x25519", suite: Suite.X25519, goImpl: "umbra-x25519", goSuite: "SUITE_X25519" },
] as const;

/** identity returns a valid user identity (u_ and 32 base32 letters) for i. */
function identity(prefix: string, i: number): string {
  const digits = i.toString(32).replace(/[0-9]/g, (d) => "abcdefghij"[Number(d)]!);
  return `u_${prefix}${digits.padStart(32 - prefix.length, "q")}`;
}

function member(suite: Suite, id: string): { kp: KeyPair; card: Card } {
  const kp = KeyPair.generate(suite);
  const { content, selfSignature } = newCard(kp, id, new Date());
  return { kp, card: parseCard(content, selfSignature) };
}

const plaintext = new Uint8Array(1024);
const groupId = `g_${"b".repeat(32)}`;

function cryptoOps(): Op[] {
  const ops: Op[] = [];
  for (const s of suites) {
    for (const n of [1, 10]) {
      ops.push({
        name: `encrypt/recipients=${n}/${s.label}`,
        go: [{ bench: { bin: "e2ee", pattern: `^BenchmarkEncrypt$/^recipients=${n}$/^impl=${s.goImpl}$`, name: `BenchmarkEncrypt/recipients=${n}/impl=${s.goImpl}` } }],
        cpu: true,
        async setup() {
          const sender = member(s.suite, identity("sender", 0));
          const cards = Array.from({ length: n }, (_, i) => member(s.suite, identity("r", i)).card);
          return () => encrypt(sender.kp, sender.card.id, cards, plaintext);
        },
      });
      ops.push({
        name: `decrypt/recipients=${n}/${s.label}`,
        go: [{ bench: { bin: "e2ee", pattern: `^BenchmarkDecrypt$/^recipients=${n}$/^as=first$/^impl=${s.goImpl}$`, name: `BenchmarkDecrypt/recipients=${n}/as=first/impl=${s.goImpl}` } }],
        cpu: true,
        async setup() {
          const sender = member(s.suite, identity("sender", 0));
          const rcpts = Array.from({ length: n }, (_, i) => member(s.suite, identity("r", i)));
          const env = await encrypt(sender.kp, sender.card.id, rcpts.map((r) => r.card), plaintext);
          const me = rcpts[0]!;
          const keyFor = (id: Uint8Array) => (equalBytes(id, me.card.id) ? me.kp : undefined);
          return async () => {
            const pt = await decrypt(env, keyFor, sender.card);
            if (pt.length !== plaintext.length) throw new Error("decrypted the wrong plaintext");
          };
        },
      });
    }
  }
  for (const s of suites) {
    const epoch = (workers: string): GoBench => ({
      bin: "e2ee",
      pattern: `^BenchmarkNewEpoch$/^suite=${s.goSuite}$/^members=100$/^workers=${workers}$`,
      name: `BenchmarkNewEpoch/suite=${s.goSuite}/members=100/workers=${workers}`,
    });
    ops.push({
      name: `new-epoch/members=100/${s.label}`,
      go: [{ bench: epoch("GOMAXPROCS") }, { bench: epoch("1"), label: "Go on one goroutine" }],
      cpu: true,
      async setup() {
        const signer = member(s.suite, identity("signer", 0));
        const cards = Array.from({ length: 100 }, (_, i) => member(s.suite, identity("m", i)).card);
        const head = { sequence: 1n, hash: new Uint8Array(32).fill(1) };
        return () => newEpoch(signer.kp, signer.card.id, groupId, 1n, undefined, head, cards);
      },
    });
  }
  return ops;
}

/** partOps are the parts of an envelope that its suite decides. */
function partOps(): Op[] {
  const ops: Op[] = [];
  const key = new Uint8Array(32).fill(7);
  for (const s of suites) {
    const wrapBench = (op: string): GoBench => ({ bin: "e2ee", pattern: `^BenchmarkKeyWrap$/^suite=${s.goSuite}$/^op=${op}$`, name: `BenchmarkKeyWrap/suite=${s.goSuite}/op=${op}` });
    const parties = () => {
      const sender = member(s.suite, identity("sender", 0)), r = member(s.suite, identity("r", 0));
      return { r, info: keyWrapInfo(sender.card.id, r.card.id) };
    };
    ops.push({
      name: `key-wrap/${s.label}`,
      go: [{ bench: wrapBench("wrap") }],
      cpu: true,
      async setup() {
        const { r, info } = parties();
        return () => hpkeSeal(r.card.suite, r.card.kemPublicKey, info, key);
      },
    });
    ops.push({
      name: `key-unwrap/${s.label}`,
      go: [{ bench: wrapBench("unwrap") }],
      cpu: true,
      async setup() {
        const { r, info } = parties();
        const { enc, ciphertext } = await hpkeSeal(r.card.suite, r.card.kemPublicKey, info, key);
        return () => hpkeOpen(r.kp.suite, r.kp.kemPrivateKey, enc, info, ciphertext);
      },
    });
  }
  const { publicKey, secretKey } = ml_kem768.keygen();
  const prepared = ml_kem768.prepare(publicKey);
  const { cipherText } = prepared.encapsulate();
  const mlkemBench = (op: string): GoBench => ({ bin: "e2ee", pattern: `^BenchmarkMLKEM768$/^op=${op}$`, name: `BenchmarkMLKEM768/op=${op}` });
  ops.push({ name: "mlkem768/encapsulate", go: [{ bench: mlkemBench("encapsulate") }], cpu: true, setup: async () => async () => prepared.encapsulate() });
  ops.push({ name: "mlkem768/decapsulate", go: [{ bench: mlkemBench("decapsulate") }], cpu: true, setup: async () => async () => prepared.decapsulate(cipherText, secretKey) });
  return ops;
}

/** rotationOps is Group.rotate() of a 100-member group of each suite against one `umbra dev`. */
/** ktOps: the client's verification of one lookup proof, shaped as with 1,000,000 identities. */
function ktOps(): Op[] {
  const app = "app_bench";
  const id = identity("u_", 424242);
  const key = mapKey(app, id);
  const rand = () => crypto.getRandomValues(new Uint8Array(32));
  const card = rand();
  const index = 424_242n;
  const size = 1_000_000n;
  const leaf = encodeLeaf(create(LogLeafSchema, { version: 1, mapKey: key, kind: LogEventKind.PUBLICATION, cardId: card, occurredAtUnixNanos: 1_796_000_000_000_000_000n }));
  let inclusion: Uint8Array[] = [];
  while (rootFromInclusionProof(index, size, leafHash(leaf), inclusion) === undefined) inclusion = [...inclusion, rand()];
  const logRoot = rootFromInclusionProof(index, size, leafHash(leaf), inclusion)!;
  const mapValue = encodeMapValue(create(MapValueSchema, { version: 1, cardId: card, cardLogIndex: index, latestLogIndex: index }));
  const depth = 20;
  const siblings = Array.from({ length: depth }, rand);
  let h = mapLeafHash(key, valueHash(mapValue));
  for (let d = depth - 1; d >= 0; d--) h = (key[d >> 3]! >> (7 - (d & 7))) & 1 ? mapNodeHash(siblings[d]!, h) : mapNodeHash(h, siblings[d]!);
  const proof = create(LookupProofSchema, {
    identity: id,
    mapValue,
    mapProof: { depth, bitmap: Uint8Array.of(0xff, 0xff, 0xf0), siblingHashes: packHashes(siblings) },
    leafIndex: index,
    leaf,
    inclusionHashes: packHashes(inclusion),
  });
  const cp = { origin: "bench", size, logRoot, mapRoot: h };
  // The proofs of a 1,000-identity answer as the gateway sends them (JSON, the hashes
  // packed: two base64 strings per proof), decoded as the client decodes them.
  const answer = JSON.stringify(Array.from({ length: 1000 }, () => toJson(LookupProofSchema, proof)));
  return [
    { name: "kt-verify-lookup/entries=1000000", go: [], cpu: true, setup: async () => async () => verifyLookup(cp, app, id, proof) },
    { name: "kt-decode-lookups-json/n=1000", go: [], cpu: true, setup: async () => async () => (JSON.parse(answer) as JsonValue[]).map((x) => fromJson(LookupProofSchema, x)) },
    witnessOp(),
  ];
}

/**
 * witnessOp: a client's witness check of one checkpoint (WitnessPolicy.check, 2 of 3
 * witnesses, each with a cosignature on the note): what each new checkpoint costs a
 * client that requires witnesses, besides their round trip.
 */
function witnessOp(): Op {
  const body = checkpointText({ origin: "bench.example/kt", size: 1_000_000n, logRoot: new Uint8Array(32).fill(1), mapRoot: new Uint8Array(32).fill(2) });
  const seeds = [1, 2, 3].map((i) => new Uint8Array(32).fill(0x60 + i));
  const names = seeds.map((_, i) => `witness.bench/w${i}`);
  const ts = 1_796_126_500n;
  let note = body + "\n\u2014 bench.example/kt " + "A".repeat(92) + "\n";
  seeds.forEach((seed, i) => {
    const hash = cosignerKeyHash(names[i]!, signingPublicKey(seed));
    const head = new Uint8Array(12);
    new DataView(head.buffer).setUint32(0, hash);
    new DataView(head.buffer).setBigUint64(4, ts);
    const sig = new Uint8Array([...head, ...sign(seed, cosignedMessage(body, ts))]);
    note += `\u2014 ${names[i]} ${Buffer.from(sig).toString("base64")}\n`;
  });
  const signed = new TextEncoder().encode(note);
  const policy = new WitnessPolicy(2, seeds.map((seed, i) => witnessKeyString(names[i]!, signingPublicKey(seed))));
  const now = new Date(Number(ts) * 1000);
  return { name: "kt-witness-check/witnesses=3", go: [], cpu: true, setup: async () => async () => policy.check(signed, now) };
}

async function rotationOps(cleanup: (() => Promise<void>)[]): Promise<Op[]> {
  const { DevServer } = await import("../test/support/devserver.js");
  const { registeredUser, uniqueName } = await import("../test/support/clients.js");
  // As BenchmarkGroupRotation lifts them: the rates of one identity's calls.
  const dev = await DevServer.start(["--card-search-rate", "1000000", "--card-search-burst", "1000000", "--group-call-rate", "1000000", "--group-call-burst", "1000000"]);
  cleanup.push(() => dev.stop());
  return suites.map((s) => ({
    name: `rotate/members=100/${s.label}`,
    go: [
      {
        bench: {
          bin: "sdk",
          pattern: `^BenchmarkGroupRotation$/^suite=${s.goSuite}$/^members=100$/^rotate$`,
          name: `BenchmarkGroupRotation/suite=${s.goSuite}/members=100/rotate`,
          benchtime: "20x",
        },
      },
    ],
    cpu: false,
    async setup() {
      const owner = await registeredUser(dev, uniqueName("owner"), { suite: s.suite });
      const gid = await dev.groupIdentity(uniqueName("big"));
      const g = await owner.client.createGroup(gid);
      // As invitedGroup does: the owner invites each member, who accepts with a
      // statement of its own (a chain of 199 statements by 100 signer cards).
      for (let i = 0; i < 99; i++) {
        const m = await registeredUser(dev, uniqueName("member"), { suite: s.suite });
        await g.invite(m.id);
        await m.client.acceptInvitation(gid);
      }
      const chain = await g.membership();
      if (chain.members().length !== 100) throw new Error(`the group has ${chain.members().length} members`);
      return () => g.rotate();
    },
  }));
}

/** A measurement of one operation: milliseconds per call, wall and CPU time. */
interface Sample {
  wall: number;
  cpu?: number;
}

/** timeOp runs fn for at least ms (and 3 times): the mean wall and CPU time of one call in ms. */
async function timeOp(fn: () => Promise<unknown>, ms: number): Promise<Sample> {
  let n = 0;
  const cpu0 = process.cpuUsage();
  const start = performance.now();
  let elapsed = 0;
  while (elapsed < ms || n < 3) {
    await fn();
    n++;
    elapsed = performance.now() - start;
  }
  const cpu = process.cpuUsage(cpu0);
  return { wall: elapsed / n, cpu: (cpu.user + cpu.system) / 1000 / n };
}

/** goBenchmark runs one benchmark of a compiled Go test binary: ms per operation, wall and CPU (where reported). */
async function goBenchmark(bin: string, cwd: string, b: GoBench, ms: number): Promise<Sample> {
  const { stdout } = await run(bin, ["-test.run", "^$", "-test.bench", b.pattern, "-test.benchtime", b.benchtime ?? `${ms}ms`, "-test.count", "1"], { cwd, maxBuffer: 16 << 20 });
  for (const line of stdout.split("\n")) {
    const m = /^(Benchmark\S+?)(?:-\d+)?\s+\d+\s+([\d.]+) ns\/op/.exec(line);
    if (m && m[1] === b.name) {
      const cpu = /\s([\d.]+) cpu-ns\/op/.exec(line);
      return { wall: Number(m[2]) / 1e6, ...(cpu ? { cpu: Number(cpu[1]) / 1e6 } : {}) };
    }
  }
  throw new Error(`${b.name}: not in the output of ${bin}:\n${stdout}`);
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const mid = s.length >> 1;
  return s.length % 2 ? s[mid]! : (s[mid - 1]! + s[mid]!) / 2;
}

function fmt(ms: number): string {
  return ms >= 10 ? ms.toFixed(1) : ms >= 1 ? ms.toFixed(2) : ms.toFixed(3);
}

/** stat formats the median of xs and its range: "1.23 (1.10–1.51)". */
function stat(xs: number[], f: (x: number) => string = fmt): string {
  return xs.length === 0 ? "" : `${f(median(xs))} (${f(Math.min(...xs))}–${f(Math.max(...xs))})`;
}

/** ratios are each round's TypeScript / Go, where both sides have a figure. */
function ratios(ts: (number | undefined)[], go: (number | undefined)[]): number[] {
  return ts.flatMap((t, i) => (t !== undefined && go[i] !== undefined ? [t / go[i]!] : []));
}

function cpuModel(): string {
  try {
    const m = /^model name\s*:\s*(.*)$/m.exec(readFileSync("/proc/cpuinfo", "utf8"));
    if (m) return m[1]!;
  } catch {
    // not Linux
  }
  return cpus()[0]?.model ?? "unknown CPU";
}

async function main(): Promise<void> {
  const args = new Map(
    process.argv.slice(2).map((a) => {
      const [k, v] = a.replace(/^--/, "").split("=", 2);
      return [k!, v ?? "true"] as const;
    }),
  );
  const runs = Number(args.get("runs") ?? 9);
  const ms = Number(args.get("ms") ?? 500);
  const filter = new RegExp(args.get("filter") ?? ".");
  const withGo = args.has("go");
  const path = args.get("path");
  if (path !== undefined) {
    if (!["node", "webcrypto", "noble"].includes(path)) throw new Error(`--path=${path}: node, webcrypto or noble`);
    useCryptoPath(path as CryptoPath);
  }
  const cleanup: (() => Promise<void>)[] = [];
  try {
    const ops = [...cryptoOps(), ...partOps(), ...ktOps(), ...(args.has("e2e") ? await rotationOps(cleanup) : [])].filter((o) => filter.test(o.name));
    const { repoRoot } = await import("../test/support/devserver.js");
    const bins = new Map<string, { bin: string; cwd: string }>();
    if (withGo) {
      const dir = await mkdtemp(join(tmpdir(), "umbra-bench-"));
      cleanup.push(() => rm(dir, { recursive: true, force: true }));
      process.stderr.write("building the Go benchmarks...\n");
      for (const pkg of new Set(ops.flatMap((o) => o.go.map((g) => g.bench.bin)))) {
        const bin = join(dir, `${pkg}.test`);
        await run("go", ["test", "-c", "-o", bin, `./pkg/${pkg}`], { cwd: repoRoot, maxBuffer: 16 << 20 });
        bins.set(pkg, { bin, cwd: join(repoRoot, "pkg", pkg) });
      }
    }
    process.stderr.write(`setting up ${ops.length} operations...\n`);
    const fns = new Map<string, () => Promise<unknown>>();
    for (const op of ops) {
      const fn = await op.setup();
      await timeOp(fn, Math.min(ms, 500)); // warm up: JIT, self-tests, prepared keys
      fns.set(op.name, fn);
    }

    // Per operation: the TypeScript samples, and per Go benchmark its samples, one per round.
    const ts = new Map<string, Sample[]>(ops.map((o) => [o.name, []]));
    const go = new Map<string, Sample[]>();
    const load: number[] = [];
    const started = new Date();
    for (let r = 0; r < runs; r++) {
      load.push(loadavg()[0]!);
      process.stderr.write(`round ${r + 1} of ${runs} (load ${load[r]!.toFixed(2)})\n`);
      for (const op of ops) {
        const sides = [
          async () => ts.get(op.name)!.push(await timeOp(fns.get(op.name)!, ms)),
          async () => {
            if (!withGo) return;
            for (const { bench } of op.go) {
              const { bin, cwd } = bins.get(bench.bin)!;
              go.set(bench.name, [...(go.get(bench.name) ?? []), await goBenchmark(bin, cwd, bench, ms)]);
            }
          },
        ];
        if (r % 2 === 0) sides.reverse();
        for (const side of sides) await side();
      }
    }

    const { stdout: goVersion } = withGo ? await run("go", ["version"]) : { stdout: "" };
    const machine = `nproc ${cpus().length}, ${cpuModel()}, ${process.platform}/${process.arch}; node ${process.version}${goVersion ? `; ${goVersion.trim()}` : ""}`;
    const paths = `X25519 on ${await x25519Path()}, Ed25519 signing on ${await ed25519SignPath()}, verification on ${await ed25519VerifyPath()}`;
    console.log(`date: ${started.toISOString()}`);
    console.log(`machine: ${machine}`);
    console.log(`TypeScript crypto paths: ${paths}`);
    console.log(`load average (1 min) at each round: ${load.map((l) => l.toFixed(2)).join(" ")}`);
    console.log(`${runs} rounds of ${ms} ms per operation and side, interleaved\n`);
    const header = withGo
      ? "| operation | TypeScript, ms: median (range) | Go, ms: median (range) | TS / Go: median (range) | TS / Go, CPU time |\n| --- | ---: | ---: | ---: | ---: |"
      : "| operation | TypeScript, ms: median (range) | TypeScript CPU time, ms |\n| --- | ---: | ---: |";
    console.log(header);
    const results: Record<string, unknown>[] = [];
    for (const op of ops) {
      const t = ts.get(op.name)!;
      const tWall = t.map((s) => s.wall);
      const tCpu = t.map((s) => s.cpu);
      if (!withGo) {
        console.log(`| ${op.name} | ${stat(tWall)} | ${fmt(median(tCpu.map((c) => c!)))} |`);
        results.push({ name: op.name, ts: t });
        continue;
      }
      for (const { bench, label } of op.go) {
        const g = go.get(bench.name) ?? [];
        const wallRatio = ratios(tWall, g.map((s) => s.wall));
        const cpuRatio = op.cpu ? ratios(tCpu, g.map((s) => s.cpu)) : [];
        const x = (r: number) => `${r.toFixed(1)}×`;
        const name = label ? `${op.name} (${label})` : op.name;
        console.log(`| ${name} | ${stat(tWall)} | ${stat(g.map((s) => s.wall))} | ${stat(wallRatio, x)} | ${cpuRatio.length ? stat(cpuRatio, x) : "—"} |`);
        results.push({ name, ts: t, go: { name: bench.name, samples: g }, wallRatio, cpuRatio });
      }
    }
    const json = args.get("json");
    if (json) await writeFile(json, JSON.stringify({ date: started.toISOString(), machine, paths, runs, ms, load, results }, null, 1));
  } finally {
    for (const c of cleanup.reverse()) await c();
  }
}

await main();
