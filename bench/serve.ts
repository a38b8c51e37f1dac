/**
 * A benchmark server in its own process: bert-edge's Hono app (as `bert-edge serve` builds it, with
 * the response cache off so every request runs the model) or the baseline, an @xenova/transformers
 * 2.17.2 text-classification pipeline behind the same kind of Hono app.
 *
 *   tsx bench/serve.ts --impl bert-edge|xenova|raw|hono-raw --backend wasm|native|bert-wasm --models DIR [--batching on|off] [--threads N] [--spin on|off] [--queue JSON] [--model ID]
 *
 * `--impl raw --backend B --model ID` is the raw floor: a bare node:http server whose every request runs
 * the backend's engine, set up as bert-edge's backend sets it up (threads, spinning), on one fixed
 * 128-token input without bert-edge around it (bench/lib.ts rawEngine), then answers a fixed
 * classification. What a bert-edge server spends beyond it is bert-edge's own: routing, validation,
 * tokenizing, queueing, decoding, with the same run evicting the same caches. `--impl hono-raw` (the
 * Hono floor) is the same run and answer behind a Hono app on @hono/node-server, the request's JSON
 * read as bert-edge reads it: what the framework alone costs beyond a bare server.
 *
 * Prints `LISTENING <port>` once it answers; `GET /__bench` gives its wasm heap, and bert-edge's queue
 * counters per loaded model (`GET /__bench?model=ID`); a raw floor answers every request with a run.
 */
import { serve } from "@hono/node-server";
import { Hono } from "hono";
import { parseArgs } from "node:util";
import { watchWasmMemory } from "./lib.ts";

const wasmHeap = watchWasmMemory();
const { values } = parseArgs({
  options: {
    impl: { type: "string", default: "bert-edge" },
    backend: { type: "string", default: "wasm" },
    models: { type: "string" },
    batching: { type: "string", default: "on" },
    threads: { type: "string" },
    queue: { type: "string", default: "{}" },
    spin: { type: "string", default: "off" },
    model: { type: "string" },
  },
});
const models = values.models!;
let queueStats: (id: string) => Promise<{ stats: object; waits?: object } | undefined> = async () => undefined;

async function bertEdge() {
  const { createBackend } = await import("../src/runtimes/backends.ts");
  const { ModelRegistry } = await import("../src/engine/registry.ts");
  const { createApp } = await import("../src/http/app.ts");
  const { openStorage } = await import("../src/storage/open.ts");
  const { sha256Hex } = await import("../src/runtimes/native-hash.ts");
  const backend = await createBackend(values.backend as "wasm" | "native" | "bert-wasm", values.threads ? Number(values.threads) : undefined, {
    spinning: values.spin === "on",
  });
  const registry = new ModelRegistry(openStorage(models, process.env), backend, {
    queue: { ...JSON.parse(values.queue!), batching: values.batching !== "off" },
  });
  queueStats = async (id) => ((await registry.get(id)) as { queue?: { stats: object; waits?: object } }).queue;
  return createApp({ registry, cache: false, sha256Hex });
}

async function xenova() {
  // transformers.js 2.x picks onnxruntime-node whenever process.release.name is "node"; hiding it
  // while the module loads selects its onnxruntime-web (1.14, WASM) build instead.
  const release = process.release;
  if (values.backend === "wasm") Object.defineProperty(process, "release", { value: { name: "bench" }, configurable: true });
  const { pipeline, env } = await import("@xenova/transformers");
  Object.defineProperty(process, "release", { value: release, configurable: true });
  env.allowRemoteModels = false;
  env.localModelPath = models.endsWith("/") ? models : `${models}/`;
  env.backends.onnx.wasm.numThreads = 1; // as bert-edge's WASM backend (one thread, as in an edge isolate)
  env.backends.onnx.wasm.proxy = false;
  const pipelines = new Map<string, Promise<(text: string) => Promise<unknown>>>();
  const app = new Hono();
  app.post("/models/:id{.+}", async (c) => {
    const id = c.req.param("id");
    let p = pipelines.get(id);
    if (!p) pipelines.set(id, (p = pipeline("text-classification", id, { quantized: true }) as never));
    const { inputs } = (await c.req.json()) as { inputs: string };
    return c.json(await (await p)(inputs));
  });
  return app;
}

