import { AwsClient } from "aws4fetch";
import { DEFAULT_TIMEOUT_MS, discard, encodeKeyPath, fetchWithTimeout, StorageError } from "./http.ts";
import { sha256Hex } from "../hash.ts";
import type { ObjectInfo, WritableStorage } from "./writable.ts";

export interface S3StorageOptions {
  /** e.g. "https://s3.eu-west-1.amazonaws.com", "https://<account>.r2.cloudflarestorage.com", "http://127.0.0.1:9000". */
  endpoint: string;
  bucket: string;
  /** Folder inside the bucket holding the models; keys are relative to it. */
  prefix?: string;
  /** Signing region (default "us-east-1"; R2 wants "auto"). */
  region?: string;
  accessKeyId: string;
  secretAccessKey: string;
  /** For temporary (STS) credentials. */
  sessionToken?: string;
  /** `<endpoint>/<bucket>/<key>` (default) rather than `<bucket>.<endpoint host>/<key>`; MinIO and R2 need it. */
  forcePathStyle?: boolean;
  /** Per-request limit in ms, body included (default 30 000). */
  timeoutMs?: number;
  /** ListObjectsV2 max-keys per page (default: the server's, 1000 on AWS). */
  pageSize?: number;
  /** Injectable for tests and for runtimes that wrap fetch. */
  fetch?: typeof fetch;
}

/** Metadata header where `put` records the content's SHA-256, so `head` can report it (S3 ETags aren't hashes for multipart uploads). */
const SHA256_META = "x-amz-meta-sha256";

/**
 * Any S3-compatible bucket (AWS S3, R2's S3 API, MinIO, ...) as object storage, with SigV4-signed fetches
 * (aws4fetch uses only fetch and crypto.subtle, so this runs in Workers, Deno and Node alike).
 */
export class S3Storage implements WritableStorage {
  readonly bucket: string;
  /** "" or a folder ending in "/". */
  readonly prefix: string;
  private readonly endpoint: URL;
  /** The endpoint's path without trailing slashes ("" usually): URL.pathname can't be empty, so keep it apart. */
  private readonly endpointPath: string;
  private readonly pathStyle: boolean;
  private readonly timeoutMs: number;
  private readonly pageSize?: number;
  private readonly client: AwsClient;
  private readonly fetchImpl: typeof fetch;

  constructor(options: S3StorageOptions) {
    if (!options.bucket) throw new Error("S3Storage needs a bucket");
    if (!options.accessKeyId || !options.secretAccessKey) {
      throw new Error(`S3Storage for bucket ${options.bucket} needs accessKeyId and secretAccessKey`);
    }
    this.endpoint = new URL(options.endpoint);
    this.endpointPath = this.endpoint.pathname.replace(/\/+$/, "");
    this.bucket = options.bucket;
    const prefix = (options.prefix ?? "").replace(/^\/+|\/+$/g, "");
    this.prefix = prefix ? `${prefix}/` : "";
    this.pathStyle = options.forcePathStyle ?? true;
    this.timeoutMs = options.timeoutMs ?? DEFAULT_TIMEOUT_MS;
    if (options.pageSize !== undefined && !(Number.isInteger(options.pageSize) && options.pageSize > 0)) {
      throw new Error(`S3Storage pageSize must be a positive integer, got ${options.pageSize}`);
    }
    this.pageSize = options.pageSize;
    this.client = new AwsClient({
      accessKeyId: options.accessKeyId,
      secretAccessKey: options.secretAccessKey,
      sessionToken: options.sessionToken,
      service: "s3", // a custom endpoint's host says nothing aws4fetch could guess the service from
      region: options.region ?? "us-east-1",
      retries: 0, // aws4fetch would retry 5xx up to 10 times with backoff, blowing through our timeout; callers decide
    });
    this.fetchImpl = options.fetch ?? ((input, init) => fetch(input, init));
  }

