import type { CachedResponse, ResponseCache } from "./cache.ts";

/**
 * The Workers Cache API (`caches.default`) as a response cache. It only stores GET requests, so
 * entries live under a synthetic URL made from the key.
 */
export class CacheApiCache implements ResponseCache {
  constructor(
    private readonly cache: Cache,
    private readonly maxAgeSeconds = 3600,
  ) {}

  private url(key: string) {
    return `https://bert-edge.cache/${key}`;
  }

  async get(key: string): Promise<CachedResponse | undefined> {
    const hit = await this.cache.match(this.url(key));
    if (!hit) return undefined;
    return { body: await hit.text(), etag: hit.headers.get("etag") ?? "" };
  }

  async put(key: string, { body, etag }: CachedResponse) {
    const headers = { "content-type": "application/json", etag, "cache-control": `max-age=${this.maxAgeSeconds}` };
    await this.cache.put(this.url(key), new Response(body, { headers }));
  }
}
