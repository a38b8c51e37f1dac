/**
 * Evaluates the demo models in models/demo through the HTTP API, exactly as a client would, and
 * compares with the fp32 PyTorch numbers the training script wrote (models/demo/<name>/eval_fp32.json).
 *
 *   npx tsx eval/evaluate.ts [--backend native|wasm] [--models models/demo] [--only sst2,conll03]
 *                            [--batch 32] [--limit N] [--fp32-onnx] [--first-token on|off] [--json eval/results.json]
 *
 * --first-token off serves classifier graphs as exported (no first-token pruning of the last layer).
 * --fp32-onnx also serves onnx/model.onnx (kept out of git; present after tools/train/train.py export)
 * in a second server, to tell quantization loss from export / pipeline differences.
 */
import { existsSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { type BackendName, startServer } from "../src/runtimes/node.ts";
import * as D from "./data.ts";
import * as M from "./metrics.ts";

type Metrics = Record<string, number>;
type Post = (model: string, inputs: unknown[], parameters?: Record<string, unknown>) => Promise<any[]>;

const { values: opts } = parseArgs({
  options: {
    backend: { type: "string", default: "native" },
    models: { type: "string", default: join(D.REPO, "models", "demo") },
    only: { type: "string" },
    batch: { type: "string", default: "32" },
    limit: { type: "string" },
    "fp32-onnx": { type: "boolean", default: false },
    "first-token": { type: "string", default: "on" },
    json: { type: "string" },
  },
});
const BATCH = Number(opts.batch);
const LIMIT = opts.limit ? Number(opts.limit) : Infinity;

async function batched<T>(items: T[], post: (chunk: T[]) => Promise<any[]>): Promise<any[]> {
  const out: any[] = [];
  for (let i = 0; i < items.length; i += BATCH) out.push(...(await post(items.slice(i, i + BATCH))));
  return out;
}

const cap = <T>(xs: T[]) => xs.slice(0, LIMIT);

const TASKS: Record<string, { model: string; metrics: string[]; run: (post: Post, model: string) => Promise<Metrics> }> = {
  sst2: {
    model: "bert-edge-sst2",
    metrics: ["accuracy"],
    async run(post, model) {
      const rows = cap(D.sst2Dev());
      const out = await batched(rows, (c) => post(model, c.map((r) => r.text)));
      const pred = out.map((scores) => (scores[0].label === "POSITIVE" ? 1 : 0));
      return { n: rows.length, accuracy: M.accuracy(pred, rows.map((r) => r.label)) };
    },
  },
  mrpc: {
    model: "bert-edge-mrpc",
    metrics: ["accuracy", "f1"],
    async run(post, model) {
      const rows = cap(D.mrpcTest());
      const out = await batched(rows, (c) => post(model, c.map(({ text, text_pair }) => ({ text, text_pair }))));
      const pred = out.map((scores) => (scores[0].label === "equivalent" ? 1 : 0));
      const gold = rows.map((r) => r.label);
      return { n: rows.length, accuracy: M.accuracy(pred, gold), f1: M.binaryF1(pred, gold) };
    },
  },
  conll03: {
    model: "bert-edge-conll03",
    metrics: ["precision", "recall", "f1"],
    async run(post, model) {
      const sents = cap(D.conllTest());
      const out = await batched(sents, (c) => post(model, c.map((s) => s.words.join(" ")), { aggregation_strategy: "first" }));
      const pred = out.map((ents, i) => M.entitiesToWordSpans(ents, M.wordSpans(sents[i].words)));
      return { n: sents.length, ...M.entityPRF(pred, sents.map((s) => M.bioSpans(s.tags))) };
    },
  },
  squad: {
    model: "bert-edge-squad",
    metrics: ["exact_match", "f1"],
    async run(post, model) {
      const rows = cap(D.squadHeldOut());
      const out = await batched(rows, (c) => post(model, c.map(({ question, context }) => ({ question, context }))));
      let em = 0, f1 = 0;
      out.forEach((a, i) => {
        em += M.squadEM(a.answer, rows[i].answers);
        f1 += M.squadF1(a.answer, rows[i].answers);
      });
      return { n: rows.length, exact_match: em / rows.length, f1: f1 / rows.length };
    },
  },
  codah: {
    model: "bert-edge-codah",
    metrics: ["accuracy"],
    async run(post, model) {
      const rows = cap(D.codahHeldOut());
      const out = await batched(rows, (c) => post(model, c.map(({ prompt, choices }) => ({ prompt, choices }))));
      return { n: rows.length, accuracy: M.accuracy(out.map((r) => r[0].index), rows.map((r) => r.label)) };
    },
  },
  mlm: {
    model: "bert-edge-mlm",
    metrics: ["top1", "top5"],
    async run(post, model) {
      const vocab = JSON.parse(readFileSync(join(opts.models!, model, "tokenizer.json"), "utf8")).model.vocab;
      const items = cap(D.fillMaskItems(vocab));
      const out = await batched(items, (c) => post(model, c.map((x) => x.text), { top_k: 5 }));
      let top1 = 0, top5 = 0;
      out.forEach((preds, i) => {
        const words = preds.map((p: any) => p.token_str);
        top1 += Number(words[0] === items[i].target);
        top5 += Number(words.includes(items[i].target));
      });
      return { n: items.length, top1: top1 / items.length, top5: top5 / items.length };
    },
  },
};

async function serve(preferQuantized: boolean) {
  const server = await startServer({ models: opts.models!, port: 0, backend: opts.backend as BackendName, preferQuantized, firstToken: opts["first-token"] !== "off" });
  const base = `http://127.0.0.1:${server.port}`;
  const post: Post = async (model, inputs, parameters) => {
    const res = await fetch(`${base}/models/${model}`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify(parameters ? { inputs, parameters } : { inputs }),
    });
    const body = await res.json();
    if (res.status !== 200) throw new Error(`${model}: HTTP ${res.status} ${JSON.stringify(body)}`);
    if (!Array.isArray(body) || body.length !== inputs.length) throw new Error(`${model}: ${inputs.length} inputs, answer ${JSON.stringify(body).slice(0, 200)}`);
    return body;
  };
  return { server, post };
}

