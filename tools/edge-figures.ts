/**
 * Memory and size figures for the edge (issue: "at the edge"): onnxruntime-web's wasm heap plus JS
 * buffers after loading a model, in both weight layouts (one .onnx, or weights as ONNX external data
 * written by `bert-edge pack`), the cold-start split (storage read + verify, session creation, first
 * run), and the Workers bundle size from `wrangler deploy --dry-run`.
 *
 *   npx tsx tools/edge-figures.ts            # prints a table and writes docs/edge-figures.md
 *
 * Each measurement runs in a fresh process: a wasm heap grows but never shrinks.
 */
import { execFileSync } from "node:child_process";
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { gzipSync } from "node:zlib";
import { fileURLToPath } from "node:url";

const ROOT = fileURLToPath(new URL("..", import.meta.url));
const MiB = 2 ** 20;

interface Measurement {
  weightBytes: number;
  wasmHeap: number;
  jsBuffers: number;
  readMs: number;
  sessionMs: number;
  firstRunMs: number;
}

/** In a child process: load one model through the registry on onnxruntime-web (or bert-wasm) and measure. */
async function measure(storageRoot: string, id: string, backendName: "wasm" | "bert-wasm" = "wasm"): Promise<Measurement> {
  const memories = new Set<WebAssembly.Memory>();
  const instantiate = WebAssembly.instantiate.bind(WebAssembly);
  // Find ORT's wasm memory: it is the only one, created when ORT instantiates its module.
  WebAssembly.instantiate = (async (source: never, imports?: WebAssembly.Imports) => {
    const result = (await instantiate(source, imports)) as WebAssembly.WebAssemblyInstantiatedSource | WebAssembly.Instance;
    const instance = "instance" in result ? result.instance : result;
    for (const value of [...Object.values(instance.exports), ...Object.values(imports ?? {}).flatMap((m) => Object.values(m))]) {
      if (value instanceof WebAssembly.Memory) memories.add(value);
    }
    return result;
  }) as typeof WebAssembly.instantiate;

  const { createBackend } = await import("../src/runtimes/backends.ts");
  const { FolderStorage } = await import("../src/storage/fs.ts");
  const { ModelRegistry } = await import("../src/engine/registry.ts");
  const { textClassification } = await import("../src/tasks/text-classification.ts");
  const backend = await createBackend(backendName);
  const storage = new FolderStorage(storageRoot);
  let readMs = 0;
  let weightBytes = 0;
  const get = storage.get.bind(storage);
  storage.get = async (key) => {
    const t0 = performance.now();
    const bytes = await get(key);
    readMs += performance.now() - t0;
    if (/\.onnx(_data)?$|\/bert-wasm\/model\.bin$/.test(key)) weightBytes += bytes?.byteLength ?? 0;
    return bytes;
  };
  let sessionMs = 0;
  const createSession = backend.createSession.bind(backend);
  backend.createSession = async (model, data) => {
    const t0 = performance.now();
    const session = await createSession(model, data);
    sessionMs = performance.now() - t0;
    return session;
  };
  const registry = new ModelRegistry(storage, backend);
  const t0 = performance.now();
  const model = await registry.get(id);
  const loadMs = performance.now() - t0;
  const t1 = performance.now();
  await textClassification.run(model, "A first request after a cold start.", {});
  const firstRunMs = performance.now() - t1;
  // Backing stores are freed some time after their buffers are collected: collect until it settles.
  const gc = (globalThis as { gc?: () => void }).gc!;
  for (let i = 0; i < 5; i++) {
    gc();
    await new Promise((ok) => setTimeout(ok, 100));
  }
  const wasmHeap = [...memories].reduce((sum, m) => sum + m.buffer.byteLength, 0);
  // Read and verify time is the load minus session creation (reads run concurrently, so their sum overstates).
  return { weightBytes, wasmHeap, jsBuffers: process.memoryUsage().arrayBuffers, readMs: loadMs - sessionMs, sessionMs, firstRunMs };
}

function measureInChild(storageRoot: string, id: string, backend = "wasm"): Measurement {
  const out = execFileSync(process.execPath, ["--expose-gc", "--import", "tsx", fileURLToPath(import.meta.url), "--measure", storageRoot, id, backend], {
    cwd: ROOT,
    encoding: "utf8",
  });
  return JSON.parse(out.trim().split("\n").at(-1)!);
}

function bundleSize(config = "wrangler.toml") {
  const out = mkdtempSync(join(tmpdir(), "bert-edge-bundle-"));
  try {
    execFileSync("npx", ["wrangler", "deploy", "--dry-run", "--outdir", out, "-c", config], {
      cwd: ROOT,
      env: { ...process.env, WRANGLER_SEND_METRICS: "false", CI: "true", XDG_CONFIG_HOME: join(out, ".xdg") },
      stdio: "pipe",
    });
    const files = readdirSync(out).filter((f) => statSync(join(out, f)).isFile());
    const raw = files.reduce((s, f) => s + statSync(join(out, f)).size, 0);
    const gzip = files.reduce((s, f) => s + gzipSync(readFileSync(join(out, f)), { level: 9 }).byteLength, 0);
    return { files, raw, gzip };
  } finally {
    rmSync(out, { recursive: true, force: true });
  }
}

