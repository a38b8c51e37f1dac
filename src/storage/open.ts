import { FolderStorage } from "./fs.ts";
import { HttpStorage } from "./http.ts";
import { S3Storage } from "./s3.ts";
import type { ObjectStorage } from "./storage.ts";

/**
 * Storage named by one string, for the Node and Deno entry points: `s3://bucket/prefix`
 * (credentials from AWS_* variables), an `http(s)://` base URL (with an index.json), or a folder.
 */
export function openStorage(location: string, env: Record<string, string | undefined>): ObjectStorage {
  if (location.startsWith("s3://")) return S3Storage.fromUrl(location, env);
  if (/^https?:\/\//.test(location)) return new HttpStorage(location, { token: env.MODELS_TOKEN });
  return new FolderStorage(location);
}
