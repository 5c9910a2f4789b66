// A real `umbra dev` built from this tree, for the end-to-end and interop tests: the
// binary is built with `go build` (or taken from $UMBRA_BIN), started on free loopback
// ports with its data in a temporary folder, and stopped at the end.

import { execFile, spawn, type ChildProcess } from "node:child_process";
import { mkdtemp, readFile, rm } from "node:fs/promises";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { IdentityService } from "../../src/gen/umbra/identity/v1/identity_pb.js";
import { RestTransport } from "../../src/transport/rest.js";

const run = promisify(execFile);

/** The repository's root: this file is clients/typescript/dist/test/support/devserver.js. */
export const repoRoot = resolve(dirname(fileURLToPath(import.meta.url)), "../../../../..");

let built: Promise<string> | undefined;

/** Builds cmd/umbra once per process (Go's build cache makes it a link), or uses $UMBRA_BIN. */
export function umbraBinary(): Promise<string> {
  if (process.env["UMBRA_BIN"]) {
    return Promise.resolve(process.env["UMBRA_BIN"]);
  }
  built ??= (async () => {
    const dir = await mkdtemp(join(tmpdir(), "umbra-ts-bin-"));
    const bin = join(dir, "umbra");
    await run("go", ["build", "-o", bin, "./cmd/umbra"], { cwd: repoRoot, maxBuffer: 16 << 20 });
    process.on("exit", () => {
      try {
        // best effort: the folder is in the system's temporary folder anyway
        void rm(dir, { recursive: true, force: true });
      } catch {
        /* ignore */
      }
    });
    return bin;
  })();
  return built;
}

/** Returns a free loopback port (free when asked; the server binds it right after). */
export function freePort(): Promise<number> {
  return new Promise((ok, fail) => {
    const s = createServer();
    s.unref();
    s.on("error", fail);
    s.listen(0, "127.0.0.1", () => {
      const addr = s.address();
      s.close(() => (typeof addr === "object" && addr ? ok(addr.port) : fail(new Error("no port"))));
    });
  });
}

/**
 * Starts `bin args` and waits until its stdout printed banner, failing with its output
 * if it exits first or has not printed it within timeoutSeconds.
 */
async function startUntil(bin: string, args: readonly string[], banner: string, timeoutSeconds: number): Promise<ChildProcess> {
  const proc = spawn(bin, args, { stdio: ["ignore", "pipe", "pipe"] });
  const what = `umbra ${args[0]}`;
  let out = "";
  let errOut = "";
  proc.stderr!.on("data", (b: Buffer) => {
    errOut += b.toString();
    if (errOut.length > 1 << 16) errOut = errOut.slice(-(1 << 15));
  });
  await new Promise<void>((ok, fail) => {
    const timer = setTimeout(() => fail(new Error(`${what} did not start in ${timeoutSeconds} s:\n${out}\n${errOut}`)), timeoutSeconds * 1000);
    proc.stdout!.on("data", (b: Buffer) => {
      out += b.toString();
      if (out.includes(banner)) {
        clearTimeout(timer);
        ok();
      }
    });
    proc.on("exit", (code) => {
      clearTimeout(timer);
      fail(new Error(`${what} exited with ${code}:\n${out}\n${errOut}`));
    });
  });
  proc.stdout!.resume();
  return proc;
}

/** Stops proc with SIGTERM, and SIGKILL if it has not exited within 10 s. */
async function stopProcess(proc: ChildProcess): Promise<void> {
  if (proc.exitCode !== null) return;
  const exited = new Promise((ok) => proc.once("exit", ok));
  proc.kill("SIGTERM");
  await Promise.race([exited, new Promise((ok) => setTimeout(ok, 10_000))]);
  if (proc.exitCode === null) proc.kill("SIGKILL");
}

export interface DevCredentials {
  readonly admin_credential: string;
  readonly app_id: string;
  readonly api_key: string;
}

