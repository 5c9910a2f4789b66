// The browser test: Debian's chromium, driven by playwright-core, against a real
// `umbra dev` built from this tree, on free loopback ports with a temporary data folder,
// serving the committed build of the web chat (clients/web/dist, embedded in the
// binary).
//
// Environment: UMBRA_BIN runs that binary instead of building one; CHROMIUM names the
// browser (default /usr/bin/chromium); UPDATE_SCREENSHOT=1 writes the screenshot to
// docs/web-chat.png (otherwise to clients/web/test-results/).
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, execFileSync } from 'node:child_process';
import { createServer } from 'node:net';
import { mkdtempSync, mkdirSync, readdirSync, rmSync, existsSync, openSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

const webDir = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const repo = resolve(webDir, '../..');
const chromiumPath = process.env.CHROMIUM || '/usr/bin/chromium';
// The flags known to work on this kind of machine (as root, closed network): no
// sandbox, no GPU, and nothing that calls out to Google's services. Playwright starts
// every launch with a fresh, temporary profile (--user-data-dir).
const chromiumArgs = [
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
];

let work; // temporary folder: the binary, the data folder, the log
let umbra; // the umbra dev process
let base; // http://127.0.0.1:PORT
let browser;
let umbraLog;

/** A loopback port that was free a moment ago. */
function freePort() {
  return new Promise((res, rej) => {
    const srv = createServer();
    srv.on('error', rej);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address();
      srv.close(() => res(port));
    });
  });
}

async function waitReady(url, ms) {
  const deadline = Date.now() + ms;
  for (;;) {
    if (umbra.exitCode !== null) {
      throw new Error(`umbra dev exited (${umbra.exitCode}):\n${readFileSync(umbraLog, 'utf8')}`);
    }
    try {
      const r = await fetch(url);
      if (r.ok) return;
    } catch {
      // not listening yet
    }
    if (Date.now() > deadline) {
      throw new Error(`umbra dev not ready at ${url} within ${ms} ms:\n${readFileSync(umbraLog, 'utf8')}`);
    }
    await new Promise((r) => setTimeout(r, 200));
  }
}

before(async () => {
  if (!existsSync(chromiumPath)) {
    throw new Error(`no browser at ${chromiumPath}: install Debian's chromium (apt-get install chromium), or set CHROMIUM`);
  }
  work = mkdtempSync(join(tmpdir(), 'umbra-web-test-'));
  let bin = process.env.UMBRA_BIN;
  if (!bin) {
    bin = join(work, 'umbra');
    execFileSync('go', ['build', '-o', bin, './cmd/umbra'], { cwd: repo, stdio: 'inherit' });
  }
  const [grpcPort, httpPort] = [await freePort(), await freePort()];
  base = `http://127.0.0.1:${httpPort}`;
  umbraLog = join(work, 'umbra.log');
  const log = openSync(umbraLog, 'w');
  umbra = spawn(
    bin,
    [
      'dev',
      '--data', join(work, 'umbra-data'),
      '--grpc-addr', `127.0.0.1:${grpcPort}`,
      '--http-addr', `127.0.0.1:${httpPort}`,
      '--metrics-addr', '',
    ],
    { stdio: ['ignore', log, log], env: Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('UMBRA_'))) },
  );
  await waitReady(`${base}/readyz`, 30_000);
  browser = await chromium.launch({ executablePath: chromiumPath, headless: true, args: chromiumArgs });
});

after(async () => {
  await browser?.close();
  if (umbra && umbra.exitCode === null) {
    const exited = new Promise((r) => umbra.once('exit', r));
    umbra.kill('SIGTERM');
    const timer = setTimeout(() => umbra.kill('SIGKILL'), 15_000);
    await exited;
    clearTimeout(timer);
  }
  if (work) rmSync(work, { recursive: true, force: true });
});

/** A new browser context (its own profile: cookies, storage, IndexedDB) on the chat. */
async function openChat() {
  const context = await browser.newContext({ viewport: { width: 1100, height: 640 } });
  const page = await context.newPage();
  const problems = [];
  page.on('pageerror', (e) => problems.push(`page error: ${e.message}`));
  page.on('console', (m) => {
    if (m.type() === 'error') problems.push(`console: ${m.text()}`);
  });
  await page.goto(`${base}/`);
  return { context, page, problems };
}

async function signIn(page, name) {
  await page.getByLabel('Your name').fill(name);
  await page.getByRole('button', { name: 'Sign in' }).click();
  await page.locator('#me').filter({ hasText: name }).waitFor({ timeout: 10_000 });
}

