/**
 * One engine configuration in its own process: raw onnxruntime `session.run` latency (web or node, at
 * a given intra-op thread count) or bert-wasm's (our own int8 encoder, on the same int8 graph packed
 * with packBertWasm), and optionally bert-edge's text-classification task called in process on the
 * same model file, plus the int8 shift that merging requests causes. Also the cold start of this
 * fresh process: model bytes in memory → session → first answer (16 tokens).
 *
 *   tsx bench/engine.ts --runtime web|node|bert-wasm --threads 1|N|default [--spin on|off] [--first-token] --model DIR [--inproc] [--iters 30,20,8]

With `--runtime bert-wasm`, an onnxruntime-web session (1 thread) on the same graph runs too, taking
turns with bert-wasm run by run (`vsWeb`): the ratio of the two comes from one process under the same
load (after the cold start and heap figures, which are bert-wasm's alone).
 *
 * (`--spin off`: onnxruntime-node's pool threads sleep between parallel sections, as bert-edge's native
 * backend runs them; ORT's default, and this script's, is on.)
 *
 * Prints one line `RESULT {json}`.
 */
import { basename, dirname } from "node:path";
import { parseArgs } from "node:util";
import { batchOf as batchOfTexts, firstTokenBytes, loadTokenizer, median, p99, peakRss, type RawRuntime, rawEngine, textsOfLength, watchWasmMemory } from "./lib.ts";

const wasmHeap = watchWasmMemory();
const { values } = parseArgs({
  options: {
    runtime: { type: "string", default: "web" },
    threads: { type: "string", default: "1" },
    model: { type: "string" },
    inproc: { type: "boolean", default: false },
    iters: { type: "string", default: "30,20,8" },
    lengths: { type: "string", default: "16,128,384" },
    spin: { type: "string", default: "on" },
    "first-token": { type: "boolean", default: false },
  },
});
const modelDir = values.model!;
const lengths = values.lengths!.split(",").map(Number);
const iters = values.iters!.split(",").map(Number);
const threads = values.threads === "default" ? undefined : Number(values.threads);
const { readFileSync } = await import("node:fs");
const graph = readFileSync(`${modelDir}/onnx/model_quantized.onnx`);
const bertWasm = values.runtime === "bert-wasm";
const engine = await rawEngine(values.runtime as RawRuntime, threads, values.spin !== "off");
const tokenizer = loadTokenizer(modelDir);
const batchOf = (texts: string[]) => batchOfTexts(tokenizer, texts);

// Cold start: bytes in memory → session → first answer, in this fresh process (module compile included).
// bert-wasm's weights are packed beforehand, as `bert-edge pack` does offline.
const { packBertWasm } = await import("../src/engine/backends/bert-wasm/pack.ts");
// --first-token: the graph as bert-edge's native and wasm backends serve it (src/engine/first-token.ts).
const modelBytes = bertWasm ? packBertWasm(graph) : values["first-token"] ? await firstTokenBytes(graph) : graph;
const packedBytes = bertWasm ? modelBytes.byteLength : undefined;
const coldBatch = batchOf(textsOfLength(tokenizer, 16, 1, 16));
const t0 = performance.now();
const session = await engine.open(modelBytes);
await session.run(coldBatch);
const coldMs = performance.now() - t0;
const bertWasmHeap = () => session.memoryBytes ?? 0;
const effectiveThreads = engine.threads();

type Stat = { median: number; p99: number; n: number };
const stat = (ms: number[]): Stat => ({ median: median(ms), p99: p99(ms), n: ms.length });

async function time(fn: () => Promise<unknown>, n: number, warm = 3) {
  for (let i = 0; i < warm; i++) await fn();
  const ms: number[] = [];
  for (let i = 0; i < n; i++) {
    const start = performance.now();
    await fn();
    ms.push(performance.now() - start);
  }
  return stat(ms);
}

// bert-edge in process, on the same model file, through the registry (queue included).
const inprocModel = values.inproc ? await loadInProcess() : undefined;
async function loadInProcess() {
  const { ModelRegistry } = await import("../src/engine/registry.ts");
  const { FolderStorage } = await import("../src/storage/fs.ts");
  const { createBackend } = await import("../src/runtimes/backends.ts");
  const registry = new ModelRegistry(new FolderStorage(dirname(modelDir)), await createBackend(values.runtime === "web" ? "wasm" : values.runtime === "bert-wasm" ? "bert-wasm" : "native", threads, { spinning: values.spin !== "off" }));
  return registry.get(basename(modelDir));
}
const { textClassification } = await import("../src/tasks/text-classification.ts");
const { timedModel } = await import("../src/http/app.ts");

// bert-wasm's comparison partner, interleaved run by run (created after the cold start above).
const webPartner = bertWasm ? await (await rawEngine("web", 1)).open(graph) : undefined;
const vsWeb: Record<number, { bertWasm: Stat; web: Stat }> = {};

