/**
 * The own-overhead question of the full bench, alone and with more samples: bert-edge servers and
 * the raw floor taking turns request by request (minilm, one client, 128 tokens), and each one's
 * median (client − server run) less the raw floor's. The Hono floor beside them (the raw floor's run
 * behind a Hono app on @hono/node-server) shows how much of that the framework alone costs.
 * `--tree DIR` adds the same bert-edge server run from another checkout (a git worktree of an older
 * commit), to A/B a change to the request path; `--default-young-gen` adds this tree's server run
 * without SERVER_NODE_FLAGS (V8's own young generation). `--gap MS` idles that long after each round
 * of requests, as servers do in the full bench, where each waits for all the others (the own part is
 * larger there: README, Speed).
 *
 *   tsx bench/overhead.ts [--backend native] [--requests 400] [--tree /tmp/base]... [--default-young-gen] [--gap 100]
 */
import type { ChildProcess } from "node:child_process";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import { loadTokenizer, median, parseServerTiming, post, shuffler, startServe, textSupply } from "./lib.ts";

const ROOT = fileURLToPath(new URL("..", import.meta.url));
const { values } = parseArgs({
  options: {
    backend: { type: "string", default: "native" },
    requests: { type: "string", default: "400" },
    tree: { type: "string", multiple: true, default: [] },
    "default-young-gen": { type: "boolean", default: false },
    gap: { type: "string", default: "0" },
  },
});
const MODEL = "minilm-l6-sentiment";
const MODELS = join(ROOT, "bench/models");
const requests = Number(values.requests);
const gapMs = Number(values.gap);
const tokenizer = loadTokenizer(join(ROOT, "models/fixtures/tiny-bert-sentiment"));
const texts = textSupply(tokenizer, [128], () => requests + 10, 97)(128);

interface Server {
  name: string;
  url: string;
  child: ChildProcess;
}
const servers: Server[] = [];
process.on("exit", () => servers.forEach((s) => process.kill(-s.child.pid!, "SIGKILL")));

async function start(name: string, tree: string, args: string[], nodeFlags?: string[]) {
  const { url, child } = await startServe(args, tree, nodeFlags);
  servers.push({ name, url, child });
}

const edgeArgs = ["--impl", "bert-edge", "--backend", values.backend!, "--models", MODELS];
await start("raw floor", ROOT, ["--impl", "raw", "--backend", values.backend!, "--models", MODELS, "--model", MODEL]);
await start("Hono floor", ROOT, ["--impl", "hono-raw", "--backend", values.backend!, "--models", MODELS, "--model", MODEL]);
await start("bert-edge (this tree)", ROOT, edgeArgs);
for (const tree of values.tree!) await start(`bert-edge (${tree})`, tree, edgeArgs);
if (values["default-young-gen"]) await start("bert-edge (V8's default young gen)", ROOT, edgeArgs, []);

const order = shuffler(11);
const samples = servers.map(() => [] as { ms: number; timing: Record<string, number> }[]);
for (let i = 0; i < requests + 5; i++) {
  for (const s of order(servers.length)) {
    const r = await post(`${servers[s].url}/models/${MODEL}`, JSON.stringify({ inputs: texts[i] }));
    if (r.status !== 200) throw new Error(`${servers[s].name}: ${r.status} ${r.body}`);
    if (i >= 5) samples[s].push({ ms: r.ms, timing: parseServerTiming(r.serverTiming) });
  }
  if (gapMs > 0) await new Promise((ok) => setTimeout(ok, gapMs));
}
const over = samples.map((xs) => median(xs.map((x) => x.ms - x.timing.run)));
const runs = samples.map((xs) => median(xs.map((x) => x.timing.run)));
const floor = over[0];
console.log(`${values.backend}, minilm, 128 tokens, ${requests} requests each, servers taking turns${gapMs ? `, ${gapMs} ms idle after each round` : ""} (ms, medians)`);
servers.forEach((s, k) => {
  const parts = ["tokenize", "queue", "decode"].map((p) => `${p} ${median(samples[k].map((x) => x.timing[p] ?? 0)).toFixed(3)}`).join(", ");
  const own = k === 0 ? "" : `  own ${(over[k] - floor).toFixed(3)} = ${((100 * (over[k] - floor)) / runs[0]).toFixed(1)} % of the floor's run`;
  console.log(`${s.name.padEnd(34)} client − run ${over[k].toFixed(3)}  run ${runs[k].toFixed(2)}${s.name.startsWith("bert-edge") ? `  (${parts})` : ""}${own}`);
});
process.exit(0);
