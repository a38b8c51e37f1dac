import assert from "node:assert/strict";
import { describe, test } from "node:test";
import type { Backend, Session } from "../src/engine/backend.ts";
import { sha256Hex } from "../src/hash.ts";
import { ModelRegistry } from "../src/engine/registry.ts";
import { createApp } from "../src/http/app.ts";
import { createBackend } from "../src/runtimes/backends.ts";
import { startServer } from "../src/runtimes/node.ts";
import { FIXTURES_DIR } from "./support/fixtures.ts";
import { MemoryStorage } from "./support/memory-storage.ts";

/** Counts sessions created and released around a real backend. */
async function countingBackend() {
  const real = await createBackend("native");
  const counts = { created: 0, released: 0, runs: 0 };
  const backend: Backend = {
    name: "counting",
    async createSession(model, data) {
      counts.created++;
      const session = await real.createSession(model, data);
      return {
        inputNames: session.inputNames,
        outputNames: session.outputNames,
        run: (batch) => (counts.runs++, session.run(batch)),
        release: () => (counts.released++, session.release()),
      } satisfies Session;
    },
  };
  return { backend, counts };
}

/** A packed version of a fixture: its files under `<id>/<version>/`, a manifest and the alias. */
async function packed(storage: MemoryStorage, fixture: string, id: string, version: string) {
  storage.addFolder(`${FIXTURES_DIR}/${fixture}`, `${id}/${version}`);
  storage.objects.delete(`${id}/${version}/onnx/model.onnx`);
  const files = [];
  for (const [key, bytes] of storage.objects) {
    if (!key.startsWith(`${id}/${version}/`)) continue;
    files.push({ path: key.slice(id.length + version.length + 2), sha256: await sha256Hex(bytes), bytes: bytes.byteLength });
  }
  const manifest = { id, version, task: "text-classification", labels: ["negative", "neutral", "positive"], max_length: 512, quantization: "int8-dynamic", graph: "onnx/model_quantized.onnx", files };
  storage.objects.set(`${id}/${version}/manifest.json`, new TextEncoder().encode(JSON.stringify(manifest)));
  storage.objects.set(`${id}/current.json`, new TextEncoder().encode(JSON.stringify({ version })));
}

const post = (app: ReturnType<typeof createApp>, path: string, body: unknown, headers: Record<string, string> = {}) =>
  app.request(path, { method: "POST", headers: { "content-type": "application/json", ...headers }, body: JSON.stringify(body) });

describe("lazy loading", () => {
  test("20 concurrent cold requests cause one load", async () => {
    const { backend, counts } = await countingBackend();
    const storage = new MemoryStorage().addFolder(`${FIXTURES_DIR}/tiny-bert-sentiment`, "acme/sentiment");
    const app = createApp({ registry: new ModelRegistry(storage, backend), cache: false });
    const responses = await Promise.all(Array.from({ length: 20 }, (_, i) => post(app, "/models/acme/sentiment", { inputs: `text ${i}` })));
    assert.deepEqual(responses.map((r) => r.status), Array(20).fill(200));
    assert.equal(counts.created, 1);
  });

  test("a corrupted object gives a clear error, poisons nothing, and loads once fixed", async () => {
    const { backend, counts } = await countingBackend();
    const storage = new MemoryStorage();
    await packed(storage, "tiny-bert-sentiment", "acme/sentiment", "v1");
    const key = "acme/sentiment/v1/onnx/model_quantized.onnx";
    const good = storage.objects.get(key)!;
    const app = createApp({ registry: new ModelRegistry(storage, backend), cache: false });

    storage.objects.set(key, good.subarray(0, good.length - 100)); // truncated
    let res = await post(app, "/models/acme/sentiment", { inputs: "hi" });
    assert.equal(res.status, 500);
    let body = (await res.json()) as { error: string; error_type: string };
    assert.equal(body.error_type, "model_load_failed");
    assert.equal(res.headers.get("cache-control"), "no-store");
    assert.equal(res.headers.get("etag"), null);
    assert.match(body.error, /onnx\/model_quantized\.onnx is \d+ bytes, the manifest says \d+/);

    const flipped = good.slice();
    flipped[1000] ^= 0xff; // same size, different bytes
    storage.objects.set(key, flipped);
    res = await post(app, "/models/acme/sentiment", { inputs: "hi" });
    body = (await res.json()) as { error: string; error_type: string };
    assert.equal(res.status, 500);
    assert.match(body.error, /sha256 .* the manifest says/);
    assert.equal(counts.created, 0, "a file that fails verification never reaches the backend");

    storage.objects.set(key, good);
    res = await post(app, "/models/acme/sentiment", { inputs: "hi" });
    assert.equal(res.status, 200);
    assert.equal(counts.created, 1);
  });

  test("versions: the alias picks the current one, id@version pins one", async () => {
    const { backend } = await countingBackend();
    const storage = new MemoryStorage();
    await packed(storage, "tiny-bert-sentiment", "acme/sentiment", "v1");
    await packed(storage, "tiny-bert-sentiment", "acme/sentiment", "v2");
    const registry = new ModelRegistry(storage, backend);
    const app = createApp({ registry, cache: false });
    const models = (await (await app.request("/models")).json()) as { id: string; version: string }[];
    assert.deepEqual(models.map((m) => [m.id, m.version]), [["acme/sentiment", "v2"]]);
    assert.equal((await post(app, "/models/acme/sentiment@v1", { inputs: "hi" })).status, 200);
    assert.equal((await registry.info("acme/sentiment@v1")).version, "v1");
    assert.equal((await post(app, "/models/acme/sentiment@v9", { inputs: "hi" })).status, 404);
  });

  test("POST /models/:id/load warms a model", async () => {
    const { backend, counts } = await countingBackend();
    const storage = new MemoryStorage().addFolder(`${FIXTURES_DIR}/tiny-bert-ner`, "ner");
    const app = createApp({ registry: new ModelRegistry(storage, backend) });
    const res = await app.request("/models/ner/load", { method: "POST" });
    assert.equal(res.status, 200);
    assert.equal(((await res.json()) as { loaded: boolean }).loaded, true);
    assert.equal(counts.created, 1);
  });

  test("models are evicted least-recently-used under the memory budget", async () => {
    const { backend, counts } = await countingBackend();
    const storage = new MemoryStorage()
      .addFolder(`${FIXTURES_DIR}/tiny-bert-sentiment`, "a")
      .addFolder(`${FIXTURES_DIR}/tiny-bert-mrpc`, "b")
      .addFolder(`${FIXTURES_DIR}/tiny-bert-regression`, "c");
    // Each int8 fixture (one .onnx) costs about 3.5 × 1.06 MB: an 8 MB budget holds two.
    const registry = new ModelRegistry(storage, backend, { memoryBudget: 8e6 });
    for (const id of ["a", "b", "a", "c"]) await registry.get(id);
    const loaded = Object.fromEntries((await registry.list()).map((m) => [m.id, m.loaded]));
    assert.deepEqual(loaded, { a: true, b: false, c: true });
    assert.equal(counts.released, 1);
  });
});

