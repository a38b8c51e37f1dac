import { createHash } from "node:crypto";

/**
 * SHA-256 (hex) from node:crypto, for cache keys and ETags on Node and Deno: native code, about half
 * the time of the portable pure-JS one that Workers use (src/http/cache.ts).
 */
export const sha256Hex = (text: string) => createHash("sha256").update(text).digest("hex");
