/**
 * `npm run bench [-- --quick] [-- --no-workerd]`: bert-edge against raw onnxruntime and against an
 * @xenova/transformers 2.17.2 pipeline, side by side in one run, on the same model files; writes
 * docs/benchmarks.md and bench/results/latest.json.
 *
 * Every configuration runs in its own process (fresh heap, its own peak RSS), one at a time; the load
 * generator is this process (keep-alive HTTP on loopback). Models: a MiniLM-shaped int8 BERT
 * (bench/make-minilm.py, generated if missing) and the tiny-bert-sentiment fixture.
 */
import { type ChildProcess, execFileSync, spawn, spawnSync } from "node:child_process";
import { copyFileSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { availableParallelism, cpus, tmpdir } from "node:os";
import { join, relative } from "node:path";
import { fileURLToPath } from "node:url";
import { defaultNativeThreads, readCpuinfo } from "../src/runtimes/backends.ts";
import { closeAgents, combine, type LoadResult, loadTest, loadTokenizer, median, p99, parseServerTiming, peakRss, post, textSupply, shuffler, nodeTsx, SERVER_NODE_FLAGS, startServe } from "./lib.ts";

const ROOT = fileURLToPath(new URL("..", import.meta.url));
const argv = process.argv.slice(2);
const QUICK = argv.includes("--quick");
const WORKERD = !argv.includes("--no-workerd");
const MODELS_DIR = join(ROOT, "bench/models");
const MINILM = "minilm-l6-sentiment";
const TINY = "tiny-bert-sentiment";
const LENGTHS = [16, 128, 384];
/**
 * The raw floor of a backend: raw inference behind a bare node:http server (bench/serve.ts --impl raw):
 * the backend's engine, set up as bert-edge sets it up, runs one fixed 128-token input per request, and
 * a fixed classification goes back. Its (client − run) is what loopback, Node's HTTP and the client cost
 * with the same run in between (the same caches evicted, the same idle cores woken); what a bert-edge
 * server spends beyond it is bert-edge's own.
 */
const floorName = (backend: OwnBackend) => `raw floor for ${backend} (bare node:http + raw run, 128 tok)`;
/**
 * The same run and answer behind a Hono app on @hono/node-server (bench/serve.ts --impl hono-raw): its
 * (client − run) less the raw floor's is what the framework alone costs, the part of bert-edge's own
 * overhead that is not bert-edge's code.
 */
const honoFloorName = (backend: OwnBackend) => `Hono floor for ${backend} (@hono/node-server + raw run, 128 tok)`;
/** workerd's raw floor: the bench Worker runs onnxruntime-web on a fixed 128-token input (bench/worker.ts), through the same wrangler dev chain. */
const WORKERD_FLOOR = "raw floor for workerd wasm (bench Worker + raw run, 128 tok)";
const CLIENTS = [1, 4, 16];
/**
 * Most requests one load round sends, whatever its client count: one client runs its whole time window
 * as 16 do (a per-client cap cut its rounds to a few hundred milliseconds), and every text of a round is
 * distinct (the supply holds 4000 per length).
 */
const MAX_ROUND_REQUESTS = 1600;
const LOAD_LENGTHS = [16, 128];
/** Rounds per load level, the servers taking turns. */
const ROUNDS = QUICK ? 2 : 3;
/**
 * One client has no batches to settle, so its levels take turns in three times as many, shorter rounds,
 * to spread the shared machine's drifting load more evenly. That is not enough to compare two servers
 * at one client closely: in a full run with 9 such rounds, two identical batching-on native servers
 * were 7–11 % apart (in bench/probe.ts, alone on the box, twelve 1-second rounds: 1 %).
 */
const roundsFor = (clients: number) => (clients === 1 ? 3 * ROUNDS : ROUNDS);
/** The intra-op threads bert-edge's native backend runs on this machine (src/runtimes/backends.ts). */
const NATIVE_THREADS = defaultNativeThreads();
/** The raw engine row at the native server's thread setting (the engine bound of the targets). */
const NATIVE_KEY = NATIVE_THREADS === 1 ? "node, 1 thread" : `node, ${NATIVE_THREADS} threads, no spinning`;
/** Rows whose graph has its last layer pruned to the first token, as bert-edge's native and wasm backends serve it. */
const FIRST_TOKEN = ", first-token graph";
/** The raw engine row each bert-edge backend is held to: the graph it serves, at its thread setting. */
const RAW_KEY = { wasm: `web, 1 thread${FIRST_TOKEN}`, native: `${NATIVE_KEY}${FIRST_TOKEN}`, "bert-wasm": "bert-wasm, 1 thread" };
type OwnBackend = keyof typeof RAW_KEY;
const tStart = performance.now();
const log = (msg: string) => console.log(`[${((performance.now() - tStart) / 1000).toFixed(0).padStart(4)}s] ${msg}`);

/**
 * Iterations per length of the engine runs and of the HTTP latency runs, and seconds per load level, by
 * model. minilm's HTTP latency at 16 and 128 tokens gets the most: the overhead and lone-request targets
 * are read there, as differences of medians a few tenths of a millisecond apart.
 */
const PLAN: Record<string, { iters: number[]; httpIters: number[]; loadSeconds: number }> = {
  [MINILM]: { iters: QUICK ? [10, 15, 3] : [30, 60, 8], httpIters: QUICK ? [10, 15, 3] : [100, 150, 8], loadSeconds: QUICK ? 1 : 3 },
  [TINY]: { iters: QUICK ? [20, 20, 10] : [60, 60, 30], httpIters: QUICK ? [20, 20, 10] : [60, 60, 30], loadSeconds: QUICK ? 0.5 : 1.5 },
};

// ---------------------------------------------------------------------------------------------
// Models
// ---------------------------------------------------------------------------------------------

async function prepareModels() {
  if (!existsSync(join(MODELS_DIR, MINILM, "onnx/model_quantized.onnx"))) {
    log(`generating ${MINILM} (bench/make-minilm.py)`);
    const r = spawnSync("/usr/bin/python3", [join(ROOT, "bench/make-minilm.py")], { stdio: "inherit" });
    if (r.status !== 0) throw new Error("bench/make-minilm.py failed");
  }
  // The fixture beside it, so that every server serves both from one folder.
  const from = join(ROOT, "models/fixtures", TINY);
  for (const file of ["config.json", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "onnx/model_quantized.onnx", "onnx/model.onnx"]) {
    mkdirSync(join(MODELS_DIR, TINY, "onnx"), { recursive: true });
    copyFileSync(join(from, file), join(MODELS_DIR, TINY, file));
  }
  // bert-wasm's packed file of each int8 graph, for bert-wasm inside workerd (no converter there).
  const { packBertWasm } = await import("../src/engine/backends/bert-wasm/pack.ts");
  for (const model of [MINILM, TINY]) {
    mkdirSync(join(MODELS_DIR, model, "bert-wasm"), { recursive: true });
    writeFileSync(join(MODELS_DIR, model, "bert-wasm/model.bin"), packBertWasm(readFileSync(join(MODELS_DIR, model, "onnx/model_quantized.onnx"))));
  }
}

/**
 * Raw engine latency inside workerd (bench/worker.ts's /__bench/engine): onnxruntime-web and bert-wasm
 * take turns, one request of `runs` runs each; the client's time / runs is one run.
 */
async function workerdEngines(url: string, model: string): Promise<Record<string, any>> {
  const out: Record<string, any> = {};
  const backends = [["wasm", "workerd web, 1 thread"], ["bert-wasm", "workerd bert-wasm"]] as const;
  const ms: Record<string, Record<number, number[]>> = {};
  for (const [b, key] of backends) {
    ms[key] = {};
    await fetch(`${url}/__bench/engine?backend=${b}&model=${model}&len=16&runs=2`).then((r) => r.text()); // session + warm-up
  }
  for (const [k, len] of LENGTHS.entries()) {
    const rounds = Math.max(3, Math.ceil(PLAN[model].iters[k] / 2));
    const runs = len >= 384 ? 1 : len >= 128 ? 2 : 8;
    for (let i = 0; i < rounds; i++) {
      for (const [b, key] of backends) {
        const t0 = performance.now();
        const res = await fetch(`${url}/__bench/engine?backend=${b}&model=${model}&len=${len}&runs=${runs}`);
        if (!res.ok) throw new Error(`/__bench/engine ${b}: ${res.status} ${await res.text()}`);
        await res.text();
        (ms[key][len] ??= []).push((performance.now() - t0) / runs);
      }
    }
  }
  for (const [, key] of backends) {
    out[key] = { threads: 1, raw: Object.fromEntries(LENGTHS.map((len) => [len, { median: median(ms[key][len]), p99: p99(ms[key][len]), n: ms[key][len].length }])), batched: {} };
  }
  return out;
}

/** The files a server reads (int8 graphs only), as storage keys. */
function servedFiles() {
  return readdirSync(MODELS_DIR, { recursive: true, withFileTypes: true })
    .filter((e) => e.isFile() && !/model\.onnx$/.test(e.name))
    .map((e) => {
      const file = join(e.parentPath ?? e.path, e.name);
      return { key: relative(MODELS_DIR, file), file };
    });
}

// ---------------------------------------------------------------------------------------------
// Processes
// ---------------------------------------------------------------------------------------------

const children = new Set<ChildProcess>();
function killGroup(child: ChildProcess) {
  try {
    process.kill(-child.pid!, "SIGKILL");
  } catch {
    // already gone
  }
  children.delete(child);
}
process.on("exit", () => [...children].forEach(killGroup));
process.on("SIGINT", () => process.exit(130));

function runChild(args: string[]): Promise<any> {
  return new Promise((ok, fail) => {
    const child = spawn(...nodeTsx(args[0], args.slice(1)), { cwd: ROOT, stdio: ["ignore", "pipe", "pipe"], detached: true });
    children.add(child);
    let out = "";
    child.stdout.on("data", (d) => (out += d));
    child.stderr.on("data", (d) => (out += d));
    child.on("exit", (code) => {
      children.delete(child);
      const line = out.split("\n").find((l) => l.startsWith("RESULT "));
      if (code === 0 && line) ok(JSON.parse(line.slice(7)));
      else fail(new Error(`tsx ${args.join(" ")} exited ${code}:\n${out.slice(-3000)}`));
    });
  });
}

interface Server {
  url: string;
  child: ChildProcess;
  readyMs: number;
  /** The process whose memory is the server's. */
  pid: () => number;
  output: () => string;
}

async function waitFor(url: string, child: ChildProcess, output: () => string, timeoutMs: number) {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (child.exitCode !== null) throw new Error(`server exited ${child.exitCode}:\n${output().slice(-3000)}`);
    try {
      if ((await fetch(url)).ok) return;
    } catch {
      // not yet
    }
    await new Promise((ok) => setTimeout(ok, 100));
  }
  throw new Error(`no answer at ${url}:\n${output().slice(-3000)}`);
}

