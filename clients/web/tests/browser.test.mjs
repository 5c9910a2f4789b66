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
import { MemoryStorage, UmbraClient } from '@umbra-e2ee/sdk';

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
let dataDir; // umbra dev's data folder
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
  dataDir = join(work, 'umbra-data');
  const log = openSync(umbraLog, 'w');
  umbra = spawn(
    bin,
    [
      'dev',
      '--data', dataDir,
      '--grpc-addr', `127.0.0.1:${grpcPort}`,
      '--http-addr', `127.0.0.1:${httpPort}`,
      '--metrics-addr', '',
    ],
    { stdio: ['ignore', log, log], env: Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('UMBRA_'))) },
  );
  await waitReady(`${base}/readyz`, 30_000);
  browser = await chromium.launch({ executablePath: chromiumPath, headless: true, args: chromiumArgs });
});

/** Stops umbra dev (SIGTERM, then SIGKILL after 15 s) and waits for it to exit. */
async function stopUmbra() {
  if (umbra && umbra.exitCode === null && umbra.signalCode === null) {
    const exited = new Promise((r) => umbra.once('exit', r));
    umbra.kill('SIGTERM');
    const timer = setTimeout(() => umbra.kill('SIGKILL'), 15_000);
    await exited;
    clearTimeout(timer);
  }
}

/** Every file under dir, at any depth. */
function filesUnder(dir) {
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) =>
    e.isDirectory() ? filesUnder(join(dir, e.name)) : e.isFile() ? [join(dir, e.name)] : [],
  );
}

after(async () => {
  await browser?.close();
  await stopUmbra();
  if (work) rmSync(work, { recursive: true, force: true });
});

/**
 * A new browser context (its own profile: cookies, storage, IndexedDB: a device of its
 * own) on the chat. Errors the page logs are collected; a request the test makes fail
 * on purpose (a wrong backup password is a 403) is logged by the browser too, and named
 * in allowed.
 */
async function openChat() {
  const context = await browser.newContext({ viewport: { width: 1100, height: 640 } });
  const page = await context.newPage();
  const problems = [];
  const allowed = [];
  page.on('pageerror', (e) => problems.push(`page error: ${e.message}`));
  page.on('console', (m) => {
    if (m.type() === 'error' && !allowed.some((re) => re.test(m.text()))) problems.push(`console: ${m.text()}`);
  });
  await page.goto(`${base}/`);
  return { context, page, problems, allowed };
}

async function signIn(page, name, passphrase) {
  await page.getByLabel('Your name').fill(name);
  await page.getByLabel('Passphrase for your keys in this browser').fill(passphrase);
  await page.getByRole('button', { name: 'Sign in' }).click();
  await page.locator('#me').filter({ hasText: name }).waitFor({ timeout: 20_000 });
}

/** Opens the conversation with a contact (a button of the contact list). */
async function openContact(page, name) {
  await page.locator('#contacts').getByRole('button', { name, exact: true }).click({ timeout: 15_000 });
  await page.locator('.conversation-title').filter({ hasText: name }).waitFor();
}

/** Opens a group's conversation (a button of the group list, which shows the member count too). */
async function openGroup(page, name) {
  await page.locator('#groups button').filter({ hasText: name }).click({ timeout: 15_000 });
  await page.locator('.conversation-title').filter({ hasText: name }).waitFor();
}

async function send(page, text) {
  await page.getByRole('textbox', { name: 'Message' }).fill(text);
  await page.getByRole('button', { name: 'Send', exact: true }).click();
  await seeMessage(page, text, 'You');
}

/** Waits until the open conversation shows text, sent by from ("You" for the user). */
async function seeMessage(page, text, from) {
  await page
    .locator('#messages li.message')
    .filter({ has: page.locator('.sender', { hasText: from }) })
    .filter({ has: page.locator('.text').getByText(text, { exact: true }) })
    .waitFor({ timeout: 15_000 });
}

