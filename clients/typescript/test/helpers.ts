// Shared test helpers: the vector files the Go tests check, read from the repository.
import { readFileSync } from "node:fs";
import assert from "node:assert/strict";
import { fromHex } from "../src/bytes.js";
import { E2eeError, KeyBackupError, type E2eeErrorKind, type KeyBackupErrorKind } from "../src/errors.js";

/** repoFile reads a file of the repository (the tests run from dist/test). */
export function repoFile(path: string): Uint8Array {
  return new Uint8Array(readFileSync(new URL(`../../../../${path}`, import.meta.url)));
}

/** repoJSON parses a JSON file of the repository. */
export function repoJSON<T = any>(path: string): T {
  return JSON.parse(new TextDecoder().decode(repoFile(path))) as T;
}

export const h = fromHex;

/** throwsKind asserts that fn throws an E2eeError of kind. */
export function throwsKind(fn: () => unknown, kind: E2eeErrorKind, message?: RegExp): void {
  assert.throws(fn, (err: unknown) => {
    assert.ok(err instanceof E2eeError, `want an E2eeError, got ${String(err)}`);
    assert.equal(err.kind, kind, err.message);
    if (message) assert.match(err.message, message);
    return true;
  });
}

/** rejectsKind asserts that p rejects with an E2eeError of kind. */
export async function rejectsKind(p: Promise<unknown> | (() => Promise<unknown>), kind: E2eeErrorKind, message?: RegExp): Promise<void> {
  await assert.rejects(p, (err: unknown) => {
    assert.ok(err instanceof E2eeError, `want an E2eeError, got ${String(err)}`);
    assert.equal(err.kind, kind, err.message);
    if (message) assert.match(err.message, message);
    return true;
  });
}

/** rejectsBackupKind asserts that p rejects (or fn throws) with a KeyBackupError of kind. */
export async function rejectsBackupKind(p: Promise<unknown> | (() => unknown), kind: KeyBackupErrorKind): Promise<void> {
  const run = typeof p === "function" ? async () => p() : p;
  await assert.rejects(run, (err: unknown) => {
    assert.ok(err instanceof KeyBackupError, `want a KeyBackupError, got ${String(err)}`);
    assert.equal(err.kind, kind, err.message);
    return true;
  });
}

/** flip returns a copy of b with bit 0 of byte i flipped. */
export function flip(b: Uint8Array, i: number): Uint8Array {
  const c = b.slice();
  c[i]! ^= 1;
  return c;
}
