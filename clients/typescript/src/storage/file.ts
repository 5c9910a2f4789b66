// FileStorage: a user's values as files in one folder (Node only), each written with
// mode 0600 beside its final name, synced, renamed over it, and the folder synced: what
// the Go SDK does for its keystore and pin file. A folder of the Go CLI's profile
// (~/.umbra/profiles/<name>) holds the same files under the same names.

import type * as fsp from "node:fs/promises";
import type * as pathm from "node:path";
import { checkName, type Storage } from "./storage.js";

// Node's modules are loaded when a FileStorage is first used, so that a browser bundle
// that includes this file (but never uses it) needs no shim for them.
const fsName = "node:fs/promises";
const pathName = "node:path";
let mods: Promise<[typeof fsp, typeof pathm]> | undefined;
function node(): Promise<[typeof fsp, typeof pathm]> {
  mods ??= Promise.all([import(/* @vite-ignore */ fsName) as Promise<typeof fsp>, import(/* @vite-ignore */ pathName) as Promise<typeof pathm>]);
  return mods;
}

export class FileStorage implements Storage {
  readonly dir: string;

  /** dir is the folder; it is created (mode 0700) on the first write. */
  constructor(dir: string) {
    if (dir === "") {
      throw new Error("umbra: FileStorage needs a folder");
    }
    this.dir = dir;
  }

  async get(name: string): Promise<Uint8Array | undefined> {
    checkName(name);
    const [fs, path] = await node();
    try {
      return new Uint8Array(await fs.readFile(path.join(this.dir, name)));
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === "ENOENT") {
        return undefined;
      }
      throw e;
    }
  }

  async put(name: string, value: Uint8Array): Promise<void> {
    checkName(name);
    const [fs, path] = await node();
    await fs.mkdir(this.dir, { recursive: true, mode: 0o700 });
    const final = path.join(this.dir, name);
    const tmp = `${final}.${process.pid}.${Math.random().toString(36).slice(2)}.tmp`;
    const f = await fs.open(tmp, "wx", 0o600);
    try {
      await f.writeFile(value);
      await f.chmod(0o600);
      await f.sync();
    } catch (e) {
      await f.close();
      await fs.rm(tmp, { force: true });
      throw e;
    }
    await f.close();
    try {
      await fs.rename(tmp, final);
    } catch (e) {
      await fs.rm(tmp, { force: true });
      throw e;
    }
    await syncDir(fs, this.dir);
  }

  async delete(name: string): Promise<void> {
    checkName(name);
    const [fs, path] = await node();
    await fs.rm(path.join(this.dir, name), { force: true });
    await syncDir(fs, this.dir);
  }
}

async function syncDir(fs: typeof fsp, dir: string): Promise<void> {
  try {
    const d = await fs.open(dir, "r");
    try {
      await d.sync();
    } finally {
      await d.close();
    }
  } catch {
    // some systems cannot sync a folder; the rename is still atomic
  }
}