/** The open conversation's messages as "sender: text", in order. */
async function messages(page) {
  return page.locator('#messages li.message').evaluateAll((items) =>
    items.map((li) => `${li.querySelector('.sender').textContent}: ${li.querySelector('.text').textContent}`),
  );
}

function noProblems(...users) {
  for (const u of users) assert.deepEqual(u.problems, [], `${u.name}’s page logged errors`);
}

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

// The story, in order (node:test runs a file's tests one after the other): what each
// test leaves is where the next starts. Every passphrase, password and message the
// test types is listed, for the scan of the data folder at the end.
const secrets = {
  passphrases: ['alice-device-passphrase-7Q2', 'bob-device-passphrase-K9w', 'carol-device-passphrase-P4v', 'bob-new-laptop-passphrase-3Xz'],
  passwords: ['bob-backup-password-horse-staple-91'],
  messages: [],
};
function say(text) {
  secrets.messages.push(text);
  return text;
}
let alice;
let bob;
let carol;

test('alice and bob, in two browser contexts, sign in and exchange 1:1 messages both ways', async () => {
  alice = { name: 'alice', ...(await openChat()) };
  bob = { name: 'bob', ...(await openChat()) };
  await signIn(alice.page, 'alice', secrets.passphrases[0]);
  await signIn(bob.page, 'bob', secrets.passphrases[1]);
  // Nobody sees themselves as a contact.
  await alice.page.locator('#contacts').getByRole('button', { name: 'bob', exact: true }).waitFor({ timeout: 15_000 });
  assert.equal(await alice.page.locator('#contacts').getByRole('button', { name: 'alice', exact: true }).count(), 0);

  await openContact(alice.page, 'bob');
  await send(alice.page, say('Hi Bob, the quarterly numbers are in the shared folder (tangerine-41)'));
  // bob has not opened the conversation: it is marked unread, and its history has it.
  await bob.page.locator('#contacts button.unread').filter({ hasText: 'alice' }).waitFor({ timeout: 15_000 });
  await openContact(bob.page, 'alice');
  await seeMessage(bob.page, 'Hi Bob, the quarterly numbers are in the shared folder (tangerine-41)', 'alice');
  // Both have the conversation open: the live inbox brings each message.
  await send(bob.page, say('Thanks Alice, reading them now (marmalade-17)'));
  await seeMessage(alice.page, 'Thanks Alice, reading them now (marmalade-17)', 'bob');
  await send(alice.page, say('Lunch at noon? (quince-88)'));
  await seeMessage(bob.page, 'Lunch at noon? (quince-88)', 'alice');
  const want = [
    'You: Hi Bob, the quarterly numbers are in the shared folder (tangerine-41)',
    'bob: Thanks Alice, reading them now (marmalade-17)',
    'You: Lunch at noon? (quince-88)',
  ];
  assert.deepEqual(await messages(alice.page), want);
  assert.deepEqual(await messages(bob.page), want.map((m) => m.replace(/^You:/, 'alice:').replace(/^bob:/, 'You:')));
  assert.equal(await alice.page.locator('#connection').textContent(), 'live');
  noProblems(alice, bob);
});

test('alice and bob see the same safety number, and alice marks bob verified', async () => {
  await alice.page.getByRole('button', { name: 'Safety number' }).click();
  await bob.page.getByRole('button', { name: 'Safety number' }).click();
  const digits = async (page) => {
    await page.locator('#safety-digits span').first().waitFor({ timeout: 15_000 });
    return page.locator('#safety-digits span').allTextContents();
  };
  const [a, b] = [await digits(alice.page), await digits(bob.page)];
  assert.equal(a.length, 12, `alice sees ${a}`);
  for (const g of a) assert.match(g, /^\d{5}$/);
  assert.deepEqual(a, b, 'the two sides compute one safety number');
  await alice.page.getByRole('button', { name: 'Mark as verified' }).click();
  await alice.page.locator('#safety .verified').filter({ hasText: 'Verified' }).waitFor();
  noProblems(alice, bob);
});

