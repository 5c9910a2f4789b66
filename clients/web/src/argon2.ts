// argon2id runs Argon2id in a Web Worker (argon2.worker.ts), started on first use and
// kept for the next calls, so the page never blocks on it.
import type { Argon2idParams } from './sdk-adapter';
import type { Argon2idReply, Argon2idRequest } from './argon2.worker';

let worker: Worker | undefined;
let nextId = 1;
const pending = new Map<number, { resolve: (key: Uint8Array) => void; reject: (err: Error) => void }>();

function start(): Worker {
  const w = new Worker(new URL('./argon2.worker.ts', import.meta.url), { type: 'module', name: 'argon2id' });
  w.onmessage = (event: MessageEvent<Argon2idReply>) => {
    const reply = event.data;
    const p = pending.get(reply.id);
    pending.delete(reply.id);
    if (!p) {
      return;
    }
    if ('key' in reply) {
      p.resolve(reply.key);
    } else {
      p.reject(new Error(`argon2id: ${reply.error}`));
    }
  };
  w.onerror = (event) => {
    // A worker that cannot start fails every call waiting on it; the next call starts
    // a new one.
    for (const p of pending.values()) {
      p.reject(new Error(`argon2id worker: ${event.message || 'failed to start'}`));
    }
    pending.clear();
    worker = undefined;
  };
  return w;
}

export function argon2id(params: Argon2idParams): Promise<Uint8Array> {
  worker ??= start();
  const id = nextId++;
  const req: Argon2idRequest = { id, ...params };
  return new Promise((resolve, reject) => {
    pending.set(id, { resolve, reject });
    worker!.postMessage(req);
  });
}
