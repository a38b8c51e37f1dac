import { sha256 } from "@noble/hashes/sha2.js";
import { bytesToHex, utf8ToBytes } from "@noble/hashes/utils.js";

/**
 * Response cache: a repeated request (same model version, task, inputs and parameters) is answered
 * from here and runs no model. Workers use the Cache API (cache-api.ts); elsewhere an in-memory LRU.
 */
export interface CachedResponse {
  body: string;
  etag: string;
}

export interface ResponseCache {
  get(key: string): Promise<CachedResponse | undefined>;
  /** May finish after the response is sent (Workers: handed to waitUntil). */
  put(key: string, value: CachedResponse): Promise<void>;
}

/** JSON with object keys sorted, so that equal requests give equal keys whatever the key order. */
export function canonicalJson(value: unknown): string {
  return JSON.stringify(value, (_, v) =>
    v && typeof v === "object" && !Array.isArray(v) ? Object.fromEntries(Object.entries(v).sort(([a], [b]) => (a < b ? -1 : 1))) : v,
  );
}

/**
 * Hex SHA-256 of the request's canonical JSON. Synchronous on purpose: Web Crypto's digest is a
 * thread-pool round trip on Node (~75 µs, a tenth of a small model's run) for a few hundred bytes.
 */
export const cacheKey = (parts: Record<string, unknown>) => bytesToHex(sha256(utf8ToBytes(canonicalJson(parts))));

/** Least-recently-used cache bounded by the size of the bodies it holds. */
export class MemoryCache implements ResponseCache {
  private readonly entries = new Map<string, CachedResponse>();
  private bytes = 0;

  constructor(private readonly maxBytes = 32 * 2 ** 20) {}

  async get(key: string) {
    const hit = this.entries.get(key);
    if (hit) {
      // Map keeps insertion order: re-inserting marks the entry most recently used.
      this.entries.delete(key);
      this.entries.set(key, hit);
    }
    return hit;
  }

  async put(key: string, value: CachedResponse) {
    if (value.body.length > this.maxBytes) return;
    const old = this.entries.get(key);
    if (old) this.bytes -= old.body.length;
    this.entries.delete(key);
    this.entries.set(key, value);
    this.bytes += value.body.length;
    for (const [oldest, entry] of this.entries) {
      if (this.bytes <= this.maxBytes) break;
      this.entries.delete(oldest);
      this.bytes -= entry.body.length;
    }
  }
}