async function startNodeServer(args: string[]): Promise<Server> {
  const start = performance.now();
  const { url, child, output } = await startServe(args, ROOT);
  children.add(child);
  await waitFor(`${url}/health`, child, output, 30_000);
  return { url, child, readyMs: performance.now() - start, pid: () => child.pid!, output };
}

async function freePort(): Promise<number> {
  const { createServer } = await import("node:net");
  const server = createServer();
  await new Promise<void>((ok) => server.listen(0, "127.0.0.1", ok));
  const { port } = server.address() as { port: number };
  await new Promise((ok) => server.close(ok));
  return port;
}

async function startWorkerd(): Promise<Server & { cleanup: () => void }> {
  const tmp = mkdtempSync(join(tmpdir(), "bert-edge-bench-"));
  const state = join(tmp, "state");
  const env = { ...process.env, WRANGLER_SEND_METRICS: "false", CI: "true", XDG_CONFIG_HOME: join(tmp, "xdg") };
  const pairs = join(tmp, "pairs.json");
  writeFileSync(pairs, JSON.stringify(servedFiles()));
  const wrangler = join(ROOT, "node_modules/.bin/wrangler");
  const put = spawnSync(wrangler, ["r2", "bulk", "put", "bert-edge-models", "--filename", pairs, "--local", "--persist-to", state], { cwd: ROOT, env, encoding: "utf8" });
  if (put.status !== 0) throw new Error(`wrangler r2 bulk put failed:\n${put.stdout}${put.stderr}`);
  const port = await freePort();
  const start = performance.now();
  const child = spawn(wrangler, ["dev", "bench/worker.ts", "--port", String(port), "--ip", "127.0.0.1", "--persist-to", state, "--var", "BACKEND:wasm", "--var", "RESPONSE_CACHE:off"], { cwd: ROOT, env, stdio: ["ignore", "pipe", "pipe"], detached: true });
  children.add(child);
  let out = "";
  child.stdout!.on("data", (d) => (out += d));
  child.stderr!.on("data", (d) => (out += d));
  const url = `http://127.0.0.1:${port}`;
  await waitFor(`${url}/health`, child, () => out, 120_000);
  const pid = () => {
    const ps = execFileSync("ps", ["-o", "pid=,comm=", "-g", String(child.pid)], { encoding: "utf8" });
    const line = ps.split("\n").find((l) => /workerd/.test(l));
    return line ? Number(line.trim().split(/\s+/)[0]) : NaN;
  };
  return { url, child, readyMs: performance.now() - start, pid, output: () => out, cleanup: () => rmSync(tmp, { recursive: true, force: true }) };
}