function listening(server: import("node:net").Server) {
  server.once("listening", () => {
    const address = server.address();
    console.log(`LISTENING ${typeof address === "object" && address ? address.port : 0}`);
  });
}

/** The raw floor's run: the backend's engine on one fixed 128-token input, as bert-edge's backend runs it. */
async function rawRun(): Promise<() => Promise<unknown>> {
  const { join } = await import("node:path");
  const { readFileSync } = await import("node:fs");
  const { defaultNativeThreads } = await import("../src/runtimes/backends.ts");
  const { batchOf, firstTokenBytes, loadTokenizer, rawEngine, textsOfLength } = await import("./lib.ts");
  const dir = join(models, values.model!);
  const graph = readFileSync(join(dir, "onnx/model_quantized.onnx"));
  const backend = values.backend as "wasm" | "native" | "bert-wasm";
  const engine = await rawEngine(backend === "native" ? "node" : backend === "wasm" ? "web" : "bert-wasm", backend === "native" ? defaultNativeThreads() : 1, values.spin === "on");
  const { packBertWasm } = await import("../src/engine/backends/bert-wasm/pack.ts");
  // The graph as bert-edge's backends serve it: packed for bert-wasm, its last layer pruned to the first token for the others.
  const session = await engine.open(backend === "bert-wasm" ? packBertWasm(graph) : await firstTokenBytes(graph));
  const tokenizer = loadTokenizer(dir);
  const batch = batchOf(tokenizer, textsOfLength(tokenizer, 128, 1, 128));
  return () => session.run(batch);
}

/** The raw floor's answer to every request, after one timed run. */
async function rawAnswer(run: () => Promise<unknown>) {
  const start = performance.now();
  await run();
  return { body: RAW_ANSWER, headers: { "content-type": "application/json", "server-timing": `run;dur=${(performance.now() - start).toFixed(3)}` } };
}
const RAW_ANSWER = JSON.stringify([{ label: "LABEL_0", score: 1 }]);

if (values.impl === "raw") {
  const { createServer } = await import("node:http");
  const run = await rawRun();
  const server = createServer((req, res) => {
    req.resume();
    req.on("end", async () => {
      const { body, headers } = await rawAnswer(run);
      res.writeHead(200, headers);
      res.end(body);
    });
  });
  server.listen(0, "127.0.0.1");
  listening(server);
} else if (values.impl === "hono-raw") {
  const run = await rawRun();
  const app = new Hono();
  app.get("/health", (c) => c.json({ status: "ok" }));
  app.post("/models/:id{.+}", async (c) => {
    await c.req.json();
    const { body, headers } = await rawAnswer(run);
    return new Response(body, { headers });
  });
  listening(serve({ fetch: app.fetch, port: 0, hostname: "127.0.0.1" }) as import("node:net").Server);
} else {
  // The bench routes join the served app itself: no wrapping app in front of it.
  const app: Hono = values.impl === "xenova" ? await xenova() : ((await bertEdge()) as unknown as Hono);
  app.get("/__bench", async (c) => {
    const id = c.req.query("model");
    const queue = id ? await queueStats(id) : undefined;
    return c.json({ wasmHeap: wasmHeap(), queue: queue && { ...queue.stats, ...queue.waits } });
  });
  if (values.impl === "xenova") app.get("/health", (c) => c.json({ status: "ok" }));
  listening(serve({ fetch: app.fetch, port: 0, hostname: "127.0.0.1" }) as import("node:net").Server);
}
