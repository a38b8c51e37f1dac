/** Shared pieces of the benchmark: statistics, inputs of an exact token length, memory probes, HTTP load. */
import { type ChildProcess, spawn } from "node:child_process";
import { readFileSync } from "node:fs";
import http from "node:http";
import type { Batch } from "../src/engine/backend.ts";
import { padBatch } from "../src/engine/batch.ts";
import { BertTokenizer } from "../src/engine/tokenizer.ts";

export const median = (xs: number[]) => quantile(xs, 0.5);
export const p99 = (xs: number[]) => quantile(xs, 0.99);

export function quantile(xs: number[], q: number): number {
  if (xs.length === 0) return NaN;
  const s = [...xs].sort((a, b) => a - b);
  const i = Math.min(s.length - 1, Math.max(0, Math.ceil(q * s.length) - 1));
  return s[i];
}

/** Words that are one WordPiece token each in the fixtures' (bert-base-uncased) vocabulary. */
const WORDS = (
  "the movie was good and the food was great but service slow so we left early then came back again " +
  "later for more coffee with friends who like music art books dogs cats rain sun city park house car " +
  "road train day night week year time people man woman child school work home water fire light dark " +
  "happy sad long short big small old new first last best worst very really quite still never always"
).split(" ");

/**
 * Texts that tokenize to exactly `tokens` tokens ([CLS] and [SEP] included), each different
 * (a seeded shuffle of one-token words), so that no cache or deduplication can help.
 */
export function textsOfLength(tokenizer: BertTokenizer, tokens: number, count: number, seed = 1): string[] {
  const words = WORDS.filter((w) => tokenizer.encode(w, undefined, { addSpecialTokens: false })[0].ids.length === 1);
  let state = seed * 2654435761;
  const next = () => ((state = (state * 1103515245 + 12345) >>> 0), state >>> 8);
  const texts: string[] = [];
  for (let i = 0; i < count; i++) {
    const text = Array.from({ length: tokens - 2 }, () => words[next() % words.length]).join(" ");
    const n = tokenizer.encode(text)[0].ids.length;
    if (n !== tokens) throw new Error(`a ${tokens}-token text came out as ${n} tokens`);
    texts.push(text);
  }
  return texts;
}

/** A batch of texts for the raw runs, as bert-edge pads one. */
export const batchOf = (tokenizer: BertTokenizer, texts: string[]): Batch => padBatch(texts.map((t) => tokenizer.encode(t)[0]), tokenizer.padTokenId);

export type RawRuntime = "web" | "node" | "bert-wasm";
export interface RawSession {
  run(batch: Batch): Promise<Record<string, { data: unknown }>>;
  release(): Promise<void>;
  /** bert-wasm's wasm memory. */
  memoryBytes?: number;
}

/**
 * Sessions without bert-edge around them: onnxruntime's `session.run` (web, or node at `threads`
 * intra-op threads, `spin`: whether its pool threads busy-wait, ORT's default) on feeds made from a
 * batch, or bert-wasm's own session. `open` takes the ONNX graph, or for bert-wasm the packed weights.
 */
export async function rawEngine(runtime: RawRuntime, threads: number | undefined, spin = true) {
  if (runtime === "bert-wasm") {
    const { loadBertWasmBackend } = await import("../src/engine/backends/bert-wasm/node.ts");
    const backend = await loadBertWasmBackend({ log: () => {} });
    return { threads: (): number | string => 1, open: async (packed: Uint8Array): Promise<RawSession> => backend.createSession(packed) as Promise<RawSession> };
  }
  type Ort = typeof import("onnxruntime-web");
  let ort: Ort;
  const options: Record<string, unknown> = {};
  if (runtime === "web") {
    ort = await import("onnxruntime-web");
    if (threads) ort.env.wasm.numThreads = threads;
    ort.env.wasm.proxy = false;
    options.executionProviders = ["wasm"];
  } else {
    const node = await import("onnxruntime-node");
    ort = (node.default ?? node) as unknown as Ort;
    if (threads) Object.assign(options, { intraOpNumThreads: threads, interOpNumThreads: 1 });
    if (!spin) options.extra = { session: { intra_op: { allow_spinning: "0" } } };
  }
  const toFeeds = (b: Batch) => ({
    input_ids: new ort.Tensor("int64", b.inputIds, b.dims),
    attention_mask: new ort.Tensor("int64", b.attentionMask, b.dims),
    token_type_ids: new ort.Tensor("int64", b.tokenTypeIds, b.dims),
  });
  const { availableParallelism } = await import("node:os");
  return {
    /** The intra-op threads it runs on (read after a session exists: onnxruntime-web settles its default then). */
    threads: (): number | string => (runtime === "web" ? (ort.env.wasm.numThreads ?? 1) : (threads ?? `default (${availableParallelism()} CPUs)`)),
    open: async (graph: Uint8Array): Promise<RawSession> => {
      const session = await ort.InferenceSession.create(graph, options);
      return { run: (b) => session.run(toFeeds(b)), release: () => session.release() };
    },
  };
}

