// The Web Worker that runs Argon2id (hash-wasm's WebAssembly build) off the page's
// thread: at the wire format's default cost (t = 3, m = 64 MiB, p = 4) it takes a
// fraction of a second to seconds, and the page must stay responsive meanwhile.
//
// Protocol: the page posts Argon2idRequest; the worker answers Argon2idReply with the
// same id.
import { argon2id } from 'hash-wasm';

export interface Argon2idRequest {
  id: number;
  password: Uint8Array;
  salt: Uint8Array;
  iterations: number;
  memoryKiB: number;
  parallelism: number;
  hashLength: number;
}

export type Argon2idReply = { id: number; key: Uint8Array } | { id: number; error: string };

// The worker's global scope, as much of it as this file uses (the DOM library's types
// describe a page, not a worker).
const scope = self as unknown as {
  onmessage: ((event: MessageEvent<Argon2idRequest>) => void) | null;
  postMessage(message: Argon2idReply, transfer?: Transferable[]): void;
};

scope.onmessage = async (event: MessageEvent<Argon2idRequest>) => {
  const req = event.data;
  try {
    const key = await argon2id({
      password: req.password,
      salt: req.salt,
      iterations: req.iterations,
      memorySize: req.memoryKiB,
      parallelism: req.parallelism,
      hashLength: req.hashLength,
      outputType: 'binary',
    });
    scope.postMessage({ id: req.id, key } satisfies Argon2idReply, [key.buffer]);
  } catch (err) {
    scope.postMessage({ id: req.id, error: err instanceof Error ? err.message : String(err) } satisfies Argon2idReply);
  }
};
