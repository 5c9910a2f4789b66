// The SDK's benchmarks in Node, next to the Go SDK's measured in the same run
// (docs/benchmarks.md, "TypeScript SDK"). Run from clients/typescript:
//
//	npm run bench                        # the TypeScript side only
//	npm run bench -- --go                # and the Go SDK's matching benchmarks, interleaved
//	npm run bench -- --go --e2e          # and a 100-member group rotation end to end
//
// Options: --runs=N rounds (default 5), --ms=N milliseconds per operation per round
// (default 1000), --filter=REGEX (operations by name), --json=FILE (the figures).
//
// Each round runs every Go benchmark once (the compiled test binaries of pkg/e2ee and
// pkg/sdk, -test.count=1), then every TypeScript operation for --ms; the table gives
// each operation's median over the rounds, its range, and the ratio TypeScript / Go.
//
// What is measured, on a 1 KiB plaintext, as pkg/e2ee's BenchmarkEncrypt and
// BenchmarkDecrypt do (same operations, same sizes, cards of one suite):
//   encrypt   encrypt(): a content key wrapped with HPKE to each recipient card,
//             the header, its SHA-256, the Ed25519 signature, the body AEAD;
//   decrypt   decrypt() as the first recipient: the strict parse, one HPKE
//             decapsulation, the body, the signature's verification;
//   new-epoch newEpoch(): a fresh key wrapped to 100 cards, the digest of the wraps,
//             the signed commit (BenchmarkNewEpoch, members=100);
//   rotate    (--e2e) Group.rotate() of a 100-member group against `umbra dev`, by a
//             client that verified the membership chain before: GetEpochState, the
//             members' cards fetched and verified, new-epoch, StageEpochKeys and
//             CommitEpoch (BenchmarkGroupRotation/members=100/rotate, against an
//             in-process node over gRPC where the TypeScript client goes through the
//             REST gateway of a separate `umbra dev`).
import { execFile } from "node:child_process";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { cpus, loadavg, tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { KeyPair, Suite, decrypt, encrypt, equalBytes, newCard, newEpoch, parseCard, type Card } from "../src/index.js";

const run = promisify(execFile);

interface Op {
  /** name, as in the table: op/size/suite. */
  readonly name: string;
  /** The Go benchmark of the same operation (without the -GOMAXPROCS suffix). */
  readonly go?: string;
  /** A second Go benchmark shown beside it (the same on one goroutine). */
  readonly goAlso?: string;
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
        go: `BenchmarkEncrypt/recipients=${n}/impl=${s.goImpl}`,
        async setup() {
          const sender = member(s.suite, identity("sender", 0));
          const cards = Array.from({ length: n }, (_, i) => member(s.suite, identity("r", i)).card);
          return () => encrypt(sender.kp, sender.card.id, cards, plaintext);
        },
      });
      ops.push({
        name: `decrypt/recipients=${n}/${s.label}`,
        go: `BenchmarkDecrypt/recipients=${n}/as=first/impl=${s.goImpl}`,
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
    ops.push({
      name: `new-epoch/members=100/${s.label}`,
      go: `BenchmarkNewEpoch/suite=${s.goSuite}/members=100/workers=GOMAXPROCS`,
      goAlso: `BenchmarkNewEpoch/suite=${s.goSuite}/members=100/workers=1`,
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

/** rotationOps is Group.rotate() of a 100-member group of each suite against one `umbra dev`. */
async function rotationOps(cleanup: (() => Promise<void>)[]): Promise<Op[]> {
  const { DevServer } = await import("../test/support/devserver.js");
  const { registeredUser, uniqueName } = await import("../test/support/clients.js");
  // As BenchmarkGroupRotation lifts them: the rates of one identity's calls.
  const dev = await DevServer.start(["--card-search-rate", "1000000", "--card-search-burst", "1000000", "--group-call-rate", "1000000", "--group-call-burst", "1000000"]);
  cleanup.push(() => dev.stop());
  return suites.map((s) => ({
    name: `rotate/members=100/${s.label}`,
    go: `BenchmarkGroupRotation/suite=${s.goSuite}/members=100/rotate`,
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

/** timeOp runs fn for at least ms (and 3 times), returning the mean time of one call in ms. */
async function timeOp(fn: () => Promise<unknown>, ms: number): Promise<number> {
  let n = 0;
  const start = performance.now();
  let elapsed = 0;
  while (elapsed < ms || n < 3) {
    await fn();
    n++;
    elapsed = performance.now() - start;
  }
  return elapsed / n;
}

/** goBenchmarks runs a compiled Go test binary's benchmarks once; ms/op by name. */
async function goBenchmarks(bin: string, cwd: string, pattern: string, benchtime: string): Promise<Map<string, number>> {
  const { stdout } = await run(bin, ["-test.run", "^$", "-test.bench", pattern, "-test.benchtime", benchtime, "-test.count", "1"], { cwd, maxBuffer: 16 << 20 });
  const out = new Map<string, number>();
  for (const line of stdout.split("\n")) {
    const m = /^(Benchmark\S+?)(?:-\d+)?\s+\d+\s+([\d.]+) ns\/op/.exec(line);
    if (m) out.set(m[1]!, Number(m[2]) / 1e6);
  }
  return out;
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const mid = s.length >> 1;
  return s.length % 2 ? s[mid]! : (s[mid - 1]! + s[mid]!) / 2;
}

function fmt(ms: number | undefined): string {
  if (ms === undefined) return "";
  return ms >= 10 ? ms.toFixed(1) : ms >= 1 ? ms.toFixed(2) : ms.toFixed(3);
}

function range(xs: number[]): string {
  return xs.length === 0 ? "" : `${fmt(Math.min(...xs))}–${fmt(Math.max(...xs))}`;
}

async function main(): Promise<void> {
  const args = new Map(process.argv.slice(2).map((a) => {
    const [k, v] = a.replace(/^--/, "").split("=", 2);
    return [k!, v ?? "true"] as const;
  }));
  const runs = Number(args.get("runs") ?? 5);
  const ms = Number(args.get("ms") ?? 1000);
  const filter = new RegExp(args.get("filter") ?? ".");
  const withGo = args.has("go");
  const cleanup: (() => Promise<void>)[] = [];
  try {
    const ops = [...cryptoOps(), ...(args.has("e2e") ? await rotationOps(cleanup) : [])].filter((o) => filter.test(o.name));
    const { repoRoot } = await import("../test/support/devserver.js");
    let goRuns: (() => Promise<Map<string, number>>)[] = [];
    if (withGo) {
      const dir = await mkdtemp(join(tmpdir(), "umbra-bench-"));
      cleanup.push(() => rm(dir, { recursive: true, force: true }));
      const e2eeTest = join(dir, "e2ee.test"), sdkTest = join(dir, "sdk.test");
      process.stderr.write("building the Go benchmarks...\n");
      await run("go", ["test", "-c", "-o", e2eeTest, "./pkg/e2ee"], { cwd: repoRoot });
      const e2ee = join(repoRoot, "pkg/e2ee"), sdk = join(repoRoot, "pkg/sdk");
      goRuns = [
        () => goBenchmarks(e2eeTest, e2ee, "^BenchmarkEncrypt$/^recipients=(1|10)$/^impl=umbra-", "1s"),
        () => goBenchmarks(e2eeTest, e2ee, "^BenchmarkDecrypt$/^recipients=(1|10)$/^as=first$/^impl=umbra-", "1s"),
        () => goBenchmarks(e2eeTest, e2ee, "^BenchmarkNewEpoch$//^members=100$/", "1s"),
      ];
      if (ops.some((o) => o.name.startsWith("rotate/"))) {
        await run("go", ["test", "-c", "-o", sdkTest, "./pkg/sdk"], { cwd: repoRoot });
        goRuns.push(() => goBenchmarks(sdkTest, sdk, "^BenchmarkGroupRotation$//^members=100$/^rotate$", "20x"));
      }
    }
    process.stderr.write(`setting up ${ops.length} operations...\n`);
    const fns = new Map<string, () => Promise<unknown>>();
    for (const op of ops) {
      const fn = await op.setup();
      await timeOp(fn, Math.min(ms, 500)); // warm up: JIT, self-tests, prepared keys
      fns.set(op.name, fn);
    }
    const ts = new Map<string, number[]>(ops.map((o) => [o.name, []]));
    const go = new Map<string, number[]>();
    const load: number[][] = [];
    for (let r = 0; r < runs; r++) {
      load.push(loadavg());
      process.stderr.write(`round ${r + 1} of ${runs}\n`);
      for (const g of goRuns) for (const [name, v] of await g()) go.set(name, [...(go.get(name) ?? []), v]);
      for (const op of ops) ts.get(op.name)!.push(await timeOp(fns.get(op.name)!, ms));
    }

    const cpu = cpus();
    const { stdout: goVersion } = withGo ? await run("go", ["version"]) : { stdout: "" };
    console.log(`date: ${new Date().toISOString()}`);
    console.log(`machine: nproc ${cpu.length}, ${cpu[0]?.model ?? "unknown CPU"}, ${process.platform}/${process.arch}; node ${process.version}${goVersion ? `; ${goVersion.trim()}` : ""}`);
    console.log(`load average (1 min) at each round: ${load.map((l) => l[0]!.toFixed(2)).join(" ")}`);
    console.log(`${runs} rounds of ${ms} ms per TypeScript operation; Go: one -test.count per round\n`);
    const header = withGo
      ? "| operation | TypeScript, median ms | range | Go, median ms | range | TS / Go |\n| --- | ---: | --- | ---: | --- | ---: |"
      : "| operation | TypeScript, median ms | range |\n| --- | ---: | --- |";
    console.log(header);
    const results: Record<string, unknown>[] = [];
    for (const op of ops) {
      const t = ts.get(op.name)!;
      const row = [op.name, fmt(median(t)), range(t)];
      const result: Record<string, unknown> = { name: op.name, ts: t };
      if (withGo) {
        const g = (op.go && go.get(op.go)) || [];
        row.push(fmt(g.length ? median(g) : undefined), range(g), g.length ? (median(t) / median(g)).toFixed(1) : "");
        result["go"] = { name: op.go, ms: g };
        if (op.goAlso) {
          const g1 = go.get(op.goAlso) ?? [];
          result["goAlso"] = { name: op.goAlso, ms: g1 };
          if (g1.length) row[0] += ` (Go on one goroutine: ${fmt(median(g1))} ms, TS / Go ${(median(t) / median(g1)).toFixed(1)})`;
        }
      }
      results.push(result);
      console.log(`| ${row.join(" | ")} |`);
    }
    const json = args.get("json");
    if (json) await writeFile(json, JSON.stringify({ date: new Date().toISOString(), cpu: cpu[0]?.model, nproc: cpu.length, node: process.version, go: goVersion.trim(), runs, ms, load, results }, null, 1));
  } finally {
    for (const c of cleanup.reverse()) await c();
  }
}

await main();