// ---------------------------------------------------------------------------------------------
// Measurements
// ---------------------------------------------------------------------------------------------

const tokenizer = loadTokenizer(join(ROOT, "models/fixtures", TINY));
/** Distinct texts per length: no answer is ever served from a cache. */
const nextTexts = textSupply(tokenizer, LENGTHS, (len) => (len > 128 ? 400 : 4000), 97);

interface Latency {
  median: number;
  p99: number;
  n: number;
  /** Medians of the Server-Timing split, and of (client latency − server run time). */
  split?: Record<string, number>;
  overheadMs?: number;
}

interface ServerResult {
  name: string;
  impl: string;
  backend: string;
  batching: boolean;
  readyMs: number;
  cold: Record<string, number>;
  latency: Record<string, Record<number, Latency>>;
  load: Record<string, Record<number, LoadResult[]>>;
  peakRss: number;
  wasmHeap: number;
}

interface Running {
  result: ServerResult;
  server: Server;
}

/** A raw or Hono floor: it serves the latency runs of minilm at 128 tokens only, so it takes no cold start. */
const rawFloor = (name: string, backend: string, server: Server): Running => ({
  result: { name, impl: "raw", backend, batching: false, readyMs: server.readyMs, cold: {}, latency: {}, load: {}, peakRss: NaN, wasmHeap: NaN },
  server,
});

/** Starts a server and measures its cold start; it then stays up (idle) while the others start. */
async function startAndCold(name: string, meta: { impl: string; backend: string; batching: boolean }, start: () => Promise<Server>): Promise<Running> {
  log(`${name}: starting`);
  const server = await start();
  const result: ServerResult = { name, ...meta, readyMs: server.readyMs, cold: {}, latency: {}, load: {}, peakRss: NaN, wasmHeap: NaN };
  for (const model of [MINILM, TINY]) {
    // Cold start: the first request, with the model only in storage (not loaded).
    const first = await post(`${server.url}/models/${model}`, JSON.stringify({ inputs: nextTexts(16)[0] }));
    if (first.status !== 200) throw new Error(`${name} ${model}: ${first.status} ${first.body}`);
    result.cold[model] = first.ms;
  }
  return { result, server };
}

/**
 * Every measurement runs on every server back to back, so that the noise of a shared machine falls on
 * all of them alike: sequential latency request by request in turn, load levels in rounds.
 */
async function measure(servers: Running[]) {
  // A fresh order for every turn: no server always follows the same one (native ORT threads keep
  // spinning a little after a run, which would tax whoever comes next).
  const order = shuffler(12345);
  for (const model of [MINILM, TINY]) {
    const plan = PLAN[model];
    for (const [k, len] of LENGTHS.entries()) {
      log(`latency: ${model}, ${len} tokens`);
      const texts = nextTexts(len);
      const samples = servers.map(() => [] as { ms: number; st: Record<string, number> }[]);
      for (let i = 0; i < plan.httpIters[k] + 3; i++) {
        for (const s of order(servers.length)) {
          const { server, result } = servers[s];
          if (result.impl === "raw" && !(model === MINILM && len === 128)) continue; // a raw floor runs minilm at 128 tokens only
          const r = await post(`${server.url}/models/${model}`, JSON.stringify({ inputs: texts[i] }));
          if (r.status !== 200) throw new Error(`${servers[s].result.name}: ${r.status} ${r.body}`);
          if (i >= 3) samples[s].push({ ms: r.ms, st: parseServerTiming(r.serverTiming) });
        }
      }
      servers.forEach(({ result }, s) => {
        if (samples[s].length === 0) return;
        const ms = samples[s].map((x) => x.ms);
        const lat: Latency = { median: median(ms), p99: p99(ms), n: ms.length };
        if (samples[s][0].st.run !== undefined) {
          lat.split = Object.fromEntries(["tokenize", "queue", "run", "decode"].map((key) => [key, median(samples[s].map((x) => x.st[key]))]));
          lat.overheadMs = median(samples[s].map((x) => x.ms - x.st.run));
        }
        (result.latency[model] ??= {})[len] = lat;
      });
    }
    for (const len of LOAD_LENGTHS) {
      if (QUICK && model === TINY && len !== 16) continue;
      for (const clients of CLIENTS) {
        log(`load: ${model}, ${len} tokens, ${clients} clients`);
        const rounds = servers.map(() => [] as LoadResult[]);
        const levelRounds = roundsFor(clients);
        for (let round = 0; round < levelRounds; round++) {
          for (const s of order(servers.length)) {
            const { server, result } = servers[s];
            if (result.impl === "raw") continue; // the raw floors only serve the latency runs
            rounds[s].push(await loadTest(`${server.url}/models/${model}`, nextTexts(len), clients, plan.loadSeconds / levelRounds, MAX_ROUND_REQUESTS));
            closeAgents();
          }
        }
        servers.forEach(({ result }, s) => result.impl !== "raw" && ((result.load[model] ??= {})[len] ??= []).push(combine(rounds[s])));
      }
    }
  }
  for (const { result, server } of servers.filter((x) => x.result.impl !== "raw")) {
    result.wasmHeap = ((await (await fetch(`${server.url}/__bench`)).json()) as { wasmHeap: number }).wasmHeap;
    result.peakRss = peakRss(server.pid());
  }
}