  /**
   * Storage for "s3://bucket/prefix" configured the AWS CLI way, from a plain env record (the runtime entry
   * passes process.env, Deno.env.toObject() or the Worker's env; the core must not touch Node globals):
   * AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, optional AWS_SESSION_TOKEN, AWS_REGION (or AWS_DEFAULT_REGION),
   * AWS_ENDPOINT_URL_S3 or AWS_ENDPOINT_URL (default: AWS S3 in that region).
   */
  static fromUrl(
    url: string,
    env: Record<string, string | undefined>,
    overrides: Partial<S3StorageOptions> = {},
  ): S3Storage {
    const match = /^s3:\/\/([^/]+)\/?(.*)$/.exec(url);
    if (!match) throw new Error(`expected s3://bucket[/prefix], got ${url}`);
    const [, bucket, prefix] = match;
    const accessKeyId = env.AWS_ACCESS_KEY_ID;
    const secretAccessKey = env.AWS_SECRET_ACCESS_KEY;
    const missing = [!accessKeyId && "AWS_ACCESS_KEY_ID", !secretAccessKey && "AWS_SECRET_ACCESS_KEY"].filter(Boolean);
    if (missing.length > 0) throw new Error(`${url} needs ${missing.join(" and ")} in the environment`);
    const customEndpoint = env.AWS_ENDPOINT_URL_S3 || env.AWS_ENDPOINT_URL;
    const region =
      env.AWS_REGION ||
      env.AWS_DEFAULT_REGION ||
      (customEndpoint?.includes(".r2.cloudflarestorage.com") ? "auto" : "us-east-1");
    return new S3Storage({
      endpoint: customEndpoint || `https://s3.${region}.amazonaws.com`,
      bucket,
      prefix,
      region,
      accessKeyId: accessKeyId!,
      secretAccessKey: secretAccessKey!,
      sessionToken: env.AWS_SESSION_TOKEN || undefined,
      // AWS itself prefers virtual-hosted URLs, except that dotted bucket names break its TLS wildcard certificate.
      forcePathStyle: customEndpoint ? true : bucket.includes("."),
      ...overrides,
    });
  }

  get location() {
    return `s3://${this.bucket}/${this.prefix} at ${this.endpoint.origin}${this.endpointPath}`;
  }

  async get(key: string): Promise<Uint8Array | null> {
    const url = this.objectUrl(key);
    if (url === null) return null; // such a key can't be addressed, as in FolderStorage
    return this.send("GET", key, url, {}, async (res) => {
      if (res.status === 404) return this.missingOrThrow("GET", key, res);
      if (!res.ok) throw await this.s3Error("GET", key, res);
      return new Uint8Array(await res.arrayBuffer());
    });
  }

  /**
   * Bytes [start, end) of the object (end exclusive, like Uint8Array.slice), fetched with a Range header so a
   * caller can read an ONNX header or a tokenizer slice without downloading a whole model. Ranges running past
   * the end are clipped; null when there is no such key.
   */
  async getRange(key: string, start: number, end: number): Promise<Uint8Array | null> {
    if (!Number.isSafeInteger(start) || !Number.isSafeInteger(end) || start < 0 || end < start) {
      throw new RangeError(`invalid range [${start}, ${end}) for ${key}`);
    }
    const url = this.objectUrl(key);
    if (url === null) return null;
    if (start === end) {
      // A Range header can't ask for zero bytes; still answer null for a missing key.
      return (await this.head(key)) ? new Uint8Array(0) : null;
    }
    const headers = { range: `bytes=${start}-${end - 1}` }; // HTTP ranges are inclusive
    return this.send("GET", key, url, { headers }, async (res) => {
      if (res.status === 404) return this.missingOrThrow("GET", key, res);
      if (res.status === 416) {
        await discard(res); // InvalidRange: start lies past the end of the object
        return new Uint8Array(0);
      }
      if (!res.ok) throw await this.s3Error("GET", key, res);
      const bytes = new Uint8Array(await res.arrayBuffer());
      // A server that ignores Range answers 200 with everything; slice so callers always get what they asked for.
      return res.status === 206 ? bytes : bytes.slice(start, end);
    });
  }