async function main() {
  if (process.argv[2] === "--measure") {
    console.log(JSON.stringify(await measure(process.argv[3], process.argv[4], process.argv[5] as "wasm" | "bert-wasm")));
    return;
  }
  const minilm = join(ROOT, "bench/models/minilm-l6-sentiment");
  if (!existsSync(join(minilm, "onnx/model_quantized.onnx"))) {
    console.error("generating the MiniLM-shaped model (bench/make-minilm.py)…");
    execFileSync("/usr/bin/python3", [join(ROOT, "bench/make-minilm.py")], { stdio: "inherit" });
  }
  const { packModel } = await import("../src/cli/pack.ts");
  const packed = mkdtempSync(join(tmpdir(), "bert-edge-packed-"));
  const models = [
    { name: "fixture tiny-bert-sentiment (hidden 32, 2 layers)", dir: join(ROOT, "models/fixtures/tiny-bert-sentiment") },
    { name: "MiniLM-L6-shaped (hidden 384, 6 layers)", dir: minilm },
  ];
  const rows: string[] = [];
  const coldRatios: string[] = [];
  for (const { name, dir } of models) {
    const id = dir.split("/").at(-1)!;
    await packModel(dir, packed, { id, version: "v1", bertWasm: true, log: () => {} });
    const root = dir.slice(0, -id.length - 1);
    const coldStart: Record<string, number> = {};
    for (const [engine, layout, storageRoot, backend] of [
      ["onnxruntime-web", "one .onnx", root, "wasm"],
      ["onnxruntime-web", "external data (packed)", packed, "wasm"],
      ["bert-wasm", "bert-wasm/model.bin (pack --bert-wasm)", packed, "bert-wasm"],
    ]) {
      const m = measureInChild(storageRoot, id, backend);
      const total = m.wasmHeap + m.jsBuffers;
      coldStart[layout] = m.sessionMs + m.firstRunMs;
      rows.push(
        `| ${name} | ${engine} | ${layout} | ${(m.weightBytes / MiB).toFixed(2)} | ${(m.wasmHeap / MiB).toFixed(1)} | ${(m.jsBuffers / MiB).toFixed(1)} | ${(total / MiB).toFixed(1)} | ${(total / m.weightBytes).toFixed(2)}× | ${m.readMs.toFixed(0)} | ${m.sessionMs.toFixed(0)} | ${m.firstRunMs.toFixed(0)} | ${(m.sessionMs + m.firstRunMs).toFixed(0)} |`,
      );
    }
    const own = coldStart["bert-wasm/model.bin (pack --bert-wasm)"], ort = coldStart["external data (packed)"];
    coldRatios.push(`${name}: bert-wasm ${own.toFixed(0)} ms vs onnxruntime-web (external data) ${ort.toFixed(0)} ms = ${(own / ort).toFixed(3)}×`);
  }
  rmSync(packed, { recursive: true, force: true });
  const bundle = bundleSize();
  const bertBundle = bundleSize("wrangler.bert-wasm.toml");
  const report = [
    "# Edge memory and size figures",
    "",
    `Produced by \`npx tsx tools/edge-figures.ts\` on ${new Date().toISOString().slice(0, 10)} (Node ${process.version}, onnxruntime-web and bert-wasm, one thread).`,
    "",
    "| model | engine | weight layout | weights MiB | wasm heap MiB | JS buffers MiB | heap + buffers MiB | ÷ weights | read + verify ms | session ms | first run ms | bytes → first answer ms |",
    "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ...rows,
    "",
    "Cold start from object bytes to the first answer (session creation + first run, fresh process; bert-wasm includes compiling its module and the relaxed-SIMD self-test):",
    "",
    ...coldRatios.map((r) => `- ${r}`),
    "",
    "JS buffers are `process.memoryUsage().arrayBuffers` once garbage collection has settled: the model's bytes are not kept once its session exists. Storage is a local folder; on Workers the read is from R2.",
    "",
    `Workers bundle (\`wrangler deploy --dry-run --outdir\`): ${bundle.files.join(", ")} — ${(bundle.raw / MiB).toFixed(2)} MiB raw, ${(bundle.gzip / MiB).toFixed(2)} MiB gzip (limit: 10 MiB gzip on the paid plan, 3 MiB on the free one).`,
    "",
    `bert-wasm-only Workers bundle (\`wrangler deploy --dry-run --outdir -c wrangler.bert-wasm.toml\`, entry src/runtimes/workers-bert-wasm.ts, no onnxruntime-web): ${bertBundle.files.join(", ")} — ${(bertBundle.raw / MiB).toFixed(2)} MiB raw, ${(bertBundle.gzip / MiB).toFixed(2)} MiB gzip (target: ≤ 1 MiB gzip).`,
    "",
  ].join("\n");
  writeFileSync(join(ROOT, "docs/edge-figures.md"), report);
  console.log(report);
}

await main();
