// Helpers that open SDK clients for named users of a DevServer.

import { UmbraClient, type ClientConfig } from "../../src/client/client.js";
import { MemoryStorage } from "../../src/storage/storage.js";
import type { DevServer } from "./devserver.js";

export interface User {
  readonly name: string;
  readonly id: string;
  readonly client: UmbraClient;
}

/** Opens a client for the app user name (a fresh MemoryStorage unless one is given). */
export async function openUser(dev: DevServer, name: string, opts: Partial<ClientConfig> = {}): Promise<User> {
  const id = await dev.identity(name);
  const client = await UmbraClient.open({
    baseUrl: dev.baseUrl,
    token: dev.tokenProvider(id),
    storage: new MemoryStorage(),
    noPassphrase: opts.passphrase === undefined,
    ...opts,
  });
  return { name, id, client };
}

/** Opens and registers a user. */
export async function registeredUser(dev: DevServer, name: string, opts: Partial<ClientConfig> = {}): Promise<User> {
  const u = await openUser(dev, name, opts);
  await u.client.register();
  return u;
}

let counter = 0;
/** A user name not used before in this process. */
export function uniqueName(prefix: string): string {
  return `${prefix}-${process.pid}-${++counter}`;
}