  async head(key: string): Promise<(ObjectInfo & { etag: string }) | null> {
    const url = this.objectUrl(key);
    if (url === null) return null;
    return this.send("HEAD", key, url, {}, async (res) => {
      await discard(res);
      if (res.status === 404) return null; // HEAD responses carry no body, so no error Code to check
      if (!res.ok) throw await this.s3Error("HEAD", key, res);
      const info: ObjectInfo & { etag: string } = {
        bytes: Number(res.headers.get("content-length") ?? NaN),
        etag: (res.headers.get("etag") ?? "").replace(/^(W\/)?"|"$/g, ""),
      };
      const sha256 = res.headers.get(SHA256_META);
      if (sha256) info.sha256 = sha256;
      return info;
    });
  }

  async put(key: string, bytes: Uint8Array): Promise<void> {
    const url = this.objectUrl(key);
    if (url === null) throw new Error(`invalid S3 key ${JSON.stringify(key)}: empty, "." or ".." segment`);
    const sha256 = await sha256Hex(bytes);
    const headers = {
      "content-type": "application/octet-stream",
      // Signing the payload hash makes S3 reject a body corrupted in transit; the metadata copy feeds head().
      "x-amz-content-sha256": sha256,
      [SHA256_META]: sha256,
    };
    await this.send("PUT", key, url, { headers, body: bytes }, async (res) => {
      if (!res.ok) throw await this.s3Error("PUT", key, res);
      await discard(res);
    });
  }

  async list(prefix = ""): Promise<string[]> {
    const fullPrefix = this.prefix + prefix;
    const what = prefix ? `${prefix}*` : "*";
    const keys: string[] = [];
    let token: string | undefined;
    do {
      const query: [string, string][] = [
        ["list-type", "2"],
        ["prefix", fullPrefix],
      ];
      if (this.pageSize) query.push(["max-keys", String(this.pageSize)]);
      if (token) query.push(["continuation-token", token]);
      // encodeURIComponent, not URLSearchParams: S3 doesn't reliably read '+' as a space.
      const url = `${this.bucketUrl()}?${query.map(([k, v]) => `${k}=${encodeURIComponent(v)}`).join("&")}`;
      const page = await this.send("LIST", what, url, {}, async (res) => {
        if (!res.ok) throw await this.s3Error("LIST", what, res);
        return parseListBucketResult(await res.text());
      });
      for (const k of page.keys) {
        // Keys outside our prefix can't appear, but guard anyway so we never hand out a non-relative key.
        if (k.startsWith(this.prefix)) keys.push(k.slice(this.prefix.length));
      }
      if (page.truncated && !page.nextToken) {
        throw new StorageError(`S3 LIST ${this.describe(what)}: truncated page without NextContinuationToken`, 200);
      }
      token = page.truncated ? page.nextToken : undefined;
    } while (token);
    return keys.sort();
  }

  private bucketUrl(): string {
    const { origin, protocol, host } = this.endpoint;
    if (this.pathStyle) return `${origin}${this.endpointPath}/${encodeURIComponent(this.bucket)}`;
    return `${protocol}//${this.bucket}.${host}${this.endpointPath}`;
  }

  private objectUrl(key: string): string | null {
    const path = encodeKeyPath(this.prefix + key);
    return path === null ? null : `${this.bucketUrl()}/${path}`;
  }

  /** `key` relative to the storage prefix, as callers name it; messages show where it really is. */
  private describe(key: string): string {
    return `s3://${this.bucket}/${this.prefix}${key}`;
  }

  /** Signs and sends one request; `label` is "GET"/"PUT"/... for messages, the method is derived from it. */
  private async send<T>(
    label: "GET" | "HEAD" | "PUT" | "LIST",
    key: string,
    url: string,
    init: { headers?: Record<string, string>; body?: Uint8Array },
    read: (res: Response) => Promise<T>,
  ): Promise<T> {
    const method = label === "LIST" ? "GET" : label;
    const request = await this.client.sign(url, {
      method,
      headers: init.headers,
      body: init.body as Uint8Array<ArrayBuffer> | undefined, // TS 5.9 types: BodyInit excludes SharedArrayBuffer views
    });
    return fetchWithTimeout(`S3 ${label} ${this.describe(key)}`, this.timeoutMs, this.fetchImpl, request, {}, read);
  }

