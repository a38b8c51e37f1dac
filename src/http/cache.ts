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

/**
 * JSON with object keys sorted, so that equal requests give equal keys whatever the key order. For
 * the JSON values a parsed request holds (undefined members are left out, as JSON.stringify does).
 */
export function canonicalJson(value: unknown): string {
  if (value === null || typeof value !== "object") return JSON.stringify(value) ?? "null";
  if (Array.isArray(value)) return `[${value.map(canonicalJson).join(",")}]`;
  const record = value as Record<string, unknown>;
  const members = Object.keys(record)
    .filter((k) => record[k] !== undefined)
    .sort()
    .map((k) => `${JSON.stringify(k)}:${canonicalJson(record[k])}`);
  return `{${members.join(",")}}`;
}

/** Hex SHA-256 of a string, synchronously. */
export type Sha256Hex = (text: string) => string;

/**
 * The portable one (pure JS). Synchronous on purpose: Web Crypto's digest is a thread-pool round trip
 * on Node (~75 µs, a tenth of a small model's run) for a few hundred bytes. Runtimes with a native
 * synchronous hash hand theirs to the app instead (src/runtimes/native-hash.ts).
 */
export const portableSha256Hex: Sha256Hex = (text) => bytesToHex(sha256(utf8ToBytes(text)));

/** The response-cache key (and ETag) of a request: the hex SHA-256 of its canonical JSON. */
export const cacheKey = (parts: Record<string, unknown>, sha256Hex: Sha256Hex = portableSha256Hex) => sha256Hex(canonicalJson(parts));

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
