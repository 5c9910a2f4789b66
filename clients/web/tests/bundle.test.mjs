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