  /** A 404 is a missing key unless S3 says something else is missing (NoSuchBucket is a config error, not "no model"). */
  private async missingOrThrow(label: "GET", key: string, res: Response): Promise<null> {
    const text = await res.text().catch(() => "");
    const code = xmlValue(text, "Code");
    if (code === undefined || code === "NoSuchKey") return null;
    throw this.errorFrom(label, key, res, code, xmlValue(text, "Message"));
  }

  private async s3Error(label: string, key: string, res: Response): Promise<StorageError> {
    const text = await res.text().catch(() => "");
    return this.errorFrom(label, key, res, xmlValue(text, "Code"), xmlValue(text, "Message"));
  }

  private errorFrom(label: string, key: string, res: Response, code?: string, message?: string): StorageError {
    let text = `S3 ${label} ${this.describe(key)}: HTTP ${res.status}`;
    if (code) text += ` ${code}`;
    if (message) text += `: ${message}`;
    if (res.status === 403 && label !== "PUT" && label !== "LIST") {
      text += " (check the credentials; AWS also answers 403 for missing keys when they lack s3:ListBucket)";
    }
    return new StorageError(text, res.status, code);
  }
}

export interface ListPage {
  keys: string[];
  truncated: boolean;
  nextToken?: string;
}

/**
 * Just enough XML for a ListObjectsV2 answer: the <Key> of each <Contents>, <IsTruncated> and
 * <NextContinuationToken>. S3 emits flat, attribute-free elements here, so scanning for tags is sound.
 */
export function parseListBucketResult(xml: string): ListPage {
  if (!xml.includes("<ListBucketResult")) {
    throw new StorageError(`expected a ListBucketResult, got: ${xml.slice(0, 200)}`, 200);
  }
  const keys: string[] = [];
  for (const contents of xmlValues(xml, "Contents", false)) {
    const key = xmlValue(contents, "Key");
    if (key !== undefined) keys.push(key);
  }
  return {
    keys,
    truncated: xmlValue(xml, "IsTruncated") === "true",
    nextToken: xmlValue(xml, "NextContinuationToken") || undefined,
  };
}

/** Inner text of every <tag>...</tag>, entity-decoded unless `decode` is false (for containers scanned again). */
export function xmlValues(xml: string, tag: string, decode = true): string[] {
  const open = `<${tag}>`;
  const close = `</${tag}>`;
  const out: string[] = [];
  let from = 0;
  for (;;) {
    const start = xml.indexOf(open, from);
    if (start < 0) break;
    const end = xml.indexOf(close, start + open.length);
    if (end < 0) break;
    const inner = xml.slice(start + open.length, end);
    out.push(decode ? decodeXmlEntities(inner) : inner);
    from = end + close.length;
  }
  return out;
}

function xmlValue(xml: string, tag: string): string | undefined {
  return xmlValues(xml, tag)[0];
}

const NAMED_ENTITIES: Record<string, string> = { amp: "&", lt: "<", gt: ">", quot: '"', apos: "'" };

/** The five named XML entities plus numeric references (S3 writes e.g. &#x0D; for control characters in keys). */
export function decodeXmlEntities(text: string): string {
  return text.replace(/&(#[xX][0-9a-fA-F]+|#[0-9]+|[a-zA-Z]+);/g, (whole, ref: string) => {
    if (ref[0] === "#") {
      const code = ref[1] === "x" || ref[1] === "X" ? parseInt(ref.slice(2), 16) : parseInt(ref.slice(1), 10);
      return code <= 0x10ffff ? String.fromCodePoint(code) : whole;
    }
    return NAMED_ENTITIES[ref] ?? whole;
  });
}