test('alice creates a group with bob, adds carol (a third context): the key rotates, and all three exchange group messages', async () => {
  carol = { name: 'carol', ...(await openChat()) };
  await signIn(carol.page, 'carol', secrets.passphrases[2]);
  await alice.page.locator('#contacts').getByRole('button', { name: 'carol', exact: true }).waitFor({ timeout: 15_000 });

  await alice.page.getByRole('button', { name: 'New group' }).click();
  const create = alice.page.locator('#group-dialog');
  await create.getByLabel('Group name').fill('Launch team');
  await create.getByLabel('bob').check();
  await create.getByRole('button', { name: 'Create' }).click();
  await alice.page.locator('.conversation-title').filter({ hasText: 'Launch team' }).waitFor({ timeout: 15_000 });
  await send(alice.page, say('Welcome to the launch team, Bob (persimmon-22)'));
  await alice.page.locator('.conversation-detail').filter({ hasText: '2 members · key epoch 1' }).waitFor({ timeout: 15_000 });

  // bob's chat hears of the group from its inbox.
  await openGroup(bob.page, 'Launch team');
  await seeMessage(bob.page, 'Welcome to the launch team, Bob (persimmon-22)', 'alice');

  await alice.page.getByRole('button', { name: 'Add members' }).click();
  const add = alice.page.locator('#add-members-dialog');
  await add.getByLabel('carol').check();
  await add.getByRole('button', { name: 'Add' }).click();
  await add.waitFor({ state: 'hidden', timeout: 15_000 });
  // The next message commits a new epoch whose key carol gets, by itself.
  await send(alice.page, say('Carol joins us from design (kumquat-63)'));
  await alice.page.locator('.conversation-detail').filter({ hasText: '3 members · key epoch 2' }).waitFor({ timeout: 15_000 });

  await openGroup(carol.page, 'Launch team');
  await seeMessage(carol.page, 'Carol joins us from design (kumquat-63)', 'alice');
  await send(carol.page, say('Hello both, mockups on Friday (pomelo-35)'));
  await seeMessage(alice.page, 'Hello both, mockups on Friday (pomelo-35)', 'carol');
  await seeMessage(bob.page, 'Hello both, mockups on Friday (pomelo-35)', 'carol');
  await send(bob.page, say('Great, see you Friday (damson-50)'));
  await seeMessage(alice.page, 'Great, see you Friday (damson-50)', 'bob');
  await seeMessage(carol.page, 'Great, see you Friday (damson-50)', 'bob');
  // The group's history is visible from when one joined (the chat's groups are
  // SINCE_JOIN): carol's starts with the message that brought her the new key.
  assert.deepEqual(await messages(carol.page), [
    'alice: Carol joins us from design (kumquat-63)',
    'You: Hello both, mockups on Friday (pomelo-35)',
    'bob: Great, see you Friday (damson-50)',
  ]);

  // The README's screenshot: alice's 1:1 with bob, verified, beside her contacts and group.
  await openContact(alice.page, 'bob');
  await seeMessage(alice.page, 'Lunch at noon? (quince-88)', 'You');
  await alice.page.getByRole('button', { name: 'Safety number' }).click();
  await alice.page.locator('#safety .verified').filter({ hasText: 'Verified' }).waitFor({ timeout: 15_000 });
  const shot = process.env.UPDATE_SCREENSHOT === '1'
    ? join(repo, 'docs', 'web-chat.png')
    : join(webDir, 'test-results', 'web-chat.png');
  mkdirSync(dirname(shot), { recursive: true });
  await alice.page.screenshot({ path: shot });
  noProblems(alice, bob, carol);
});