const raw: Record<number, Stat> = {};
/** Wasm heap right after the single 128-token runs (before the batch of 16 × 128). */
let heapAt128: number | undefined;
const batched: Record<number, number> = {};
const inproc: Record<number, Stat & { split: Record<string, number>; overheadMs: number }> = {};
for (const [k, len] of lengths.entries()) {
  const one = batchOf(textsOfLength(tokenizer, len, 1, len));
  const texts = textsOfLength(tokenizer, len, 8, len + 2);
  // Raw and in-process interleaved, one of each per round, so that noise hits both alike.
  const rawMs: number[] = [];
  const webMs: number[] = [];
  const taskMs: number[] = [];
  const splits: Record<string, number[]> = { tokenize: [], queue: [], run: [], decode: [] };
  const rounds = iters[k] + 2;
  for (let i = 0; i < rounds; i++) {
    let start = performance.now();
    await session.run(one);
    if (i >= 2) rawMs.push(performance.now() - start);
    if (webPartner) {
      start = performance.now();
      await webPartner.run(one);
      if (i >= 2) webMs.push(performance.now() - start);
    }
    if (!inprocModel) continue;
    const timed = timedModel(inprocModel);
    start = performance.now();
    await textClassification.run(timed.model, texts[i % texts.length], {});
    const total = performance.now() - start;
    if (i < 2) continue;
    taskMs.push(total);
    for (const key of ["tokenize", "queue", "run"] as const) splits[key].push(timed.spent[key]);
    splits.decode.push(total - timed.spent.tokenize - timed.spent.queue - timed.spent.run);
  }
  raw[len] = stat(rawMs);
  if (len === 128 && bertWasm) heapAt128 = bertWasmHeap();
  if (webPartner) vsWeb[len] = { bertWasm: raw[len], web: stat(webMs) };
  if (inprocModel) {
    const split = Object.fromEntries(Object.entries(splits).map(([key, xs]) => [key, median(xs)]));
    inproc[len] = { ...stat(taskMs), split, overheadMs: split.tokenize + split.queue + split.decode };
  }
  if (len <= 128) {
    // Per-sequence time when 16 sequences go in one run: the ceiling micro-batching can reach.
    const sixteen = batchOf(textsOfLength(tokenizer, len, 16, len + 1));
    batched[len] = (await time(() => session.run(sixteen), Math.max(3, Math.ceil(iters[k] / 4)), 1)).median / 16;
  }
}

let int8Merge: Record<number, Record<string, number>> | undefined;
if (inprocModel) {
  const { padBatch } = await import("../src/engine/batch.ts");
  const { softmax } = await import("../src/tasks/math.ts");
  const { existsSync } = await import("node:fs");
  const fp32Path = `${modelDir}/onnx/model.onnx`;
  const fp32 = existsSync(fp32Path) ? await engine.open(readFileSync(fp32Path)) : undefined;
  // int8 dynamic quantization scales activations per tensor over the whole batch: a request
  // merged with others gets slightly different numbers. Solo vs merged, 16 requests; and, for
  // scale, int8 vs the fp32 graph on the same inputs.
  int8Merge = {};
  const argmax = (xs: ArrayLike<number>) => Array.from(xs).indexOf(Math.max(...Array.from(xs)));
  const diff = (a: ArrayLike<number>, b: ArrayLike<number>) => Math.max(...Array.from(a, (x, j) => Math.abs(x - b[j])));
  for (const len of [16, 128]) {
    const texts = textsOfLength(tokenizer, len, 16, len + 3);
    const batches = texts.map((t) => padBatch([inprocModel.tokenizer.encode(t)[0]], inprocModel.tokenizer.padTokenId));
    const solo = [];
    for (const b of batches) solo.push((await inprocModel.run(b)).logits.data);
    const blocker = inprocModel.run(batches[0]);
    const merged = (await Promise.all(batches.map((b) => inprocModel.run(b)))).map((o) => o.logits.data);
    await blocker;
    const ref = fp32 ? await Promise.all(texts.map(async (t) => (await fp32.run(batchOf([t]))).logits.data as Float32Array)) : undefined;
    const r: Record<string, number> = { requests: texts.length, maxScoreDiff: 0, maxLogitDiff: 0, flips: 0 };
    solo.forEach((s, i) => {
      r.maxScoreDiff = Math.max(r.maxScoreDiff, diff(softmax(s), softmax(merged[i])));
      r.maxLogitDiff = Math.max(r.maxLogitDiff, diff(s, merged[i]));
      if (argmax(s) !== argmax(merged[i])) r.flips++;
      if (ref) {
        r.fp32MaxScoreDiff = Math.max(r.fp32MaxScoreDiff ?? 0, diff(softmax(s), softmax(ref[i])));
        r.fp32MaxLogitDiff = Math.max(r.fp32MaxLogitDiff ?? 0, diff(s, ref[i]));
        r.fp32Flips = (r.fp32Flips ?? 0) + (argmax(s) !== argmax(ref[i]) ? 1 : 0);
      }
    });
    int8Merge[len] = r;
  }
}
await session.release();
await webPartner?.release();

console.log(
  "RESULT " +
    JSON.stringify({ runtime: values.runtime, threads: effectiveThreads, coldMs, packedBytes, heapAt128, raw, vsWeb: webPartner ? vsWeb : undefined, batched, inproc: inprocModel ? inproc : undefined, int8Merge, peakRss: peakRss(), wasmHeap: bertWasm ? bertWasmHeap() : wasmHeap() }),
);
process.exit(0);
