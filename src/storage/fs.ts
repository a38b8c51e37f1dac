import { readdir, readFile } from "node:fs/promises";
import { join, relative, resolve, sep } from "node:path";
import type { ObjectStorage } from "./storage.ts";

/** A local folder as object storage (Node and Deno both provide node:fs). */
export class FolderStorage implements ObjectStorage {
  readonly root: string;
  constructor(root: string) {
    this.root = resolve(root);
  }

  get location() {
    return `folder ${this.root}`;
  }

  async get(key: string): Promise<Uint8Array | null> {
    const path = resolve(this.root, key);
    if (!path.startsWith(this.root + sep)) return null; // keys never escape the root
    try {
      const buffer = await readFile(path);
      // A view, not a copy: model files are tens of MB.
      return new Uint8Array(buffer.buffer, buffer.byteOffset, buffer.byteLength);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === "ENOENT") return null;
      throw err;
    }
  }

  async list(prefix = ""): Promise<string[]> {
    const entries = await readdir(join(this.root, prefix), { recursive: true, withFileTypes: true }).catch(() => []);
    return entries
      .filter((e) => e.isFile())
      .map((e) => relative(this.root, join(e.parentPath ?? e.path, e.name)).split(sep).join("/"))
      .sort();
  }
}