// ---------------------------------------------------------------------------------------------
// Report
// ---------------------------------------------------------------------------------------------

const f1 = (x: number | undefined) => (x === undefined || Number.isNaN(x) ? "–" : x >= 100 ? x.toFixed(0) : x >= 10 ? x.toFixed(1) : x.toFixed(2));
const mib = (x: number) => (Number.isNaN(x) || x === 0 ? "–" : `${(x / 2 ** 20).toFixed(0)} MiB`);
const ratio = (a: number, b: number) => (b ? `${(a / b).toFixed(2)}×` : "–");
const pct = (a: number, b: number) => `${((100 * a) / b).toFixed(1)} %`;
const verdict = (ok: boolean) => (ok ? "**met**" : "**MISSED**");

/**
 * The CPU, with the instruction sets int8 inference speed hangs on (onnxruntime's int8 kernels use
 * VNNI dot products where the CPU has them, AVX2 otherwise): runs on different machines differ by
 * several times, so every report names its machine.
 */
function describeMachine(): string {
  const model = cpus()[0]?.model ?? "?";
  const info = readCpuinfo();
  if (info === undefined) return `${availableParallelism()} CPUs (${model})`;
  const field = (name: string) => new RegExp(`^${name}\\s*: (.*)$`, "m").exec(info)?.[1];
  const flags = new Set(field("flags")?.split(" "));
  const sets = ["avx2", "avx512f", "avx512_vnni", "avx_vnni"].filter((f) => flags.has(f));
  return `${availableParallelism()} CPUs (${model}, family ${field("cpu family")} model ${field("model")}; ${sets.join(", ") || "no AVX2"}${sets.some((f) => f.includes("vnni")) ? "" : ", no VNNI"})`;
}

