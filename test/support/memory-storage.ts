import { readdirSync, readFileSync } from "node:fs";
import { join, relative } from "node:path";
import type { ObjectStorage } from "../../src/storage/storage.ts";

/** Object storage in a Map, counting reads, for tests that corrupt, fix or watch objects. */
export class MemoryStorage implements ObjectStorage {
  readonly objects = new Map<string, Uint8Array>();
  reads = 0;
  location = "memory";

  /** Copies a folder's files under `prefix`. */
  addFolder(dir: string, prefix: string) {
    for (const entry of readdirSync(dir, { recursive: true, withFileTypes: true })) {
      if (!entry.isFile()) continue;
      const path = join(entry.parentPath ?? entry.path, entry.name);
      this.objects.set(`${prefix}/${relative(dir, path)}`, new Uint8Array(readFileSync(path)));
    }
    return this;
  }

  async get(key: string) {
    this.reads++;
    return this.objects.get(key) ?? null;
  }

  async list(prefix = "") {
    return [...this.objects.keys()].filter((k) => k.startsWith(prefix)).sort();
  }
}
