import type { ObjectStorage } from "./storage.ts";

/** The part of a Cloudflare R2 bucket binding bert-edge uses (structural, so no workers-types needed). */
export interface R2BucketLike {
  get(key: string): Promise<{ arrayBuffer(): Promise<ArrayBuffer> } | null>;
  list(options?: { prefix?: string; cursor?: string }): Promise<{
    objects: { key: string }[];
    truncated: boolean;
    cursor?: string;
  }>;
}

/** An R2 bucket binding (Workers) as object storage. */
export class R2Storage implements ObjectStorage {
  constructor(
    private readonly bucket: R2BucketLike,
    private readonly name = "MODELS",
  ) {}

  get location() {
    return `R2 binding ${this.name}`;
  }

  async get(key: string): Promise<Uint8Array | null> {
    const object = await this.bucket.get(key);
    return object ? new Uint8Array(await object.arrayBuffer()) : null;
  }

  async list(prefix = ""): Promise<string[]> {
    const keys: string[] = [];
    let cursor: string | undefined;
    do {
      const page = await this.bucket.list({ prefix, cursor });
      keys.push(...page.objects.map((o) => o.key));
      cursor = page.truncated ? page.cursor : undefined;
    } while (cursor);
    return keys.sort();
  }
}