describe("response cache", () => {
  test("a repeated request is a HIT and runs no model; If-None-Match gives 304", async () => {
    const { backend, counts } = await countingBackend();
    const storage = new MemoryStorage().addFolder(`${FIXTURES_DIR}/tiny-bert-sentiment`, "s");
    const app = createApp({ registry: new ModelRegistry(storage, backend) });
    const first = await post(app, "/models/s", { inputs: "A fine day.", parameters: { top_k: 2 } });
    assert.equal(first.headers.get("x-cache"), "MISS");
    const etag = first.headers.get("etag")!;
    assert.match(etag, /^"[0-9a-f]{32}"$/);
    assert.equal(first.headers.get("cache-control"), "max-age=3600");
    // Same request with keys in another order: same cache entry.
    const second = await app.request("/models/s", {
      method: "POST",
      body: '{"parameters":{"top_k":2},"inputs":"A fine day."}',
    });
    assert.equal(second.headers.get("x-cache"), "HIT");
    assert.equal(await second.text(), await first.text());
    assert.equal(counts.runs, 1);
    const notModified = await post(app, "/models/s", { inputs: "A fine day.", parameters: { top_k: 2 } }, { "if-none-match": etag });
    assert.equal(notModified.status, 304);
    const other = await post(app, "/models/s", { inputs: "A fine day.", parameters: { top_k: 1 } });
    assert.equal(other.headers.get("x-cache"), "MISS");
    assert.equal(counts.runs, 2);
  });

  test("`bert-edge serve --response-cache off`: a repeat is computed again (MISS), with its ETag still given", async () => {
    const server = await startServer({ models: FIXTURES_DIR, port: 0, backend: "wasm", responseCache: false });
    try {
      const ask = () =>
        fetch(`http://127.0.0.1:${server.port}/models/tiny-bert-sentiment`, { method: "POST", body: JSON.stringify({ inputs: "A fine day." }) });
      const [first, second] = [await ask(), await ask()];
      assert.deepEqual([first.headers.get("x-cache"), second.headers.get("x-cache")], ["MISS", "MISS"]);
      assert.match(second.headers.get("server-timing")!, /run;dur=/);
      assert.equal(second.headers.get("etag"), first.headers.get("etag"));
      assert.equal(await second.text(), await first.text());
    } finally {
      await server.close();
    }
  });

  test("identical inputs inside one batch are computed once", async () => {
    const { backend } = await countingBackend();
    const storage = new MemoryStorage().addFolder(`${FIXTURES_DIR}/tiny-bert-sentiment`, "s");
    const registry = new ModelRegistry(storage, backend);
    const model = await registry.get("s");
    const rows: number[] = [];
    const run = model.run;
    Object.assign(model, { run: (batch: Parameters<typeof run>[0]) => (rows.push(batch.dims[0]), run(batch)) });
    const app = createApp({ registry, cache: false });
    const res = await post(app, "/models/s", { inputs: ["good", "bad", "good", "good"] });
    const out = (await res.json()) as unknown[];
    assert.equal(out.length, 4);
    assert.deepEqual(out[0], out[2]);
    assert.deepEqual(out[0], out[3]);
    assert.notDeepEqual(out[0], out[1]);
    assert.deepEqual(rows, [2]);
  });
});