test('bob backs his keys up; on a new browser context he restores them with his password and reads his 1:1 and group history', async () => {
  await bob.page.getByRole('button', { name: 'Back up keys' }).click();
  const backup = bob.page.locator('#backup-dialog');
  await backup.getByLabel('Password', { exact: true }).fill(secrets.passwords[0]);
  await backup.getByLabel('Password again').fill(secrets.passwords[0]);
  await backup.getByRole('button', { name: 'Back up' }).click();
  await backup.getByRole('status').filter({ hasText: 'Keys backed up.' }).waitFor({ timeout: 30_000 });
  await backup.getByRole('button', { name: 'Close' }).click();

  // A new device: a fresh profile, with nothing of bob's.
  const laptop = { name: 'bob’s new device', ...(await openChat()) };
  try {
    await signIn(laptop.page, 'bob', secrets.passphrases[3]);
    await laptop.page.locator('#notice-restore').waitFor();
    await laptop.page.locator('#notice-restore').getByRole('button', { name: 'Restore keys' }).click();
    const restore = laptop.page.locator('#restore-dialog');
    // A wrong password costs one of the attempts, and says so.
    laptop.allowed.push(/status of 403/);
    await restore.getByLabel('Password', { exact: true }).fill('not-the-password');
    await restore.getByRole('button', { name: 'Restore' }).click();
    await restore.getByRole('status').filter({ hasText: 'Wrong password: 9 attempts left' }).waitFor({ timeout: 30_000 });
    await restore.getByLabel('Password', { exact: true }).fill(secrets.passwords[0]);
    await restore.getByRole('button', { name: 'Restore' }).click();
    await restore.getByRole('status').filter({ hasText: 'Keys restored.' }).waitFor({ timeout: 30_000 });
    await restore.getByRole('button', { name: 'Close' }).click();
    assert.equal(await laptop.page.locator('#notice-restore').count(), 0);

    await openContact(laptop.page, 'alice');
    await seeMessage(laptop.page, 'Lunch at noon? (quince-88)', 'alice');
    assert.deepEqual(await messages(laptop.page), [
      'alice: Hi Bob, the quarterly numbers are in the shared folder (tangerine-41)',
      'You: Thanks Alice, reading them now (marmalade-17)',
      'alice: Lunch at noon? (quince-88)',
    ]);
    await openGroup(laptop.page, 'Launch team');
    await seeMessage(laptop.page, 'Great, see you Friday (damson-50)', 'You');
    assert.deepEqual(await messages(laptop.page), [
      'alice: Welcome to the launch team, Bob (persimmon-22)',
      'alice: Carol joins us from design (kumquat-63)',
      'carol: Hello both, mockups on Friday (pomelo-35)',
      'You: Great, see you Friday (damson-50)',
    ]);
    // And writes from it: alice, in her 1:1 with bob, sees the group marked unread, and reads it.
    await send(laptop.page, say('Writing from my new laptop now (loquat-74)'));
    await alice.page.locator('#groups button.unread').filter({ hasText: 'Launch team' }).waitFor({ timeout: 15_000 });
    await openGroup(alice.page, 'Launch team');
    await seeMessage(alice.page, 'Writing from my new laptop now (loquat-74)', 'bob');
    noProblems(alice, bob, carol, laptop);
  } finally {
    await laptop.context.close();
  }
});

test('a reload asks for the passphrase again, and a wrong one does not open the keys', async () => {
  await carol.page.reload();
  await carol.page.getByLabel('Passphrase for your keys in this browser').waitFor();
  assert.equal(await carol.page.getByLabel('Your name').inputValue(), 'carol');
  await carol.page.getByLabel('Passphrase for your keys in this browser').fill('not-carols-passphrase');
  await carol.page.getByRole('button', { name: 'Sign in' }).click();
  await carol.page.locator('.sign-in .status').filter({ hasText: 'Wrong passphrase for carol’s keys in this browser.' }).waitFor({ timeout: 20_000 });
  await signIn(carol.page, 'carol', secrets.passphrases[2]);
  await openGroup(carol.page, 'Launch team');
  await seeMessage(carol.page, 'Writing from my new laptop now (loquat-74)', 'bob');
  noProblems(carol);
});