export function loadTokenizer(modelDir: string): BertTokenizer {
  const json = JSON.parse(readFileSync(`${modelDir}/tokenizer.json`, "utf8"));
  const config = JSON.parse(readFileSync(`${modelDir}/tokenizer_config.json`, "utf8"));
  return BertTokenizer.fromJSON(json, config);
}

/** Peak resident set (VmHWM) of a process, in bytes (Linux). */
export function peakRss(pid: number | "self" = "self"): number {
  try {
    const status = readFileSync(`/proc/${pid}/status`, "utf8");
    const kb = /VmHWM:\s+(\d+) kB/.exec(status);
    return kb ? Number(kb[1]) * 1024 : NaN;
  } catch {
    return NaN;
  }
}

/**
 * Records every WebAssembly.Memory that instantiated modules import or export, so that the wasm
 * heap of onnxruntime-web can be read afterwards. Call before the runtime is imported.
 */
export function watchWasmMemory(): () => number {
  const memories = new Set<WebAssembly.Memory>();
  const scan = (obj: unknown) => {
    if (!obj || typeof obj !== "object") return;
    for (const v of Object.values(obj)) {
      if (v instanceof WebAssembly.Memory) memories.add(v);
      else if (v && typeof v === "object" && !(v instanceof WebAssembly.Memory)) {
        for (const w of Object.values(v as object)) if (w instanceof WebAssembly.Memory) memories.add(w);
      }
    }
  };
  const instantiate = WebAssembly.instantiate;
  WebAssembly.instantiate = async function (this: unknown, ...args: unknown[]) {
    scan(args[1]);
    const result = await (instantiate as (...a: unknown[]) => Promise<unknown>).apply(WebAssembly, args);
    const instance = result instanceof WebAssembly.Instance ? result : (result as { instance: WebAssembly.Instance }).instance;
    scan(instance.exports);
    return result;
  } as typeof WebAssembly.instantiate;
  return () => [...memories].reduce((sum, m) => sum + m.buffer.byteLength, 0);
}

const agents = new Map<number, http.Agent>();

export interface HttpResult {
  status: number;
  ms: number;
  body: string;
  serverTiming?: string;
}

/** One POST (or, without a body, GET) on a keep-alive connection. */
export function post(url: string, body: string | undefined, maxSockets = 1): Promise<HttpResult> {
  let agent = agents.get(maxSockets);
  if (!agent) agents.set(maxSockets, (agent = new http.Agent({ keepAlive: true, maxSockets })));
  const start = performance.now();
  return new Promise((ok, fail) => {
    const headers = body === undefined ? {} : { "content-type": "application/json", "content-length": Buffer.byteLength(body) };
    const req = http.request(url, { method: body === undefined ? "GET" : "POST", agent, headers }, (res) => {
      const chunks: Buffer[] = [];
      res.on("data", (c) => chunks.push(c));
      res.on("end", () =>
        ok({
          status: res.statusCode ?? 0,
          ms: performance.now() - start,
          body: Buffer.concat(chunks).toString(),
          serverTiming: res.headers["server-timing"] as string | undefined,
        }),
      );
      res.on("error", fail);
    });
    req.on("error", fail);
    req.end(body);
  });
}

export function closeAgents() {
  for (const a of agents.values()) a.destroy();
  agents.clear();
}

/** Server-Timing `name;dur=x` entries, in ms. */
export function parseServerTiming(header: string | undefined): Record<string, number> {
  const out: Record<string, number> = {};
  for (const part of header?.split(",") ?? []) {
    const m = /^\s*([\w-]+)(?:;[^,]*?dur=([\d.]+))?/.exec(part);
    if (m && m[2] !== undefined) out[m[1]] = Number(m[2]);
  }
  return out;
}

export interface LoadResult {
  /** Per-request latencies and requests per run, for combining rounds (not reported). */
  latencies?: number[];
  mergedList?: number[];
  clients: number;
  requests: number;
  errors: number;
  seconds: number;
  rps: number;
  p50: number;
  p99: number;
  /** Median requests per session.run (bert-edge's Server-Timing). */
  merged?: number;
}

/** `clients` concurrent loops of POSTs for `seconds` (and at most `maxRequests`), after a short warm-up. */
export async function loadTest(url: string, texts: string[], clients: number, seconds: number, maxRequests = Infinity): Promise<LoadResult> {
  let i = 0;
  const body = () => JSON.stringify({ inputs: texts[i++ % texts.length] });
  // Warm-up: one request per client, concurrently.
  await Promise.all(Array.from({ length: clients }, () => post(url, body(), clients)));
  const latencies: number[] = [];
  const merged: number[] = [];
  let errors = 0;
  const start = performance.now();
  const deadline = start + seconds * 1000;
  let sent = 0;
  await Promise.all(
    Array.from({ length: clients }, async () => {
      while (performance.now() < deadline && sent < maxRequests) {
        sent++;
        const r = await post(url, body(), clients);
        if (r.status !== 200) {
          errors++;
          continue;
        }
        latencies.push(r.ms);
        const m = /desc="(\d+) merged"/.exec(r.serverTiming ?? "");
        if (m) merged.push(Number(m[1]));
      }
    }),
  );
  const elapsed = (performance.now() - start) / 1000;
  return {
    clients,
    requests: latencies.length,
    errors,
    seconds: elapsed,
    rps: latencies.length / elapsed,
    p50: median(latencies),
    p99: p99(latencies),
    merged: merged.length ? median(merged) : undefined,
    latencies,
    mergedList: merged,
  };
}

