// The committed build (dist/): self-consistent, and within the bound of 250 KB
// gzipped for everything a browser may load (the page, its scripts and styles, and the
// Argon2id worker).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { dirname, join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { gzipSync } from 'node:zlib';

const dist = resolve(dirname(fileURLToPath(import.meta.url)), '..', 'dist');
const maxGzipBytes = 250_000;

function files(dir) {
  return readdirSync(dir).flatMap((name) => {
    const path = join(dir, name);
    return statSync(path).isDirectory() ? files(path) : [path];
  });
}

test('the production bundle is at most 250 KB gzipped', (t) => {
  let total = 0;
  for (const path of files(dist)) {
    const gz = gzipSync(readFileSync(path), { level: 9 }).length;
    total += gz;
    t.diagnostic(`${relative(dist, path)}: ${statSync(path).size} bytes, ${gz} gzipped`);
  }
  t.diagnostic(`total: ${total} bytes gzipped (bound ${maxGzipBytes})`);
  assert.ok(total <= maxGzipBytes, `dist/ is ${total} bytes gzipped; the bound is ${maxGzipBytes}`);
});

test('index.html loads only files of the build', () => {
  const index = readFileSync(join(dist, 'index.html'), 'utf8');
  const refs = [...index.matchAll(/(?:src|href)="(\/[^"]*)"/g)].map((m) => m[1]);
  assert.ok(refs.some((r) => /^\/assets\/index-.*\.js$/.test(r)), `index.html loads no script from /assets/: ${refs}`);
  for (const ref of refs) {
    assert.ok(statSync(join(dist, ref)).isFile(), `index.html refers to ${ref}, which dist/ does not hold`);
  }
  // No inline script: the Content-Security-Policy of umbra dev allows none.
  assert.doesNotMatch(index, /<script(?![^>]*\bsrc=)[^>]*>/, 'index.html has an inline script');
});

test('the bundle names no Node module', () => {
  // The SDK runs in Node too; what it loads only there (FileStorage's node:fs, the HPKE
  // library's fallback to Node's crypto) must not reach the page, not even as Vite's
  // empty stand-in for a Node module (vite.config.ts points "crypto" at the page's own).
  const stubs = files(dist).filter((p) => p.includes('__vite-browser-external'));
  assert.deepEqual(stubs, [], 'Vite stood in for a Node module');
  for (const path of files(dist).filter((p) => p.endsWith('.js'))) {
    const js = readFileSync(path, 'utf8');
    const named = [...js.matchAll(/(?:import\(|from)\s*["'`]((?:node:)?(?:fs|fs\/promises|path|crypto|os|child_process|process|buffer))["'`]/g)].map((m) => m[1]);
    assert.deepEqual(named, [], `${relative(dist, path)} imports ${named.join(', ')}`);
    const node = js.match(/["'`]node:[a-z_/]+["'`]/);
    assert.equal(node, null, `${relative(dist, path)} names a Node module: ${node?.[0]}`);
  }
});
