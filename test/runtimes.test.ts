/**
 * The same requests get the same answers on workerd (wrangler dev, models in local R2), Deno, and
 * Node serving from a folder and from S3-compatible storage — all on onnxruntime-web, for every head;
 * and bert-wasm on workerd (models packed with --bert-wasm in local R2) equal to bert-wasm on Node.
 */
import assert from "node:assert/strict";
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, relative } from "node:path";
import { after, before, describe, test } from "node:test";
import S3rver from "s3rver";
import { packModel } from "../src/cli/pack.ts";
import { startServer } from "../src/runtimes/node.ts";
import { S3Storage } from "../src/storage/s3.ts";
import { assertDeepClose } from "./support/compare.ts";
import { FIXTURES_DIR } from "./support/fixtures.ts";
import { freePort, runCommand, startProcess } from "./support/processes.ts";

/** One request per head (and per TEI/OpenAI route). */
const REQUESTS: [path: string, body: unknown][] = [
  ["/models/tiny-bert-mrpc", { inputs: { text: "The firm posted a profit.", text_pair: "The company was profitable." } }],
  ["/models/tiny-bert-sentiment", { inputs: ["I loved it.", "Terrible."], parameters: { top_k: 2 } }],
  ["/models/tiny-distilbert-sentiment", { inputs: "A fine film." }],
  ["/models/tiny-bert-regression", { inputs: "How similar?" }],
  ["/models/tiny-bert-multilabel", { inputs: "You are a spammer." }],
  ["/models/tiny-bert-ner", { inputs: "Angela Merkel met Tim Cook at Apple in Berlin.", parameters: { aggregation_strategy: "simple" } }],
  ["/models/tiny-bert-qa", { inputs: { question: "Where is the tower?", context: "The Eiffel Tower is a wrought-iron lattice tower in Paris, France." } }],
  ["/models/tiny-bert-swag", { inputs: { prompt: "She opened the fridge and", choices: ["took out the milk.", "flew to the moon.", "sang a song."] } }],
  ["/models/tiny-bert-mlm", { inputs: "The capital of France is [MASK]." }],
  ["/models/tiny-bert-embed", { inputs: "hello world" }],
  ["/models/tiny-bert-nli", { inputs: "The new phone has a great camera.", parameters: { candidate_labels: ["technology", "sports"] } }],
  ["/embed", { inputs: ["hello world"], model: "tiny-bert-embed" }],
  ["/rerank", { query: "What is the capital of France?", texts: ["Paris is the capital.", "Bananas are yellow."], model: "tiny-bert-reranker" }],
];

/** Every fixture file a server needs (the int8 graphs, not the fp32 ones), as storage keys. */
function fixtureFiles(): { key: string; file: string }[] {
  return readdirSync(FIXTURES_DIR, { recursive: true, withFileTypes: true })
    .filter((e) => e.isFile() && !/model\.onnx$|reference\.json$|README/.test(e.name))
    .map((e) => {
      const file = join(e.parentPath ?? e.path, e.name);
      return { key: relative(FIXTURES_DIR, file), file };
    });
}

/** Every file under a folder, as storage keys. */
function filesUnder(dir: string): { key: string; file: string }[] {
  return readdirSync(dir, { recursive: true, withFileTypes: true })
    .filter((e) => e.isFile())
    .map((e) => {
      const file = join(e.parentPath ?? e.path, e.name);
      return { key: relative(dir, file), file };
    });
}

async function answers(base: string) {
  const out = [];
  for (const [path, body] of REQUESTS) {
    const res = await fetch(base + path, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(body) });
    out.push({ path, status: res.status, body: await res.json() });
  }
  return out;
}

