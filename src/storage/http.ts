import type { ObjectStorage } from "./storage.ts";

/** Default per-request limit; it bounds the whole request, body included, so raise it for very large models on slow links. */
export const DEFAULT_TIMEOUT_MS = 30_000;

/**
 * A key as a URL path: each segment percent-encoded, so '#', '?', '%' or spaces in names survive.
 * Returns null for keys with empty, "." or ".." segments: URL parsing would normalise those away
 * (even percent-encoded) and the request would reach a different object than the key names.
 */
export function encodeKeyPath(key: string): string | null {
  const segments = key.split("/");
  if (segments.some((s) => s === "" || s === "." || s === "..")) return null;
  return segments.map(encodeURIComponent).join("/");
}

/**
 * Runs `fetch` and `read` (the body read included) under one AbortSignal.timeout, turning a timeout or a
 * network failure into an Error that says what was being fetched: a bare "TimeoutError" names no model.
 */
export async function fetchWithTimeout<T>(
  what: string,
  timeoutMs: number,
  fetchImpl: typeof fetch,
  input: Request | string,
  init: RequestInit,
  read: (response: Response) => Promise<T>,
): Promise<T> {
  const signal = AbortSignal.timeout(timeoutMs);
  try {
    const response = await fetchImpl(input, { ...init, signal });
    return await read(response);
  } catch (err) {
    if (signal.aborted) throw new Error(`${what} timed out after ${timeoutMs} ms`, { cause: err });
    if (err instanceof StorageError) throw err;
    throw new Error(`${what} failed: ${err instanceof Error ? err.message : String(err)}`, { cause: err });
  }
}

/**
 * A store answered, but not usefully (an unexpected status, a malformed body). `code` is the store's own error
 * code (S3 `<Code>`) when it sent one. fetchWithTimeout passes these through unwrapped.
 */
export class StorageError extends Error {
  constructor(
    message: string,
    readonly status: number,
    readonly code?: string,
  ) {
    super(message);
    this.name = "StorageError";
  }
}

/** Frees the connection when the body isn't wanted (Node keeps the socket busy until the body is consumed). */
export async function discard(response: Response): Promise<void> {
  await response.body?.cancel().catch(() => {});
}

export interface HttpStorageOptions {
  /** Sent as `Authorization: Bearer <token>` (e.g. a Hugging Face token for gated repos). */
  token?: string;
  /** Extra request headers. */
  headers?: Record<string, string>;
  /** Per-request limit in ms (default 30 000). */
  timeoutMs?: number;
  /** Injectable for tests and for runtimes that wrap fetch. */
  fetch?: typeof fetch;
}

/**
 * Read-only storage over a plain HTTP(S) base URL: a CDN, a static bucket website, or a Hugging Face-style
 * `https://huggingface.co/<org>/<model>/resolve/main`. Key k is fetched from `<base>/<k>`. HTTP has no listing,
 * so `list` reads `<base>/index.json`, a JSON array of keys that the push CLI writes next to the objects.
 */
export class HttpStorage implements ObjectStorage {
  readonly baseUrl: string;
  private readonly headers: Record<string, string>;
  private readonly timeoutMs: number;
  private readonly fetchImpl: typeof fetch;

  constructor(baseUrl: string, options: HttpStorageOptions = {}) {
    const url = new URL(baseUrl); // throws early on a malformed base
    if (url.protocol !== "http:" && url.protocol !== "https:") {
      throw new Error(`HttpStorage needs an http(s) URL, got ${baseUrl}`);
    }
    this.baseUrl = url.href.replace(/\/+$/, "");
    this.headers = { ...options.headers };
    if (options.token) this.headers.authorization = `Bearer ${options.token}`;
    this.timeoutMs = options.timeoutMs ?? DEFAULT_TIMEOUT_MS;
    // Bound to globalThis: Workers throw "Illegal invocation" when fetch is called as a method of another object.
    this.fetchImpl = options.fetch ?? ((input, init) => fetch(input, init));
  }

  get location() {
    return `http ${this.baseUrl}`; // never the token
  }

  async get(key: string): Promise<Uint8Array | null> {
    const path = encodeKeyPath(key);
    if (path === null) return null; // such a key can't exist here, as in FolderStorage
    const url = `${this.baseUrl}/${path}`;
    return fetchWithTimeout(`GET ${url}`, this.timeoutMs, this.fetchImpl, url, { headers: this.headers }, async (res) => {
      if (res.status === 404) {
        await discard(res);
        return null;
      }
      if (!res.ok) throw await this.statusError(`GET ${url}`, res);
      return new Uint8Array(await res.arrayBuffer());
    });
  }

  async list(prefix = ""): Promise<string[]> {
    const url = `${this.baseUrl}/index.json`;
    const index = await fetchWithTimeout(
      `GET ${url}`,
      this.timeoutMs,
      this.fetchImpl,
      url,
      { headers: { ...this.headers, accept: "application/json" } },
      async (res) => {
        if (res.status === 404) {
          await discard(res);
          throw new StorageError(
            `${this.location} has no index.json: plain HTTP cannot list objects, so an HTTP store needs ` +
              `${url} (a JSON array of keys, written by the push CLI)`,
            404,
          );
        }
        if (!res.ok) throw await this.statusError(`GET ${url}`, res);
        const text = await res.text();
        try {
          return JSON.parse(text) as unknown;
        } catch {
          throw new StorageError(`${url} is not JSON (expected an array of keys)`, res.status);
        }
      },
    );
    if (!Array.isArray(index) || !index.every((k) => typeof k === "string")) {
      throw new Error(`${url} must be a JSON array of key strings`);
    }
    return [...new Set(index as string[])].filter((k) => k.startsWith(prefix)).sort();
  }

  private async statusError(what: string, res: Response): Promise<StorageError> {
    await discard(res);
    const hint = res.status === 401 || res.status === 403 ? (this.headers.authorization ? " (token rejected)" : " (no token given)") : "";
    return new StorageError(`${what}: HTTP ${res.status} ${res.statusText}${hint}`, res.status);
  }
}
