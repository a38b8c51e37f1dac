import type { ObjectStorage } from "./storage.ts";

/** What `head` reports about an object without downloading it. */
export interface ObjectInfo {
  /** Size in bytes. */
  bytes: number;
  /** Hex SHA-256 of the content, when the store knows it (our `put` records it), so a push can skip unchanged files. */
  sha256?: string;
}

/**
 * A store the push CLI can upload to. S3Storage implements it; FolderStorage (fs.ts) should too.
 * Read-only stores (R2 binding in the Worker, HttpStorage) deliberately don't.
 */
export interface WritableStorage extends ObjectStorage {
  /** Create or replace the object at `key`. */
  put(key: string, bytes: Uint8Array): Promise<void>;
  /** Size (and checksum when known) of the object at `key`, or null when there is no such key. */
  head(key: string): Promise<ObjectInfo | null>;
}

export function isWritable(storage: ObjectStorage): storage is WritableStorage {
  const s = storage as Partial<WritableStorage>;
  return typeof s.put === "function" && typeof s.head === "function";
}