describe("the same answers on workerd, Deno and Node", { timeout: 300_000 }, () => {
  const tmp = mkdtempSync(join(tmpdir(), "bert-edge-runtimes-"));
  const stops: (() => Promise<unknown>)[] = [];
  let reference: Awaited<ReturnType<typeof answers>>;

  before(async () => {
    const node = await startServer({ models: FIXTURES_DIR, port: 0, backend: "wasm" });
    stops.push(node.close);
    reference = await answers(`http://127.0.0.1:${node.port}`);
  });
  after(async () => {
    for (const stop of stops.reverse()) await stop();
    rmSync(tmp, { recursive: true, force: true });
  });

  test("Node, from a folder: every head answers 200", () => {
    for (const r of reference) assert.equal(r.status, 200, `${r.path}: ${JSON.stringify(r.body)}`);
  });

  test("Node, from S3-compatible storage (s3rver)", async () => {
    const s3port = await freePort();
    const s3 = new S3rver({ port: s3port, address: "127.0.0.1", silent: true, directory: join(tmp, "s3"), configureBuckets: [{ name: "models" }] } as never);
    await s3.run();
    stops.push(() => s3.close());
    const env = { AWS_ACCESS_KEY_ID: "S3RVER", AWS_SECRET_ACCESS_KEY: "S3RVER", AWS_ENDPOINT_URL: `http://127.0.0.1:${s3port}`, AWS_REGION: "us-east-1" };
    const storage = S3Storage.fromUrl("s3://models/fixtures", env);
    for (const { key, file } of fixtureFiles()) await storage.put(key, readFileSync(file));
    Object.assign(process.env, env);
    const node = await startServer({ models: "s3://models/fixtures", port: 0, backend: "wasm" });
    stops.push(node.close);
    assertDeepClose(await answers(`http://127.0.0.1:${node.port}`), reference, 1e-9);
  });

  test("Deno", async () => {
    const port = await freePort();
    const deno = await startProcess("npx", ["deno", "run", "-A", "src/runtimes/deno.ts"], {
      env: { MODELS: FIXTURES_DIR, PORT: String(port), BACKEND: "wasm" },
      url: `http://127.0.0.1:${port}/health`,
    });
    stops.push(deno.stop);
    assertDeepClose(await answers(`http://127.0.0.1:${port}`), reference, 1e-9);
  });

  test("bert-wasm: the same answers on Deno as on Node", async () => {
    const node = await startServer({ models: FIXTURES_DIR, port: 0, backend: "bert-wasm" });
    stops.push(node.close);
    const onNode = await answers(`http://127.0.0.1:${node.port}`);
    for (const r of onNode) assert.equal(r.status, 200, `${r.path}: ${JSON.stringify(r.body)}`);
    const port = await freePort();
    const deno = await startProcess("npx", ["deno", "run", "-A", "src/runtimes/deno.ts"], {
      env: { MODELS: FIXTURES_DIR, PORT: String(port), BACKEND: "bert-wasm" },
      url: `http://127.0.0.1:${port}/health`,
    });
    stops.push(deno.stop);
    assertDeepClose(await answers(`http://127.0.0.1:${port}`), onNode, 1e-9);
  });

  test("workerd (wrangler dev, models in local R2)", async () => {
    const state = join(tmp, "wrangler-state");
    const env = { WRANGLER_SEND_METRICS: "false", CI: "true", XDG_CONFIG_HOME: join(tmp, "xdg") };
    const pairs = join(tmp, "r2-pairs.json");
    writeFileSync(pairs, JSON.stringify(fixtureFiles()));
    await runCommand("npx", ["wrangler", "r2", "bulk", "put", "bert-edge-models", "--filename", pairs, "--local", "--persist-to", state], env);
    const port = await freePort();
    const dev = await startProcess("npx", ["wrangler", "dev", "--port", String(port), "--ip", "127.0.0.1", "--persist-to", state, "--var", "BACKEND:wasm"], {
      env,
      url: `http://127.0.0.1:${port}/health`,
      timeoutMs: 120_000,
    });
    stops.push(dev.stop);
    // Workers serve a plain folder's graphs as they are (the first-token rewrite at load needs
    // protobufjs code generation; only `bert-edge pack` prunes for them): Node's answers with it off.
    const node = await startServer({ models: FIXTURES_DIR, port: 0, backend: "wasm", firstToken: false });
    stops.push(node.close);
    const asExported = await answers(`http://127.0.0.1:${node.port}`);
    assertDeepClose(await answers(`http://127.0.0.1:${port}`), asExported, 1e-9);

    // The answers went to caches.default through waitUntil: a repeat is a HIT.
    const [path, body] = REQUESTS[0];
    let cache: string | null = null;
    for (let attempt = 0; attempt < 20 && cache !== "HIT"; attempt++) {
      const res = await fetch(`http://127.0.0.1:${port}${path}`, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(body) });
      cache = res.headers.get("x-cache");
      assertDeepClose(await res.json(), asExported[0].body, 1e-9);
    }
    assert.equal(cache, "HIT");
  });

  test("bert-wasm on workerd (models packed with --bert-wasm, local R2) answers as bert-wasm on Node", async () => {
    const packed = join(tmp, "packed");
    const fixtures = readdirSync(FIXTURES_DIR, { withFileTypes: true }).filter((d) => d.isDirectory()).map((d) => d.name);
    for (const name of fixtures) {
      const { manifest } = await packModel(join(FIXTURES_DIR, name), packed, { id: name, bertWasm: true, verifyOn: ["wasm"] });
      assert.equal(manifest.bert_wasm, "bert-wasm/model.bin");
      assert.ok(manifest.files.some((f) => f.path === "bert-wasm/model.bin" && /^[0-9a-f]{64}$/.test(f.sha256)));
    }
    const node = await startServer({ models: packed, port: 0, backend: "bert-wasm" });
    stops.push(node.close);
    for (const m of node.models) assert.equal(m.file, "bert-wasm/model.bin", `${m.id} served from the bert-wasm file`);
    const onNode = await answers(`http://127.0.0.1:${node.port}`);
    for (const r of onNode) assert.equal(r.status, 200, `${r.path}: ${JSON.stringify(r.body)}`);

    const state = join(tmp, "wrangler-state-bert-wasm");
    const env = { WRANGLER_SEND_METRICS: "false", CI: "true", XDG_CONFIG_HOME: join(tmp, "xdg") };
    const pairs = join(tmp, "r2-pairs-bert-wasm.json");
    writeFileSync(pairs, JSON.stringify(filesUnder(packed)));
    await runCommand("npx", ["wrangler", "r2", "bulk", "put", "bert-edge-models", "--filename", pairs, "--local", "--persist-to", state], env);
    const port = await freePort();
    const dev = await startProcess("npx", ["wrangler", "dev", "--port", String(port), "--ip", "127.0.0.1", "--persist-to", state, "--var", "BACKEND:bert-wasm"], {
      env,
      url: `http://127.0.0.1:${port}/health`,
      timeoutMs: 120_000,
    });
    stops.push(dev.stop);
    const res = await fetch(`http://127.0.0.1:${port}/models`);
    for (const m of (await res.json()) as { id: string; file: string }[]) assert.equal(m.file, "bert-wasm/model.bin", m.id);
    assertDeepClose(await answers(`http://127.0.0.1:${port}`), onNode, 1e-5);
  });
});