/** DevServer is one running `umbra dev`. */
export class DevServer {
  readonly bin: string;
  readonly dataDir: string;
  readonly grpcAddr: string;
  readonly baseUrl: string;
  readonly creds: DevCredentials;
  readonly #proc: ChildProcess;
  /** The app backend's view: calls made with the app's API key. */
  readonly backend: RestTransport;

  private constructor(bin: string, dataDir: string, grpcAddr: string, baseUrl: string, creds: DevCredentials, proc: ChildProcess) {
    this.bin = bin;
    this.dataDir = dataDir;
    this.grpcAddr = grpcAddr;
    this.baseUrl = baseUrl;
    this.creds = creds;
    this.#proc = proc;
    this.backend = new RestTransport({ baseUrl });
  }

  /**
   * Starts `umbra dev` (with extraArgs after the usual flags) and waits until it printed
   * its banner. Its data is in a new temporary folder, or in opts.dataDir (a folder a
   * stopped server kept: the same apps, keys and cards).
   */
  static async start(extraArgs: readonly string[] = [], opts: { dataDir?: string } = {}): Promise<DevServer> {
    const bin = await umbraBinary();
    const dataDir = opts.dataDir ?? (await mkdtemp(join(tmpdir(), "umbra-ts-data-")));
    const grpcAddr = `127.0.0.1:${await freePort()}`;
    const httpAddr = `127.0.0.1:${await freePort()}`;
    const proc = await startUntil(
      bin,
      ["dev", "--data", dataDir, "--grpc-addr", grpcAddr, "--http-addr", httpAddr, "--metrics-addr", "", "--log-level", "warn", ...extraArgs],
      "UMBRA_API_KEY=",
      60,
    );
    const creds = JSON.parse(await readFile(join(dataDir, "dev-credentials.json"), "utf8")) as DevCredentials;
    return new DevServer(bin, dataDir, grpcAddr, `http://${httpAddr}`, creds, proc);
  }

  /** Stops the server and removes its data, unless keepData (then the caller removes dataDir). */
  async stop(opts: { keepData?: boolean } = {}): Promise<void> {
    await stopProcess(this.#proc);
    if (!opts.keepData) await rm(this.dataDir, { recursive: true, force: true });
  }

  /** The identity of the app's user name (ResolveIdentities with the API key). */
  async identity(name: string): Promise<string> {
    const resp = await this.backend.unary(IdentityService.method.resolveIdentities, { uids: [name] }, { auth: { bearer: this.creds.api_key } });
    const id = resp.users[name];
    if (!id) throw new Error(`no identity for ${name}`);
    return id;
  }

  /** The identity of the app's group id. */
  async groupIdentity(name: string): Promise<string> {
    const resp = await this.backend.unary(IdentityService.method.resolveIdentities, { guids: [name] }, { auth: { bearer: this.creds.api_key } });
    const id = resp.groups[name];
    if (!id) throw new Error(`no identity for group ${name}`);
    return id;
  }

  /** An access token for identity, as the app backend mints it. */
  async issueToken(identity: string, ttlSeconds = 3600): Promise<string> {
    const resp = await this.backend.unary(
      IdentityService.method.issueToken,
      { identity, ttl: { seconds: BigInt(ttlSeconds) } },
      { auth: { bearer: this.creds.api_key } },
    );
    return resp.accessToken;
  }

  /** A reset grant for identity, as the app backend obtains it. */
  async issueResetGrant(identity: string): Promise<string> {
    const resp = await this.backend.unary(IdentityService.method.issueResetGrant, { identity }, { auth: { bearer: this.creds.api_key } });
    return resp.resetGrant;
  }

  /** A token provider for identity: what an app passes to the SDK. */
  tokenProvider(identity: string): () => Promise<string> {
    return () => this.issueToken(identity);
  }

  /** Runs the Go CLI against this server with home as its --home, returning stdout. */
  async cli(home: string, args: readonly string[], opts: { input?: string; env?: Record<string, string> } = {}): Promise<string> {
    const [sub, ...rest] = args;
    const full = [sub!, ...subcommandHead(sub!, rest), "--home", home, "--server", this.grpcAddr, ...subcommandTail(sub!, rest)];
    return runCli(this.bin, full, {
      UMBRA_API_KEY: this.creds.api_key,
      ...opts.env,
    }, opts.input);
  }
}

// `umbra group send ...` takes the group subcommand first, then flags: keep the words
// that name the subcommand before the shared flags.
const nested = new Set(["group", "keys", "backup", "card", "trust"]);
function subcommandHead(sub: string, rest: readonly string[]): string[] {
  return nested.has(sub) && rest.length > 0 ? [rest[0]!] : [];
}
function subcommandTail(sub: string, rest: readonly string[]): string[] {
  return nested.has(sub) && rest.length > 0 ? rest.slice(1) : [...rest];
}

/** Runs the binary, failing with its output if it exits non-zero. */
export function runCli(bin: string, args: readonly string[], env: Record<string, string>, input?: string): Promise<string> {
  return new Promise((ok, fail) => {
    const p = spawn(bin, args, { env: { ...process.env, ...env }, stdio: ["pipe", "pipe", "pipe"] });
    let out = "";
    let err = "";
    p.stdout.on("data", (b: Buffer) => (out += b.toString()));
    p.stderr.on("data", (b: Buffer) => (err += b.toString()));
    p.on("error", fail);
    p.on("exit", (code) => {
      if (code === 0) ok(out);
      else fail(new Error(`umbra ${args.join(" ")} exited with ${code}:\n${out}\n${err}`));
    });
    p.stdin.end(input ?? "");
  });
}

/** Witness is one running `umbra witness` following a DevServer's log. */
export class Witness {
  readonly dir: string;
  /** Its verifier key, as `umbra witness keygen` printed it. */
  readonly key: string;
  /** Its HTTP API. */
  readonly url: string;
  readonly #proc: ChildProcess;