const fmt = (x: number | undefined) => (x === undefined || Number.isNaN(x) ? "–" : (100 * x).toFixed(2));

async function main() {
  const names = opts.only ? opts.only.split(",") : Object.keys(TASKS);
  const int8 = await serve(true);
  const fp32 = opts["fp32-onnx"] ? await serve(false) : null;
  const rows: string[][] = [];
  const results: Record<string, unknown> = {};
  try {
    for (const name of names) {
      const task = TASKS[name];
      if (!task) throw new Error(`unknown task ${name}; one of ${Object.keys(TASKS).join(", ")}`);
      const folder = join(opts.models!, task.model);
      if (!existsSync(folder)) {
        console.error(`skip ${name}: ${folder} missing`);
        continue;
      }
      const refPath = join(folder, "eval_fp32.json");
      const ref: Metrics = existsSync(refPath) ? JSON.parse(readFileSync(refPath, "utf8")) : {};
      const t0 = performance.now();
      const served = await task.run(int8.post, task.model);
      const seconds = (performance.now() - t0) / 1000;
      const onnx32 = fp32 ? await task.run(fp32.post, task.model) : null;
      if (ref.n !== undefined && ref.n !== served.n && LIMIT === Infinity) console.error(`warning: ${name}: fp32 n=${ref.n}, served n=${served.n}`);
      results[name] = { model: task.model, fp32_pytorch: ref, int8_served: served, fp32_onnx_served: onnx32, seconds };
      for (const m of task.metrics) {
        const d = ref[m] !== undefined ? served[m] - ref[m] : NaN;
        const flag = d < -0.01 ? "  <-- int8 drop > 1 pt" : d > 0.01 ? "  (int8 > fp32 by > 1 pt)" : "";
        rows.push([task.model, m, String(served.n), fmt(ref[m]), ...(fp32 ? [fmt(onnx32![m])] : []), fmt(served[m]),
          Number.isNaN(d) ? "–" : `${d >= 0 ? "+" : ""}${(100 * d).toFixed(2)}${flag}`]);
      }
      console.error(`${name}: ${served.n} examples in ${seconds.toFixed(1)} s`);
    }
  } finally {
    await int8.server.close();
    if (fp32) await fp32.server.close();
  }
  const header = ["model", "metric", "n", "fp32 PyTorch", ...(fp32 ? ["fp32 ONNX served"] : []), `int8 served (${opts.backend})`, "difference"];
  const table = [header, header.map(() => "---"), ...rows];
  console.log(table.map((r) => `| ${r.join(" | ")} |`).join("\n"));
  if (opts.json) writeFileSync(opts.json, JSON.stringify(results, null, 1) + "\n");
}

await main();
