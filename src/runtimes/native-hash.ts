import { hash } from "node:crypto";

/**
 * SHA-256 (hex) from node:crypto, for cache keys and ETags on Node and Deno: native code, about half
 * the time of the portable pure-JS one that Workers use (src/http/cache.ts). The one-shot `hash`
 * (Node ≥ 20.12, Deno 2) makes no Hash object, which createHash().update().digest() does.
 */
export const sha256Hex = (text: string) => hash("sha256", text, "hex");