  private constructor(dir: string, key: string, url: string, proc: ChildProcess) {
    this.dir = dir;
    this.key = key;
    this.url = url;
    this.#proc = proc;
  }

  /**
   * Makes a witness key named name (in a new folder) and starts `umbra witness` with it,
   * following dev's log (pinned to logKey) over gRPC and polling it every 200 ms; waits
   * until it listens. opts.dir reuses a folder a stopped witness kept (its key and state).
   */
  static async start(dev: DevServer, logKey: string, name: string, opts: { dir?: string; listen?: string } = {}): Promise<Witness> {
    const bin = dev.bin;
    const dir = opts.dir ?? (await mkdtemp(join(tmpdir(), "umbra-ts-witness-")));
    const key = opts.dir
      ? (await runCli(bin, ["witness", "key", "--witness-dir", dir], {})).trim()
      : (await runCli(bin, ["witness", "keygen", "--name", name, "--witness-dir", dir], {})).trim();
    const listen = opts.listen ?? `127.0.0.1:${await freePort()}`;
    const proc = await startUntil(
      bin,
      ["witness", "--witness-dir", dir, "--log-key", logKey, "--server", dev.grpcAddr, "--listen", listen, "--interval", "200ms", "--log-level", "warn"],
      "cosigned checkpoints at",
      30,
    );
    return new Witness(dir, key, `http://${listen}`, proc);
  }

  /** The size of the latest checkpoint it cosigned (0 before the first). */
  async size(): Promise<bigint> {
    const res = await fetch(`${this.url}/checkpoint`);
    if (res.status === 404) return 0n;
    const lines = (await res.text()).split("\n");
    return BigInt(lines[1]!);
  }

  /** The fork evidence it recorded (GET /forks). */
  async forks(): Promise<unknown[]> {
    return ((await (await fetch(`${this.url}/forks`)).json()) as { forks: unknown[] }).forks;
  }

  /** Stops it, and removes its folder unless keepData. */
  async stop(opts: { keepData?: boolean } = {}): Promise<void> {
    await stopProcess(this.#proc);
    if (!opts.keepData) await rm(this.dir, { recursive: true, force: true });
  }
}