/** Several rounds of one load level (run interleaved with other servers) as one result. */
export function combine(rounds: LoadResult[]): LoadResult {
  const latencies = rounds.flatMap((r) => r.latencies ?? []);
  const merged = rounds.flatMap((r) => r.mergedList ?? []);
  const seconds = rounds.reduce((s, r) => s + r.seconds, 0);
  return {
    clients: rounds[0].clients,
    requests: latencies.length,
    errors: rounds.reduce((s, r) => s + r.errors, 0),
    seconds,
    rps: latencies.length / seconds,
    p50: median(latencies),
    p99: p99(latencies),
    merged: merged.length ? median(merged) : undefined,
  };
}

/**
 * A supply of distinct texts per length: each call hands the next rotation of the list, so that
 * successive rounds start at different texts.
 */
export function textSupply(tokenizer: BertTokenizer, lengths: number[], count: (len: number) => number, step: number) {
  const texts = Object.fromEntries(lengths.map((len) => [len, textsOfLength(tokenizer, len, count(len), len * step)]));
  let cursor = 0;
  return (len: number) => {
    const all = texts[len];
    const from = (cursor += step) % all.length;
    return [...all.slice(from), ...all.slice(0, from)];
  };
}

/**
 * Deterministic shuffles of 0..n-1 (an LCG seeded once): every call gives a fresh order, so that
 * when servers take turns none always follows the same one.
 */
export function shuffler(seed: number): (n: number) => number[] {
  return (n) => {
    const order = Array.from({ length: n }, (_, i) => i);
    for (let i = n - 1; i > 0; i--) {
      seed = (seed * 1103515245 + 12345) >>> 0;
      const j = (seed >>> 8) % (i + 1);
      [order[i], order[j]] = [order[j], order[i]];
    }
    return order;
  };
}

/** `node --import tsx script`: one process (the tsx CLI would put a second one in between, hiding the RSS). */
export const nodeTsx = (script: string, args: string[]) => [process.execPath, ["--import", "tsx", script, ...args]] as const;

/**
 * Node flags of every bench server (bert-edge, the raw floor and the xenova baseline alike): those
 * `npm start` runs bert-edge with, read from package.json so that the two cannot drift apart (a 1 MB
 * young generation: README, Speed).
 */
export const SERVER_NODE_FLAGS: string[] = (() => {
  const { scripts } = JSON.parse(readFileSync(new URL("../package.json", import.meta.url), "utf8")) as { scripts: { start: string } };
  const [node, ...words] = scripts.start.split(/\s+/);
  if (node !== "node") throw new Error(`package.json's start script does not run node: ${scripts.start}`);
  return words.slice(0, words.findIndex((w) => !w.startsWith("--")));
})();

/**
 * `node ...nodeFlags --import tsx bench/serve.ts ...args` in its own process group (kill it with `-pid`),
 * run from `cwd` (another checkout, to A/B a change); resolves with its URL once it prints `LISTENING <port>`.
 */
export function startServe(args: string[], cwd: string, nodeFlags = SERVER_NODE_FLAGS): Promise<{ url: string; child: ChildProcess; output: () => string }> {
  const [node, nodeArgs] = nodeTsx("bench/serve.ts", args);
  const child = spawn(node, [...nodeFlags, ...nodeArgs], { cwd, stdio: ["ignore", "pipe", "pipe"], detached: true });
  let out = "";
  child.stderr!.on("data", (d) => (out += d));
  return new Promise((ok, fail) => {
    child.stdout!.on("data", (d) => {
      out += d;
      const m = /LISTENING (\d+)/.exec(out);
      if (m) ok({ url: `http://127.0.0.1:${m[1]}`, child, output: () => out });
    });
    child.on("exit", (code) => fail(new Error(`bench/serve.ts ${args.join(" ")} exited ${code}:\n${out}`)));
  });
}

/** The int8 graph as bert-edge's native and wasm backends serve a classifier: its last layer pruned to the first token. */
export async function firstTokenBytes(graph: Uint8Array): Promise<Uint8Array> {
  const [{ pruneToFirstToken }, { decodeModel, encodeModel }] = await Promise.all([import("../src/engine/first-token.ts"), import("../src/cli/onnx.ts")]);
  // One file, weights inline: the raw engines take a graph's bytes alone.
  const model = decodeModel(graph);
  const pruned = pruneToFirstToken(model);
  if ("skipped" in pruned) throw new Error(`first-token: ${pruned.skipped}`);
  return encodeModel(model);
}