test('carol resets her keys elsewhere: alice’s chat refuses to encrypt to her until alice compares the new safety number and accepts the new key', async () => {
  // carol, on a device with none of her keys, resets them with a grant from the app
  // backend (umbra dev's API key plays it): a new card that no old key endorses.
  const creds = JSON.parse(readFileSync(join(dataDir, 'dev-credentials.json'), 'utf8'));
  const dev = async (path, body, bearer) => {
    const r = await fetch(base + path, {
      method: 'POST',
      headers: { 'Content-Type': 'application/json', ...(bearer ? { Authorization: `Bearer ${bearer}` } : {}) },
      body: JSON.stringify(body),
    });
    if (!r.ok) throw new Error(`${path}: ${r.status} ${await r.text()}`);
    return r.json();
  };
  const { identity: carolId } = await dev('/dev/sign-in', { name: 'carol' });
  const { identity: aliceId } = await dev('/dev/sign-in', { name: 'alice' });
  const { resetGrant } = await dev('/v1/reset-grants', { identity: carolId }, creds.api_key);
  const carolElsewhere = await UmbraClient.open({
    baseUrl: base,
    token: async () => (await dev('/dev/sign-in', { name: 'carol' })).accessToken,
    storage: new MemoryStorage(),
    noPassphrase: true,
  });
  await carolElsewhere.resetKeys(resetGrant);

  await openContact(alice.page, 'carol');
  const text = say('Are the mockups final? (medlar-19)');
  await alice.page.getByRole('textbox', { name: 'Message' }).fill(text);
  await alice.page.getByRole('button', { name: 'Send', exact: true }).click();
  await alice.page.locator('#notice-send').filter({ hasText: 'carol’s key changed' }).waitFor({ timeout: 15_000 });
  const notice = alice.page.locator(`#key-change-${carolId}`);
  await notice.waitFor({ timeout: 15_000 });
  // The notice's safety number is the one carol sees with her new key.
  const shown = (await notice.locator('code').textContent()).trim();
  assert.equal(shown, await carolElsewhere.safetyNumber(aliceId));
  assert.equal(await alice.page.locator('#messages li.message.mine').count(), 0, 'nothing was sent to the new key');

  await notice.getByRole('button', { name: 'Accept the new key' }).click();
  await notice.waitFor({ state: 'detached', timeout: 15_000 });
  await send(alice.page, text);
  const page = await carolElsewhere.history({ conversationId: aliceId });
  const got = await Promise.all(page.messages.map(async (m) => new TextDecoder().decode(await carolElsewhere.openMessage(m))));
  assert.deepEqual(got, [text], 'carol’s new key reads what alice sent after accepting it');
  noProblems(alice);
});

test('once umbra dev has stopped, no file of its data folder holds a message, a passphrase or a password the test typed', async (t) => {
  for (const u of [alice, bob, carol]) await u.context.close();
  await stopUmbra();
  const typed = [...secrets.messages, ...secrets.passphrases, ...secrets.passwords];
  assert.equal(secrets.messages.length, 9);
  // The texts as UTF-8, and as UTF-16 (what a JavaScript engine or a Windows tool would
  // write), so that neither encoding hides one.
  const needles = typed.flatMap((text) => ['utf8', 'utf16le'].map((encoding) => ({ text, encoding, bytes: Buffer.from(text, encoding) })));
  const files = filesUnder(dataDir);
  let size = 0;
  for (const f of files) {
    const b = readFileSync(f);
    size += b.length;
    for (const n of needles) {
      assert.equal(b.indexOf(n.bytes), -1, `${f} holds “${n.text}” (${n.encoding})`);
    }
  }
  // The scan looked at the stores: the messages are there, as ciphertext.
  assert.ok(files.some((f) => f.endsWith('messaging.db')), `no messaging.db among ${files}`);
  t.diagnostic(`scanned ${files.length} files, ${size} bytes, for ${typed.length} texts the test typed`);
});