test('two browser contexts sign in and see each other in the chat', async () => {
  const alice = await openChat();
  const bob = await openChat();
  try {
    await signIn(alice.page, 'alice');
    await signIn(bob.page, 'bob');
    // bob's list is read when he signs in; alice's is read again within seconds.
    await bob.page.locator('#contacts').getByRole('button', { name: 'alice', exact: true }).waitFor({ timeout: 10_000 });
    await alice.page.locator('#contacts').getByRole('button', { name: 'bob', exact: true }).waitFor({ timeout: 10_000 });
    // Nobody sees themselves as a contact.
    assert.equal(await alice.page.locator('#contacts').getByRole('button', { name: 'alice', exact: true }).count(), 0);

    // A reload keeps each window's user (sessionStorage), apart from the other's.
    await bob.page.reload();
    await bob.page.locator('#me').filter({ hasText: 'bob' }).waitFor();

    await alice.page.locator('#contacts').getByRole('button', { name: 'bob', exact: true }).click();
    await alice.page.locator('.conversation-title').filter({ hasText: 'bob' }).waitFor();
    await alice.page.getByRole('textbox', { name: 'Message' }).fill('hello bob');

    const shot = process.env.UPDATE_SCREENSHOT === '1'
      ? join(repo, 'docs', 'web-chat.png')
      : join(webDir, 'test-results', 'web-chat.png');
    mkdirSync(dirname(shot), { recursive: true });
    await alice.page.screenshot({ path: shot });

    assert.deepEqual(alice.problems, [], 'alice’s page logged errors');
    assert.deepEqual(bob.problems, [], 'bob’s page logged errors');
  } finally {
    await alice.context.close();
    await bob.context.close();
  }
});

test('Argon2id at the wire format’s default cost runs in the Web Worker, under the page’s CSP, and the page stays responsive', async (t) => {
  const worker = readdirSync(join(webDir, 'dist', 'assets')).find((f) => /^argon2\.worker-.*\.js$/.test(f));
  assert.ok(worker, 'dist/assets has no argon2.worker-*.js');
  const { context, page, problems } = await openChat();
  try {
    // docs/wire-format.md, key backup, "Vector: password slot": the OPRF output
    // stretched with Argon2id t = 3, m = 65536 KiB, p = 4.
    const result = await page.evaluate(
      async ({ url, password, salt }) => {
        const bytes = (hex) => Uint8Array.from(hex.match(/../g).map((b) => parseInt(b, 16)));
        const w = new Worker(url, { type: 'module' });
        let ticks = 0;
        const timer = setInterval(() => ticks++, 10);
        const started = performance.now();
        const key = await new Promise((res, rej) => {
          w.onmessage = (e) => ('key' in e.data ? res(e.data.key) : rej(new Error(e.data.error)));
          w.onerror = (e) => rej(new Error(`worker: ${e.message}`));
          w.postMessage({ id: 7, password: bytes(password), salt: bytes(salt), iterations: 3, memoryKiB: 65536, parallelism: 4, hashLength: 32 });
        });
        const ms = performance.now() - started;
        clearInterval(timer);
        w.terminate();
        return { hex: Array.from(key, (b) => b.toString(16).padStart(2, '0')).join(''), ms, ticks };
      },
      {
        url: `/assets/${worker}`,
        password:
          '05db8b8ebf340e4e99304f20c1ce8322897854852bbd61784108dfc43824f10a' +
          'b73a719b95ec7c92be46b750cb321f1a4164e122602c0aba30b4204e39e0e36d',
        salt: '303132333435363738393a3b3c3d3e3f404142434445464748494a4b4c4d4e4f',
      },
    );
    t.diagnostic(`Argon2id (t=3, m=64 MiB, p=4) took ${Math.round(result.ms)} ms in the worker; the page's 10 ms timer fired ${result.ticks} times meanwhile`);
    assert.equal(result.hex, 'b722cd45f42e6687d1da03e1a1f645ad082b72c9d1f38d4946d3122596d60731');
    // A 10 ms timer on the page kept firing while the worker ran: at least a third of
    // its ticks (a blocked page would get none until the end).
    const expected = result.ms / 10;
    assert.ok(result.ticks >= expected / 3, `the page ticked ${result.ticks} times in ${Math.round(result.ms)} ms; want about ${Math.round(expected)}`);
    assert.deepEqual(problems, [], 'the page logged errors');
  } finally {
    await context.close();
  }
});
