// IndexedDBStorage: a user's values in a browser's IndexedDB, one database per user
// (name it after the user: "umbra:alice"), one object store of named byte values. The
// keystore stored here is the wire format's file (§7.2), encrypted under the passphrase
// with Argon2id and ChaCha20-Poly1305 by the keystore format itself: IndexedDB only keeps
// the bytes.

import { checkName, type Storage } from "./storage.js";

const storeName = "values";

export interface IndexedDBStorageOptions {
  /** Defaults to globalThis.indexedDB. */
  readonly indexedDB?: IDBFactory | undefined;
}

export class IndexedDBStorage implements Storage {
  readonly dbName: string;
  readonly #factory: IDBFactory;
  #db: Promise<IDBDatabase> | undefined;

  constructor(dbName: string, opts: IndexedDBStorageOptions = {}) {
    const factory = opts.indexedDB ?? (globalThis as { indexedDB?: IDBFactory }).indexedDB;
    if (!factory) {
      throw new Error("umbra: this environment has no IndexedDB (in Node, use FileStorage)");
    }
    if (dbName === "") {
      throw new Error("umbra: IndexedDBStorage needs a database name");
    }
    this.dbName = dbName;
    this.#factory = factory;
  }

  #open(): Promise<IDBDatabase> {
    this.#db ??= new Promise((ok, fail) => {
      const req = this.#factory.open(this.dbName, 1);
      req.onupgradeneeded = () => {
        if (!req.result.objectStoreNames.contains(storeName)) {
          req.result.createObjectStore(storeName);
        }
      };
      req.onsuccess = () => ok(req.result);
      req.onerror = () => fail(req.error ?? new Error("umbra: IndexedDB open failed"));
      req.onblocked = () => fail(new Error(`umbra: IndexedDB ${this.dbName} is blocked by another tab`));
    });
    return this.#db;
  }

  async #run<T>(mode: IDBTransactionMode, fn: (s: IDBObjectStore) => IDBRequest<T>): Promise<T> {
    const db = await this.#open();
    return new Promise((ok, fail) => {
      const tx = db.transaction(storeName, mode);
      const req = fn(tx.objectStore(storeName));
      // The transaction's completion, not the request's, is when a write is durable.
      tx.oncomplete = () => ok(req.result);
      tx.onerror = () => fail(tx.error ?? req.error ?? new Error("umbra: IndexedDB transaction failed"));
      tx.onabort = () => fail(tx.error ?? new Error("umbra: IndexedDB transaction aborted"));
    });
  }

  async get(name: string): Promise<Uint8Array | undefined> {
    checkName(name);
    const v = await this.#run("readonly", (s) => s.get(name) as IDBRequest<unknown>);
    if (v === undefined) {
      return undefined;
    }
    if (v instanceof Uint8Array) {
      return v.slice();
    }
    if (v instanceof ArrayBuffer) {
      return new Uint8Array(v.slice(0));
    }
    throw new Error(`umbra: IndexedDB ${this.dbName} holds a value of another kind under ${name}`);
  }

  async put(name: string, value: Uint8Array): Promise<void> {
    checkName(name);
    await this.#run("readwrite", (s) => s.put(value.slice(), name));
  }

  async delete(name: string): Promise<void> {
    checkName(name);
    await this.#run("readwrite", (s) => s.delete(name));
  }

  /** Closes the database connection. */
  async close(): Promise<void> {
    if (this.#db) {
      (await this.#db).close();
      this.#db = undefined;
    }
  }
}
