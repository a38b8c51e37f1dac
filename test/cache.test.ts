import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { cacheKey, canonicalJson, MemoryCache, portableSha256Hex } from "../src/http/cache.ts";
import { sha256Hex } from "../src/runtimes/native-hash.ts";

describe("response cache keys", () => {
  test("canonical JSON sorts keys at every depth and writes what JSON.stringify writes otherwise", () => {
    assert.equal(canonicalJson({ b: 1, a: { d: [3, { z: null, y: "é\n" }], c: true } }), '{"a":{"c":true,"d":[3,{"y":"é\\n","z":null}]},"b":1}');
    assert.equal(canonicalJson({ a: undefined, b: [undefined, 1.5e-7] }), '{"b":[null,1.5e-7]}');
    assert.equal(canonicalJson("x"), '"x"');
    const value = { inputs: ["a", { text: "b", text_pair: "c" }], parameters: { top_k: 2 } };
    assert.deepEqual(JSON.parse(canonicalJson(value)), value);
  });

  test("equal requests give equal keys whatever their key order; any difference changes the key", () => {
    const a = cacheKey({ model: "m", task: "t", inputs: { text: "x", text_pair: "y" }, parameters: { top_k: 1, function_to_apply: "none" } });
    const b = cacheKey({ parameters: { function_to_apply: "none", top_k: 1 }, inputs: { text_pair: "y", text: "x" }, task: "t", model: "m" });
    assert.equal(a, b);
    assert.match(a, /^[0-9a-f]{64}$/);
    assert.notEqual(a, cacheKey({ model: "m", task: "t", inputs: { text: "x", text_pair: "y" }, parameters: { top_k: 2, function_to_apply: "none" } }));
  });

  test("the native and the portable SHA-256 agree, so keys do not depend on the runtime", () => {
    assert.equal(portableSha256Hex(""), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    for (const text of ["", "abc", "é日本😀\u0000", "x".repeat(1000)]) assert.equal(sha256Hex(text), portableSha256Hex(text));
    const parts = { model: "m", inputs: "héllo" };
    assert.equal(cacheKey(parts, sha256Hex), cacheKey(parts));
  });

  test("the memory cache drops the least recently used answers beyond its size", async () => {
    const cache = new MemoryCache(10);
    await cache.put("a", { body: "1234", etag: "a" });
    await cache.put("b", { body: "1234", etag: "b" });
    await cache.get("a"); // a is now the most recently used
    await cache.put("c", { body: "1234", etag: "c" });
    assert.equal(await cache.get("b"), undefined);
    assert.equal((await cache.get("a"))?.etag, "a");
    assert.equal((await cache.get("c"))?.etag, "c");
    await cache.put("huge", { body: "x".repeat(11), etag: "h" });
    assert.equal(await cache.get("huge"), undefined);
  });
});
