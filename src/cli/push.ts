/**
 * `bert-edge push <packed>/<id>/<version> <dest>`: uploads one packed version to where the service
 * reads models from, resumably and in an order that never exposes half a version:
 *
 *   1. every file of the manifest (the big external-data file included),
 *   2. `<id>/<version>/manifest.json` — the registry only considers versions that have one,
 *   3. `<id>/current.json` — the alias, so the new version is served only once it is complete.
 *
 * Each object is skipped when the destination already holds the same bytes, and read back after
 * upload. "Same bytes" means same size and:
 *  - folder: sha256 of the stored file;
 *  - S3 / R2 API: the sha256 that S3Storage.put records in the object's `x-amz-meta-sha256`
 *    metadata, or else (objects uploaded by other tools) an ETag equal to the MD5 of the content,
 *    which holds for single-part, non-KMS uploads; multipart ETags ("…-N") never match, so such
 *    objects are uploaded again, which is safe;
 *  - wrangler's local R2 (`--local`): sha256 of the object read back with `wrangler r2 object get`.
 *
 * Destinations: a folder, `s3://bucket/prefix` (AWS_* variables, see S3Storage.fromUrl),
 * `r2://bucket/prefix` (R2_ACCOUNT_ID, R2_ACCESS_KEY_ID, R2_SECRET_ACCESS_KEY: R2's S3 API), or
 * `r2://bucket/prefix --local [--persist-to DIR]` (wrangler's local R2, as `wrangler dev` sees it).
 */
import { execFile } from "node:child_process";
import { createHash } from "node:crypto";
import { mkdir, mkdtemp, open, readFile, rename, rm, stat, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { dirname, join, resolve, sep } from "node:path";
import { parseArgs } from "node:util";
import { S3Storage } from "../storage/s3.ts";
import type { PackedManifest } from "./pack.ts";
import { mib } from "./quantize.ts";

/** What a destination knows about a stored object. */
export interface Stored {
  bytes: number;
  sha256?: string;
  etag?: string;
}

export interface Destination {
  readonly location: string;
  head(key: string): Promise<Stored | null>;
  /** Stores `bytes` under `key`, reporting bytes written as it goes. */
  put(key: string, bytes: Uint8Array, progress: (written: number) => void): Promise<void>;
}

const sha256 = (bytes: Uint8Array) => createHash("sha256").update(bytes).digest("hex");
const md5 = (bytes: Uint8Array) => createHash("md5").update(bytes).digest("hex");

function sameContent(stored: Stored | null, bytes: Uint8Array, hash: string): boolean {
  if (!stored || stored.bytes !== bytes.byteLength) return false;
  if (stored.sha256) return stored.sha256 === hash;
  return stored.etag !== undefined && stored.etag === md5(bytes);
}

/** A local folder (or a mounted bucket): files are written beside their key and renamed into place. */
export class FolderDestination implements Destination {
  private static readonly CHUNK = 4 * 2 ** 20;
  readonly root: string;
  constructor(root: string) {
    this.root = resolve(root);
  }
  get location() {
    return `folder ${this.root}`;
  }
  private path(key: string): string {
    const path = resolve(this.root, key);
    if (!path.startsWith(this.root + sep)) throw new Error(`key ${key} escapes ${this.root}`);
    return path;
  }
  async head(key: string): Promise<Stored | null> {
    try {
      const bytes = await readFile(this.path(key));
      return { bytes: bytes.byteLength, sha256: sha256(bytes) };
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === "ENOENT") return null;
      throw err;
    }
  }
  async put(key: string, bytes: Uint8Array, progress: (written: number) => void): Promise<void> {
    const path = this.path(key);
    await mkdir(dirname(path), { recursive: true });
    const partial = `${path}.partial-${process.pid}`;
    const file = await open(partial, "w");
    try {
      for (let at = 0; at < bytes.byteLength; at += FolderDestination.CHUNK) {
        const chunk = bytes.subarray(at, at + FolderDestination.CHUNK);
        await file.write(chunk);
        progress(at + chunk.byteLength);
      }
      await file.sync();
    } finally {
      await file.close();
    }
    await rename(partial, path);
  }
}

/** S3 or R2's S3 API through S3Storage (single PUT per object; S3 and R2 take up to 5 GiB that way). */
export class S3Destination implements Destination {
  constructor(private readonly storage: S3Storage) {}
  get location() {
    return this.storage.location;
  }
  head(key: string): Promise<Stored | null> {
    return this.storage.head(key);
  }
  async put(key: string, bytes: Uint8Array, progress: (written: number) => void): Promise<void> {
    await this.storage.put(key, bytes);
    progress(bytes.byteLength);
  }
}

