/**
 * A focused look at one question of the full bench: bert-edge's native (or wasm) server with
 * micro-batching on and off, at given intra-op thread counts, side by side on the minilm model
 * (lone-request latency and its overhead, and req/s under 1 / 4 / 16 clients), with the queue's own
 * counters (runs, merged, time spent gathering). Minutes instead of the full bench's six.
 *
 *   tsx bench/probe.ts [--backend native] [--threads 1,2] [--queues '{}' --queues '{"gatherRatio":0}'] [--seconds 2] [--rounds 2] [--lengths 16,128]
 */
import type { ChildProcess } from "node:child_process";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import { closeAgents, combine, type LoadResult, loadTest, loadTokenizer, median, p99, parseServerTiming, post, textSupply, shuffler, startServe } from "./lib.ts";

const ROOT = fileURLToPath(new URL("..", import.meta.url));
const { values } = parseArgs({
  options: {
    backend: { type: "string", default: "native" },
    threads: { type: "string", default: "1,2" },
    seconds: { type: "string", default: "2" },
    rounds: { type: "string", default: "2" },
    lengths: { type: "string", default: "16,128" },
    clients: { type: "string", default: "1,4,16" },
    lone: { type: "string", default: "60" },
    queues: { type: "string", multiple: true, default: ["{}"] },
  },
});
const MODEL = "minilm-l6-sentiment";
const lengths = values.lengths!.split(",").map(Number);
const clientLevels = values.clients!.split(",").map(Number);
const rounds = Number(values.rounds);
const seconds = Number(values.seconds);
const tokenizer = loadTokenizer(join(ROOT, "models/fixtures/tiny-bert-sentiment"));
const nextTexts = textSupply(tokenizer, lengths, () => 3000, 89);

interface Server {
  name: string;
  url: string;
  child: ChildProcess;
}
async function start(name: string, args: string[]): Promise<Server> {
  const { url, child } = await startServe(args, ROOT);
  const r = await post(`${url}/models/${MODEL}`, JSON.stringify({ inputs: nextTexts(lengths[0])[0] }));
  if (r.status !== 200) throw new Error(`${name}: ${r.status} ${r.body}`);
  return { name, url, child };
}
const stats = async (s: Server) => ((await (await fetch(`${s.url}/__bench?model=${MODEL}`)).json()) as { queue: Record<string, number> }).queue;

const servers: Server[] = [];
process.on("exit", () => servers.forEach((s) => process.kill(-s.child.pid!, "SIGKILL")));
// --threads 1,2 [--queues '{}' '{"gatherRatio":0}']: every thread count × queue variant, batching on, and off beside.
for (const threads of values.threads!.split(",")) {
  for (const queue of [...values.queues!, "off"]) {
    const args = ["--impl", "bert-edge", "--backend", values.backend!, "--models", join(ROOT, "bench/models"), "--batching", queue === "off" ? "off" : "on"];
    if (queue !== "off") args.push("--queue", queue);
    // "2s": 2 threads with ORT's spinning on.
    if (threads.endsWith("s")) args.push("--threads", threads.slice(0, -1), "--spin", "on");
    else if (threads !== "default") args.push("--threads", threads);
    servers.push(await start(`${values.backend} ${threads} thr, ${queue === "off" ? "batching off" : `batching on ${queue}`}`, args));
  }
}
const order = shuffler(7);

const rows: Record<string, Record<string, string>> = Object.fromEntries(servers.map((s) => [s.name, {}]));
for (const len of lengths) {
  const n = len > 64 ? Math.ceil(Number(values.lone) / 3) : Number(values.lone);
  const sample = servers.map(() => [] as { ms: number; run: number; queue: number }[]);
  const t = nextTexts(len);
  for (let i = 0; i < n + 3; i++) {
    for (const s of order(servers.length)) {
      const r = await post(`${servers[s].url}/models/${MODEL}`, JSON.stringify({ inputs: t[i] }));
      const st = parseServerTiming(r.serverTiming);
      if (i >= 3) sample[s].push({ ms: r.ms, run: st.run, queue: st.queue });
    }
  }
  servers.forEach((s, k) => {
    const ms = sample[k].map((x) => x.ms);
    const over = median(sample[k].map((x) => x.ms - x.run));
    rows[s.name][`lone ${len}`] = `p50 ${median(ms).toFixed(2)} p99 ${p99(ms).toFixed(1)} run ${median(sample[k].map((x) => x.run)).toFixed(2)} over ${over.toFixed(2)} q ${median(sample[k].map((x) => x.queue)).toFixed(2)}`;
  });
  for (const clients of clientLevels) {
    const results = servers.map(() => [] as LoadResult[]);
    const before = await Promise.all(servers.map(stats));
    for (let r = 0; r < rounds; r++) {
      for (const s of order(servers.length)) {
        results[s].push(await loadTest(`${servers[s].url}/models/${MODEL}`, nextTexts(len), clients, seconds / rounds, clients * 400));
        closeAgents();
      }
    }
    const after = await Promise.all(servers.map(stats));
    servers.forEach((s, k) => {
      const c = combine(results[k]);
      const runs = after[k].runs - before[k].runs;
      const waited = (after[k].sleepMs ?? 0) - (before[k].sleepMs ?? 0);
      rows[s.name][`${clients}c ${len}`] =
        `${c.rps.toFixed(0)} req/s p50 ${c.p50.toFixed(1)} p99 ${c.p99.toFixed(1)} · ${((after[k].requests - before[k].requests) / runs).toFixed(1)}/run, slept ${(waited / runs).toFixed(2)} ms/run`;
    });
    console.log(`done ${len} tok ${clients} clients`);
  }
}
for (const [name, r] of Object.entries(rows)) {
  console.log(`\n${name}`);
  for (const [k, v] of Object.entries(r)) console.log(`  ${k.padEnd(9)} ${v}`);
}
process.exit(0);