function report(engines: Record<string, Record<string, any>>, servers: ServerResult[], seconds: number, machine: string) {
  const lines: string[] = [];
  const out = (s = "") => lines.push(s);
  const byName = Object.fromEntries(servers.map((s) => [s.name, s]));
  const command = `npm run bench${QUICK ? " -- --quick" : ""}${WORKERD ? "" : " -- --no-workerd"}`;
  out("# Benchmarks");
  out();
  out(`Produced by \`${command}\` (bench/run.ts) in ${seconds.toFixed(0)} s on ${new Date().toISOString().slice(0, 10)}: ` +
    `Node ${process.version}, ${machine}, shared with other work — every figure below comes from ` +
    `this one run, measured side by side; medians and p99 in milliseconds. All servers are up at once (idle but one) and take turns in a shuffled order: request by request for latency, round by round for load. Load is generated from the bench process over keep-alive HTTP on loopback, ` +
    `so client and server share the same ${availableParallelism()} cores.`);
  out();
  out("Models: `minilm` = bench/models/minilm-l6-sentiment (MiniLM-L6 shape: 6 layers, hidden 384, 12 heads, FFN 1536, vocab 30522; random weights; " +
    "int8 graph 22 MB, made by bench/make-minilm.py); `tiny` = models/fixtures/tiny-bert-sentiment (2 layers, hidden 32; int8 graph 1 MB). " +
    "Every server reads the same int8 files. bert-edge servers run with the response cache off and every request text is distinct. " +
    `Every Node server (bert-edge, raw and Hono floors, xenova) runs with \`node ${SERVER_NODE_FLAGS.join(" ")}\`, as \`npm start\` runs bert-edge (README, Speed).`);
  out();
  out("Configurations: **raw** = onnxruntime `session.run` on a prepared [1, n] batch (onnxruntime-web 1.30 WASM or onnxruntime-node 1.30); " +
    "**in-process** = bert-edge's text-classification task called directly (tokenize → queue → run → decode); **HTTP** = bert-edge's Hono app on " +
    "Node (@hono/node-server) or on workerd (`wrangler dev`, model in local R2); **xenova** = an @xenova/transformers 2.17.2 text-classification " +
    "pipeline behind a Hono app on Node (its WASM build is onnxruntime-web 1.14, its Node default onnxruntime-node 1.14). bert-edge's WASM backend " +
    `and xenova's WASM run one thread; bert-edge's native backend runs ${NATIVE_THREADS} intra-op thread${NATIVE_THREADS > 1 ? "s" : ""} with ORT's thread spinning off (` +
    "src/runtimes/backends.ts), xenova's native runs ORT's default (one thread per core). " +
    `Rows marked "${FIRST_TOKEN.slice(2)}" run the int8 graph as bert-edge's native and WASM backends serve a classifier on Node and Deno: its last layer pruned to ` +
    "the first token (src/engine/first-token.ts: keys and values for every token, the rest for the one the head reads); the other rows, xenova, bert-edge on workerd " +
    "(its R2 holds the plain files, which Workers serve as they are: only `bert-edge pack` prunes for them) and bert-wasm (which prunes in its own layer loop) run the file as it is.");
  out();

  // --- raw
  out("## Raw session.run and bert-edge in process");
  out();
  for (const model of [MINILM, TINY]) {
    out(`### ${model}`);
    out();
    out("| engine | threads | 16 tok p50 / p99 | 128 tok p50 / p99 | 384 tok p50 / p99 | per sequence in a batch of 16 (16 / 128 tok) |");
    out("|---|---|---|---|---|---|");
    for (const [key, e] of Object.entries(engines[model])) {
      const cell = (len: number) => `${f1(e.raw[len]?.median)} / ${f1(e.raw[len]?.p99)}`;
      out(`| raw ${key} | ${e.threads} | ${cell(16)} | ${cell(128)} | ${cell(384)} | ${f1(e.batched[16])} / ${f1(e.batched[128])} |`);
      if (e.inproc) {
        const c = (len: number) => `${f1(e.inproc[len].median)} / ${f1(e.inproc[len].p99)}`;
        out(`| bert-edge in process (${key}) | ${e.threads} | ${c(16)} | ${c(128)} | ${c(384)} | |`);
      }
    }
    out();
    const own = engines[model]["bert-wasm, 1 thread"], web = engines[model]["web, 1 thread"];
    if (own && web) {
      const ratios = (a: any, b: any) => LENGTHS.map((len) => `${len} tok ${f1(a.raw[len]?.median)} vs ${f1(b.raw[len]?.median)} ms = ${(a.raw[len]?.median / b.raw[len]?.median).toFixed(2)}×`).join(", ");
      if (own.vsWeb) {
        const pairs = LENGTHS.map((len) => {
          const v = own.vsWeb[len];
          return `${len} tok ${f1(v.bertWasm.median)} vs ${f1(v.web.median)} ms = ${(v.bertWasm.median / v.web.median).toFixed(2)}×`;
        });
        out(`bert-wasm vs onnxruntime-web (1 thread, raw run, medians), Node, the two taking turns run by run in one process: ${pairs.join(", ")}.`);
      }
      out(`The same from the table's rows (separate processes, one after the other): ${ratios(own, web)}.`);
      const wOwn = engines[model]["workerd bert-wasm"], wWeb = engines[model]["workerd web, 1 thread"];
      if (wOwn && wWeb) out(`In workerd (client-timed /__bench/engine, R runs per request): ${ratios(wOwn, wWeb)}.`);
      out(`Cold start in a fresh Node process, model bytes in memory → session → first answer (16 tokens; module compilation included): bert-wasm ${f1(own.coldMs)} ms vs onnxruntime-web ${f1(web.coldMs)} ms = ${(own.coldMs / web.coldMs).toFixed(3)}×. Wasm heap at the end of the run (batches of 16 × 128 tokens included): bert-wasm ${(own.wasmHeap / 2 ** 20).toFixed(0)} MiB, onnxruntime-web ${(web.wasmHeap / 2 ** 20).toFixed(0)} MiB.`);
      out();
    }
    for (const [key, e] of Object.entries(engines[model])) {
      if (!e.inproc) continue;
      const s = e.inproc[128].split;
      out(`In process, ${key}, 128 tokens (medians, interleaved with raw runs): tokenize ${f1(s.tokenize)}, queue ${f1(s.queue)}, run ${f1(s.run)}, ` +
        `decode ${f1(s.decode)} → overhead ${f1(e.inproc[128].overheadMs)} ms = ${pct(e.inproc[128].overheadMs, e.raw[128].median)} of raw.`);
      out();
    }
  }

  // --- HTTP latency
  out("## Latency over HTTP (one client, sequential)");
  out();
  for (const model of [MINILM, TINY]) {
    out(`### ${model}`);
    out();
    out("| server | 16 tok p50 / p99 | 128 tok p50 / p99 | 384 tok p50 / p99 | Server-Timing at 128 tok: tokenize / queue / run / decode | overhead at 128 tok (client − server run) |");
    out("|---|---|---|---|---|---|");
    for (const s of servers) {
      const l = s.latency[model];
      if (!l) continue;
      const cell = (len: number) => (l[len] ? `${f1(l[len].median)} / ${f1(l[len].p99)}` : "–");
      const sp = l[128].split;
      out(`| ${s.name} | ${cell(16)} | ${cell(128)} | ${cell(384)} | ${sp ? `${f1(sp.tokenize)} / ${f1(sp.queue)} / ${f1(sp.run)} / ${f1(sp.decode)}` : "–"} | ${sp ? `${f1(l[128].overheadMs)} ms` : "–"} |`);
    }
    out();
  }

  // --- load
  out("## Throughput under concurrent clients");
  out();
  out(`Each level: ${PLAN[MINILM].loadSeconds} s (minilm) / ${PLAN[TINY].loadSeconds} s (tiny) per server in ${ROUNDS} rounds (one client: ${roundsFor(1)} shorter ones), the servers taking turns in a shuffled order (so that the machine's noise falls on all alike), at most ${MAX_ROUND_REQUESTS} requests per round, after one warm-up request per client. ` +
    "\"merged\" is the median number of requests per session.run (bert-edge's Server-Timing).");
  out();
  for (const model of [MINILM, TINY]) {
    for (const len of LOAD_LENGTHS) {
      if (!servers[0].load[model]?.[len]) continue;
      out(`### ${model}, ${len} tokens`);
      out();
      out(`| server | ${CLIENTS.map((c) => `${c} client${c > 1 ? "s" : ""}: req/s, p50 / p99`).join(" | ")} | merged at 16 |`);
      out(`|---|${CLIENTS.map(() => "---").join("|")}|---|`);
      for (const s of servers) {
        const rows = s.load[model]?.[len];
        if (!rows) continue;
        out(`| ${s.name} | ${rows.map((r) => `${f1(r.rps)}, ${f1(r.p50)} / ${f1(r.p99)}${r.errors ? ` (${r.errors} errors)` : ""}`).join(" | ")} | ${f1(rows[2].merged)} |`);
      }
      out();
    }
  }

  // --- cold start and memory
  out("## Cold start and memory");
  out();
  out("Ready = process start until /health answers (workerd: includes wrangler's bundling); first request = the first inference, with the model only in storage " +
    "(read, session created, run; 16 tokens). Peak RSS = VmHWM of the server process (workerd: the workerd process) after the whole run; wasm heap = " +
    "onnxruntime-web's WebAssembly memory at the end (it never shrinks), both models loaded.");
  out();
  out("| server | ready | first request minilm | first request tiny | peak RSS | wasm heap |");
  out("|---|---|---|---|---|---|");
  for (const s of servers.filter((x) => x.impl !== "raw")) out(`| ${s.name} | ${f1(s.readyMs)} | ${f1(s.cold[MINILM])} | ${f1(s.cold[TINY])} | ${mib(s.peakRss)} | ${mib(s.wasmHeap)} |`);
  out();

  // --- int8 merge shift
  out("## int8 answers when requests are merged");
  out();
  out("Dynamic int8 quantization computes each activation's scale over the whole batch, so a request merged with others is computed with slightly " +
    "different scales than alone. 16 distinct requests, solo vs merged into one run (and, for scale, the int8 graph vs its fp32 original on the same inputs):");
  out();
  out("| model | engine | tokens | max Δ logit merged vs solo | max Δ score | top label changed | max Δ logit int8 vs fp32 | top label int8 ≠ fp32 |");
  out("|---|---|---|---|---|---|---|---|");
  for (const model of [MINILM, TINY]) {
    for (const [key, e] of Object.entries(engines[model])) {
      if (!e.int8Merge) continue;
      for (const [len, m] of Object.entries(e.int8Merge as Record<string, Record<string, number>>)) {
        out(`| ${model} | ${key} | ${len} | ${m.maxLogitDiff.toExponential(2)} | ${m.maxScoreDiff.toExponential(2)} | ${m.flips} / ${m.requests} | ${m.fp32MaxLogitDiff?.toExponential(2) ?? "–"} | ${m.fp32Flips ?? "–"} / ${m.requests} |`);
      }
    }
  }
  out();
  out("fp32 graphs: merged answers equal solo answers within 1e-5 (test/queue.test.ts).");
  out();

  // --- targets
  const summary: string[][] = [["target", "backend", "figure", "verdict"]];
  const be = { wasm: byName["bert-edge node wasm"], native: byName["bert-edge node native"], "bert-wasm": byName["bert-edge node bert-wasm"] };
  const off = { wasm: byName["bert-edge node wasm, batching off"], native: byName["bert-edge node native, batching off"] };
  const xen = { wasm: byName["xenova wasm"], native: byName["xenova native"] };
  const bound = (backend: "wasm" | "native", len: number) => 1000 / engines[MINILM][RAW_KEY[backend]].raw[len].median;
  // Overhead: the client's latency less the server's own run (Server-Timing), and bert-edge's share
  // of it: less the same for raw inference behind a bare server (the raw floor).
  // The verdict takes the smaller of the two raw figures: the engine alone (raw table) and the raw
  // floor's run taking turns with the servers, so that a raw run slowed by load cannot pass it.
  const overheadRow = (label: string, l: Latency, rawMs: number, floorMs: number, floorLabel: string, floorRunMs?: number, honoFloorMs?: number) => {
    const own = l.overheadMs! - floorMs;
    const base = Math.min(rawMs, floorRunMs ?? rawMs);
    const inTurns = floorRunMs === undefined ? "" : `; taking turns with the servers, the raw floor's run took ${f1(floorRunMs)} ms, and the own part is ${pct(own, floorRunMs)} of that`;
    const hono = honoFloorMs === undefined ? "" : `; of the own part, Hono + @hono/node-server alone (the Hono floor's (client − run) less the raw floor's) ${f1(honoFloorMs - floorMs)} ms = ${pct(honoFloorMs - floorMs, rawMs)}`;
    summary.push([
      "overhead (HTTP + tokenize + queue + decode) ≤ 5 % of raw run, 128 tok (the smaller raw figure)",
      label,
      `bert-edge's own ${f1(own)} ms = ${pct(own, rawMs)} of raw ${f1(rawMs)} ms (client − server run ${f1(l.overheadMs)} ms, less the ${floorLabel} ${f1(floorMs)} ms${inTurns}${hono}; ` +
        `p50 latency ${f1(l.median)} ms vs raw p50 ${f1(rawMs)} ms: ${pct(l.median - rawMs, rawMs)})`,
      verdict(own <= 0.05 * base),
    ]);
  };
  for (const backend of ["wasm", "native", "bert-wasm"] as const) {
    if (!be[backend] || !byName[floorName(backend)]) continue;
    const floor = byName[floorName(backend)].latency[MINILM][128];
    const honoFloor = byName[honoFloorName(backend)]?.latency[MINILM][128];
    overheadRow(`${backend} (Node HTTP)`, be[backend].latency[MINILM][128], engines[MINILM][RAW_KEY[backend]].raw[128].median, floor.overheadMs!, "raw floor's (client − run)", floor.split?.run, honoFloor?.overheadMs);
  }
  const wd = byName["bert-edge workerd wasm"];
  const wdFloor = byName[WORKERD_FLOOR]?.latency[MINILM][128];
  // Workers serve a plain folder's graphs as they are (no first-token rewrite at load there): held to the full graph's raw run.
  if (wd && wdFloor) overheadRow("wasm (workerd)", wd.latency[MINILM][128], engines[MINILM]["web, 1 thread"].raw[128].median, wdFloor.overheadMs!, "raw floor's (client − run)", wdFloor.split?.run);
  // The own encoder (issue: bert-wasm).
  const own = engines[MINILM]["bert-wasm, 1 thread"], web = engines[MINILM]["web, 1 thread"];
  if (own?.vsWeb) {
    const v = own.vsWeb[128];
    summary.push(["bert-wasm latency ≤ 0.65× onnxruntime-web, 128 tok", "Node (turns in one process)", `${f1(v.bertWasm.median)} vs ${f1(v.web.median)} ms = ${ratio(v.bertWasm.median, v.web.median)}`, verdict(v.bertWasm.median <= 0.65 * v.web.median)]);
  }
  const wOwn = engines[MINILM]["workerd bert-wasm"], wWeb = engines[MINILM]["workerd web, 1 thread"];
  if (wOwn && wWeb) {
    const [a, b] = [wOwn.raw[128].median, wWeb.raw[128].median];
    summary.push(["bert-wasm latency ≤ 0.65× onnxruntime-web, 128 tok", "workerd", `${f1(a)} vs ${f1(b)} ms = ${ratio(a, b)}`, verdict(a <= 0.65 * b)]);
  }
  if (own && web) {
    summary.push(["bert-wasm cold start (bytes → first answer) ≤ 0.1× onnxruntime-web", "Node, fresh process", `${f1(own.coldMs)} vs ${f1(web.coldMs)} ms = ${(own.coldMs / web.coldMs).toFixed(3)}×`, verdict(own.coldMs <= 0.1 * web.coldMs)]);
    if (own.heapAt128 && own.packedBytes) {
      summary.push(["bert-wasm wasm heap ≤ 1.3× packed weights (one 128-token sequence)", "Node", `${mib(own.heapAt128)} for ${(own.packedBytes / 2 ** 20).toFixed(1)} MiB of weights = ${(own.heapAt128 / own.packedBytes).toFixed(2)}×`, verdict(own.heapAt128 <= 1.3 * own.packedBytes)]);
    }
  }
  const bw = byName["bert-edge node bert-wasm"];
  if (bw) {
    for (const len of LOAD_LENGTHS) {
      const a = bw.load[MINILM][len][2].rps;
      const x = xen.wasm.load[MINILM][len][2].rps;
      summary.push([`with bert-wasm vs xenova wasm: ≥ 1.8× req/s at 16 clients, ${len} tok`, "bert-wasm (Node HTTP)", `${f1(a)} vs ${f1(x)} req/s = ${ratio(a, x)}`, verdict(a >= 1.8 * x)]);
    }
  }
  for (const backend of ["wasm", "native"] as const) {
    for (const len of LOAD_LENGTHS) {
      const r = be[backend].load[MINILM][len][2];
      const b = bound(backend, len);
      summary.push([
        `16 clients: req/s ≥ 90 % of engine bound (1 / raw run), p99 ≤ 3× p50, ${len} tok`,
        backend,
        `${f1(r.rps)} req/s vs bound ${f1(b)} (${pct(r.rps, b)}); p99 ${f1(r.p99)} = ${(r.p99 / r.p50).toFixed(2)}× p50`,
        verdict(r.rps >= 0.9 * b && r.p99 <= 3 * r.p50),
      ]);
    }
  }
  for (const backend of ["wasm", "native"] as const) {
    for (const len of LOAD_LENGTHS) {
      const a = be[backend].load[MINILM][len][2].rps;
      const x = xen[backend].load[MINILM][len][2].rps;
      summary.push([`vs xenova: ≥ 1.15× req/s at 16 clients, ${len} tok`, backend, `${f1(a)} vs ${f1(x)} req/s = ${ratio(a, x)}`, verdict(a >= 1.15 * x)]);
    }
  }
  for (const backend of ["native", "wasm"] as const) {
    const on = be[backend].load[MINILM][16][2].rps;
    const o = off[backend].load[MINILM][16][2].rps;
    summary.push([`micro-batching raises req/s at 16 tok, 16 clients${backend === "native" ? " by ≥ 1.3×" : " (reported)"}`, backend, `${f1(on)} vs ${f1(o)} req/s = ${ratio(on, o)}`, backend === "native" ? verdict(on >= 1.3 * o) : "–"]);
    const worst = Math.min(...LOAD_LENGTHS.flatMap((len) => [0, 1, 2].map((i) => be[backend].load[MINILM][len][i].rps / off[backend].load[MINILM][len][i].rps)));
    summary.push(["micro-batching never lowers req/s (min on/off ratio, every level)", backend, ratio(worst, 1), verdict(worst >= 0.95)]);
    // Read where the servers take turns request by request (the latency runs): the one-client load
    // level takes turns in rounds of a second, over which the shared machine's load drifts.
    const lone = LOAD_LENGTHS.map((len) => [be[backend].latency[MINILM][len].median, off[backend].latency[MINILM][len].median]);
    const inRounds = LOAD_LENGTHS.map((len) => `${f1(be[backend].load[MINILM][len][0].p50)} vs ${f1(off[backend].load[MINILM][len][0].p50)}`);
    summary.push([
      "micro-batching: lone request p50 unchanged (one client, on vs off, servers taking turns request by request)",
      backend,
      `${LOAD_LENGTHS.map((len, i) => `${len} tok: ${f1(lone[i][0])} vs ${f1(lone[i][1])} ms`).join("; ")} (the one-client load level, in rounds: ${inRounds.join(" and ")} ms)`,
      verdict(Math.max(...lone.map(([a, b]) => a / b)) <= 1.05),
    ]);
  }
  out("## Notes");
  out();
  out("- The machine is shared (2 cores; other engineers' jobs ran during this run): absolute figures carry their load, and the comparisons are only meaningful " +
    "because every server took turns on the same measurements. The HTTP overhead per request (client latency − the server's own run time) is mostly the " +
    "cost of waking two processes (client and server) on busy cores; in process, bert-edge's tokenize + queue + decode is a fraction of a millisecond (tables above). " +
    "The overhead targets count bert-edge's own share: that overhead less the raw floor's, raw inference behind a bare node:http server (the backend's engine, " +
    "set up as bert-edge sets it up, runs one fixed 128-token input, then a fixed answer goes back), so that loopback, Node's HTTP, the client, and the caches the run " +
    "evicts count on both sides. On workerd the floor is the bench Worker (bench/worker.ts) running onnxruntime-web on a fixed 128-token input through the same wrangler dev chain. " +
    "The Hono floors serve the same run and answer through a Hono app on @hono/node-server (the request's JSON read, as bert-edge reads it): the targets show how much of the own part " +
    "that framework alone takes.");
  out("- \"default threads\" for onnxruntime-node is ORT's default intra-op pool (one thread per core, spinning): onnxruntime-node computes on the JS thread " +
    "(synchronously, inside a setImmediate) plus its pool, whose threads busy-wait between parallel sections and for a while after each run, on cores the load generator " +
    `and the HTTP work share. bert-edge's native backend runs ${NATIVE_THREADS} intra-op thread${NATIVE_THREADS > 1 ? "s" : ""} here, spinning off (README, Speed: ` +
    "what spinning costs in CPU time).");
  out("- Micro-batching on Node: every engine holds the JS thread while it runs (WASM inline, onnxruntime-node inside a setImmediate), so requests that arrive during a run " +
    "are parsed only after it. After a run the queue takes one event-loop turn to let them in; only after a run that merged several requests does it then sleep (no polling; " +
    "each arrival wakes it) while more are on their way, for at most min(2 ms, 10 % of that run) (`gatherMs`, `gatherRatio`). A lone request never waits. " +
    "On Workers, timers belong to the request that set them, so the queue does not wait there: " +
    "it merges only what reached it during the previous run, which with WASM holding the isolate is nearly nothing (\"merged\" = 1 for workerd).");
  out("- int8 merging: the random MiniLM is chaotic (its int8 graph already changes the top label of many inputs against its own fp32 graph), so the shift that " +
    "merging causes is as large as int8's own error there; on the 2-layer fixture it stays below int8's error. With batching on, an int8 model's answer to a " +
    "request depends slightly on what it was merged with (and the response cache keeps the first). `new ModelRegistry(storage, backend, { queue: { batching: false } })` " +
    "turns merging off and keeps the fair queue.");
  out();
  out("## Targets (minilm)");
  out();
  out(`Engine bound = 1 / raw session.run time of one sequence of the graph the server runs (${FIRST_TOKEN.slice(2)}) at the server's thread setting (WASM: 1 thread; native: ${NATIVE_THREADS} intra-op thread${NATIVE_THREADS > 1 ? "s" : ""}${NATIVE_THREADS > 1 ? ", spinning off" : ""}, as the server runs); own overhead is taken against the same run. ` +
    "Overhead = median over requests of (client latency − the server's own run time from Server-Timing); the p50 difference against the separately measured raw run is shown too. " +
    "\"Within noise\" is taken as 5 %.");
  out();
  out(`| ${summary[0].join(" | ")} |`);
  out(`|${summary[0].map(() => "---").join("|")}|`);
  for (const row of summary.slice(1)) out(`| ${row.join(" | ")} |`);
  out();
  return { markdown: lines.join("\n"), summary };
}