/** Wrangler's local R2 simulation, through `wrangler r2 object get|put --local`: one process per object. */
export class WranglerLocalDestination implements Destination {
  constructor(
    private readonly bucket: string,
    private readonly prefix: string,
    private readonly persistTo?: string,
  ) {}
  get location() {
    return `local R2 bucket ${this.bucket}${this.persistTo ? ` in ${this.persistTo}` : ""}`;
  }
  private wrangler(args: string[]): Promise<Buffer> {
    const full = ["wrangler", "r2", "object", ...args, "--local", ...(this.persistTo ? ["--persist-to", this.persistTo] : [])];
    return new Promise((ok, fail) => {
      execFile("npx", full, { encoding: "buffer", maxBuffer: 2 ** 31 - 1, env: { ...process.env, WRANGLER_SEND_METRICS: "false" } }, (err, stdout, stderr) => {
        if (err) fail(Object.assign(err, { stderr: stderr.toString() }));
        else ok(stdout);
      });
    });
  }
  private objectPath(key: string): string {
    return `${this.bucket}/${this.prefix ? `${this.prefix}/` : ""}${key}`;
  }
  async head(key: string): Promise<Stored | null> {
    let bytes: Buffer;
    try {
      bytes = await this.wrangler(["get", this.objectPath(key), "--pipe"]);
    } catch (err) {
      if (/does not exist/i.test((err as { stderr?: string }).stderr ?? "")) return null;
      throw new Error(`wrangler r2 object get ${this.objectPath(key)} failed: ${(err as { stderr?: string }).stderr || (err as Error).message}`);
    }
    return { bytes: bytes.byteLength, sha256: sha256(bytes) };
  }
  async put(key: string, bytes: Uint8Array, progress: (written: number) => void): Promise<void> {
    const dir = await mkdtemp(join(tmpdir(), "bert-edge-push-"));
    try {
      const file = join(dir, "object");
      await writeFile(file, bytes);
      await this.wrangler(["put", this.objectPath(key), "--file", file]).catch((err) => {
        throw new Error(`wrangler r2 object put ${this.objectPath(key)} failed: ${err.stderr || err.message}`);
      });
      progress(bytes.byteLength);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  }
}

export interface DestinationOptions {
  local?: boolean;
  persistTo?: string;
  env?: Record<string, string | undefined>;
}

/** Generous per-request limit: one PUT carries a whole external-data file. */
const UPLOAD_TIMEOUT_MS = 15 * 60_000;

export function openDestination(dest: string, options: DestinationOptions = {}): Destination {
  const env = options.env ?? process.env;
  if (dest.startsWith("s3://")) return new S3Destination(S3Storage.fromUrl(dest, env, { timeoutMs: UPLOAD_TIMEOUT_MS }));
  const r2 = /^r2:\/\/([^/]+)\/?(.*)$/.exec(dest);
  if (r2) {
    const [, bucket, rawPrefix] = r2;
    const prefix = rawPrefix.replace(/\/+$/, "");
    if (options.local) return new WranglerLocalDestination(bucket, prefix, options.persistTo);
    const missing = ["R2_ACCOUNT_ID", "R2_ACCESS_KEY_ID", "R2_SECRET_ACCESS_KEY"].filter((k) => !env[k]);
    if (missing.length > 0) throw new Error(`${dest} needs ${missing.join(", ")} in the environment (or --local for wrangler's local R2)`);
    return new S3Destination(
      new S3Storage({
        endpoint: `https://${env.R2_ACCOUNT_ID}.r2.cloudflarestorage.com`,
        bucket,
        prefix,
        region: "auto",
        accessKeyId: env.R2_ACCESS_KEY_ID!,
        secretAccessKey: env.R2_SECRET_ACCESS_KEY!,
        forcePathStyle: true,
        timeoutMs: UPLOAD_TIMEOUT_MS,
      }),
    );
  }
  if (/^[a-z][a-z0-9+.-]*:\/\//i.test(dest)) throw new Error(`unsupported destination ${dest} (a folder, s3://bucket/prefix or r2://bucket/prefix)`);
  if (options.local) throw new Error("--local only applies to r2:// destinations");
  return new FolderDestination(dest);
}

/** Bytes done / total on stderr: redrawn in place on a terminal, one line per object otherwise. */
class Progress {
  private done = 0;
  private readonly tty: boolean;
  constructor(
    private readonly total: number,
    private readonly out: NodeJS.WriteStream | null,
  ) {
    this.tty = Boolean(out?.isTTY);
  }
  update(label: string, fileDone: number, fileTotal: number, final = false) {
    if (!this.out || (!this.tty && !final)) return;
    const overall = this.done + fileDone;
    const width = 24;
    const filled = this.total ? Math.round((width * overall) / this.total) : width;
    const line = `[${"#".repeat(filled)}${"-".repeat(width - filled)}] ${mib(overall)} / ${mib(this.total)}  ${label} ${mib(fileDone)} / ${mib(fileTotal)}`;
    this.out.write(this.tty ? `\r\x1b[2K${line}${final ? "\n" : ""}` : `${line}\n`);
  }
  finish(fileBytes: number) {
    this.done += fileBytes;
  }
}

export interface PushResult {
  location: string;
  id: string;
  version: string;
  /** Keys written, in order. */
  uploaded: string[];
  /** Keys that already held the same bytes. */
  skipped: string[];
  uploadedBytes: number;
}

export interface PushOptions {
  /** Progress bar stream (default process.stderr; null for none). */
  progress?: NodeJS.WriteStream | null;
}

/** Pushes `<packed>/<id>/<version>` (the folder holding manifest.json) to `dest`. */
export async function pushVersion(versionDir: string, dest: Destination, options: PushOptions = {}): Promise<PushResult> {
  const manifestBytes = new Uint8Array(await readFile(join(versionDir, "manifest.json")).catch(() => {
    throw new Error(`${versionDir} has no manifest.json (push wants <packed-dir>/<id>/<version>, as written by bert-edge pack)`);
  }));
  const manifest = JSON.parse(new TextDecoder().decode(manifestBytes)) as PackedManifest;
  const base = `${manifest.id}/${manifest.version}`;

  // A corrupted local copy must not be published under the manifest's checksums.
  const objects: { key: string; bytes: Uint8Array; hash: string }[] = [];
  for (const f of manifest.files) {
    const bytes = new Uint8Array(await readFile(join(versionDir, f.path)));
    const hash = sha256(bytes);
    if (bytes.byteLength !== f.bytes || hash !== f.sha256) throw new Error(`${join(versionDir, f.path)} does not match manifest.json (changed after packing?)`);
    objects.push({ key: `${base}/${f.path}`, bytes, hash });
  }
  objects.push({ key: `${base}/manifest.json`, bytes: manifestBytes, hash: sha256(manifestBytes) });
  const alias = new TextEncoder().encode(`${JSON.stringify({ version: manifest.version })}\n`);
  objects.push({ key: `${manifest.id}/current.json`, bytes: alias, hash: sha256(alias) });

  const progress = new Progress(
    objects.reduce((s, o) => s + o.bytes.byteLength, 0),
    options.progress === undefined ? process.stderr : options.progress,
  );
  const result: PushResult = { location: dest.location, id: manifest.id, version: manifest.version, uploaded: [], skipped: [], uploadedBytes: 0 };
  for (const { key, bytes, hash } of objects) {
    const name = key.slice(manifest.id.length + 1);
    if (sameContent(await dest.head(key), bytes, hash)) {
      result.skipped.push(key);
      progress.update(`${name} (already there)`, bytes.byteLength, bytes.byteLength, true);
    } else {
      await dest.put(key, bytes, (written) => progress.update(name, written, bytes.byteLength));
      const stored = await dest.head(key);
      if (!stored || stored.bytes !== bytes.byteLength || (stored.sha256 !== undefined && stored.sha256 !== hash)) {
        throw new Error(`${key} reads back as ${stored ? `${stored.bytes} bytes` : "missing"} after upload to ${dest.location}; expected ${bytes.byteLength} bytes, sha256 ${hash.slice(0, 12)}…`);
      }
      result.uploaded.push(key);
      result.uploadedBytes += bytes.byteLength;
      progress.update(name, bytes.byteLength, bytes.byteLength, true);
    }
    progress.finish(bytes.byteLength);
  }
  return result;
}

const USAGE = "usage: bert-edge push <packed-dir>/<id>/<version> <folder | s3://bucket/prefix | r2://bucket/prefix> [--local [--persist-to DIR]]";

export async function pushCommand(argv: string[]): Promise<void> {
  const { positionals, values } = parseArgs({
    args: argv,
    allowPositionals: true,
    options: {
      local: { type: "boolean", default: false },
      "persist-to": { type: "string" },
      help: { type: "boolean", short: "h" },
    },
  });
  if (values.help) {
    console.log(USAGE);
    return;
  }
  if (positionals.length !== 2) throw new Error(USAGE);
  const [versionDir, dest] = positionals;
  if (!(await stat(versionDir).catch(() => null))?.isDirectory()) throw new Error(`${versionDir} is not a folder`);
  const destination = openDestination(dest, { local: values.local, persistTo: values["persist-to"] });
  const r = await pushVersion(versionDir, destination);
  console.error(
    `bert-edge: pushed to ${r.location}: ${r.uploaded.length} objects (${mib(r.uploadedBytes)}) uploaded, ${r.skipped.length} already there; ${r.id}@${r.version} is current`,
  );
}