// ---------------------------------------------------------------------------------------------

async function main() {
  if (argv.includes("--report-only")) {
    // Rewrites docs/benchmarks.md from the last run's bench/results/latest.json.
    const last = JSON.parse(readFileSync(join(ROOT, "bench/results/latest.json"), "utf8"));
    writeFileSync(join(ROOT, "docs/benchmarks.md"), report(last.engines, last.servers, last.seconds, last.machine ?? describeMachine()).markdown);
    return;
  }
  await prepareModels();
  const engines: Record<string, Record<string, any>> = { [MINILM]: {}, [TINY]: {} };
  const engineConfigs: [string, string[]][] = [
    ["web, 1 thread", ["--runtime", "web", "--threads", "1"]],
    // bert-edge in process beside the raw run of the graph it serves (its last layer pruned to the first token).
    [RAW_KEY.wasm, ["--runtime", "web", "--threads", "1", "--first-token", "--inproc"]],
    ["web, default threads", ["--runtime", "web", "--threads", "default"]],
    ["node, 1 thread", ["--runtime", "node", "--threads", "1"]],
    ...(NATIVE_THREADS === 1 ? [] : [[NATIVE_KEY, ["--runtime", "node", "--threads", String(NATIVE_THREADS), "--spin", "off"]] as [string, string[]]]),
    // The native server's thread setting (NATIVE_THREADS), ORT's default beside it.
    [RAW_KEY.native, ["--runtime", "node", "--threads", String(NATIVE_THREADS), "--spin", "off", "--first-token", "--inproc"]],
    ["node, default threads", ["--runtime", "node", "--threads", "default"]],
    ["bert-wasm, 1 thread", ["--runtime", "bert-wasm", "--threads", "1"]],
  ];
  for (const model of [MINILM, TINY]) {
    for (const [key, args] of engineConfigs) {
      log(`engine ${key}: ${model}`);
      engines[model][key] = await runChild(["bench/engine.ts", ...args, "--model", join(MODELS_DIR, model), "--iters", PLAN[model].iters.join(",")]);
    }
  }
  const running: Running[] = [];
  const node = (impl: string, backend: string, batching = true) => () =>
    startNodeServer(["--impl", impl, "--backend", backend, "--models", MODELS_DIR, "--batching", batching ? "on" : "off"]);
  let cleanup = () => {};
  try {
    running.push(await startAndCold("bert-edge node wasm", { impl: "bert-edge", backend: "wasm", batching: true }, node("bert-edge", "wasm")));
    running.push(await startAndCold("bert-edge node wasm, batching off", { impl: "bert-edge", backend: "wasm", batching: false }, node("bert-edge", "wasm", false)));
    running.push(await startAndCold("bert-edge node bert-wasm", { impl: "bert-edge", backend: "bert-wasm", batching: true }, node("bert-edge", "bert-wasm")));
    running.push(await startAndCold("bert-edge node native", { impl: "bert-edge", backend: "native", batching: true }, node("bert-edge", "native")));
    running.push(await startAndCold("bert-edge node native, batching off", { impl: "bert-edge", backend: "native", batching: false }, node("bert-edge", "native", false)));
    if (WORKERD) {
      running.push(
        await startAndCold("bert-edge workerd wasm", { impl: "bert-edge", backend: "wasm", batching: true }, async () => {
          const w = await startWorkerd();
          cleanup = w.cleanup;
          return w;
        }),
      );
      const workerd = running.at(-1)!.server;
      const url = workerd.url;
      // The same workerd process serves its raw floor.
      running.push(rawFloor(WORKERD_FLOOR, "wasm", { ...workerd, url: `${url}/__bench/raw` }));
      for (const model of [MINILM, TINY]) {
        log(`workerd engines: ${model}`);
        Object.assign(engines[model], await workerdEngines(url, model));
      }
    }
    running.push(await startAndCold("xenova wasm", { impl: "xenova", backend: "wasm", batching: false }, node("xenova", "wasm")));
    running.push(await startAndCold("xenova native", { impl: "xenova", backend: "native", batching: false }, node("xenova", "native")));
    for (const backend of ["native", "wasm", "bert-wasm"] as const) {
      log(`${floorName(backend)}: starting`);
      running.push(rawFloor(floorName(backend), backend, await startNodeServer(["--impl", "raw", "--backend", backend, "--models", MODELS_DIR, "--model", MINILM])));
      log(`${honoFloorName(backend)}: starting`);
      running.push(rawFloor(honoFloorName(backend), backend, await startNodeServer(["--impl", "hono-raw", "--backend", backend, "--models", MODELS_DIR, "--model", MINILM])));
    }
    await measure(running);
  } finally {
    closeAgents();
    for (const { server } of running) killGroup(server.child);
    cleanup();
  }
  const servers = running.map((r) => r.result);

  const seconds = (performance.now() - tStart) / 1000;
  const machine = describeMachine();
  const { markdown, summary } = report(engines, servers, seconds, machine);
  mkdirSync(join(ROOT, "bench/results"), { recursive: true });
  writeFileSync(join(ROOT, "bench/results/latest.json"), JSON.stringify({ quick: QUICK, seconds, machine, engines, servers }, null, 2));
  writeFileSync(join(ROOT, "docs/benchmarks.md"), markdown);
  console.log("\n" + summary.map((r) => r.join("  |  ")).join("\n"));
  console.log(`\nwrote docs/benchmarks.md and bench/results/latest.json (${seconds.toFixed(0)} s)`);
}

main().then(
  () => process.exit(0),
  (err) => {
    console.error(err);
    process.exit(1);
  },
);
