/**
 * The Workers entry point as deployed (src/runtimes/workers.ts), plus `GET /__bench`: the size of
 * onnxruntime-web's wasm heap, for the benchmark (`wrangler dev bench/worker.ts`); and
 * `GET /__bench/engine?backend=wasm|bert-wasm&model=ID&len=N&runs=R`: R raw engine runs on one
 * sequence of N tokens inside workerd (onnxruntime-web on ID/onnx/model_quantized.onnx, bert-wasm on
 * ID/bert-wasm/model.bin). workerd's clocks stand still during computation, so the client times the
 * request and divides by R; the first request per engine also creates the session. And
 * `POST /__bench/raw/models/ID`: workerd's raw floor (bench/run.ts), onnxruntime-web running ID on one
 * fixed 128-token sequence, then a fixed answer with its run in `Server-Timing`, timed as bert-edge
 * times its own (performance.now around an awaited run, which workerd does advance: 74–75 ms in the
 * bench, as bert-edge's own Server-Timing run).
 */
import * as ort from "onnxruntime-web/wasm";
import type { Batch, Session } from "../src/engine/backend.ts";
import { createBertWasmBackend } from "../src/engine/backends/bert-wasm/index.ts";
import bertRelaxed from "../src/engine/backends/bert-wasm/bert-relaxed.wasm";
import bertSimd128 from "../src/engine/backends/bert-wasm/bert-simd128.wasm";
import { OrtBackend } from "../src/engine/backends/ort.ts";
import worker from "../src/runtimes/workers.ts";
import type { R2BucketLike } from "../src/storage/r2.ts";

const sessions = new Map<string, Promise<Session>>();
async function engineSession(env: { MODELS: R2BucketLike }, backend: string, model: string): Promise<Session> {
  const key = `${backend} ${model}`;
  if (!sessions.has(key)) {
    sessions.set(key, (async () => {
      const path = backend === "bert-wasm" ? `${model}/bert-wasm/model.bin` : `${model}/onnx/model_quantized.onnx`;
      const object = await env.MODELS.get(path);
      if (!object) throw new Error(`no ${path} in R2`);
      const bytes = new Uint8Array(await object.arrayBuffer());
      const engine = backend === "bert-wasm" ? createBertWasmBackend(bertSimd128, { relaxed: bertRelaxed }) : new OrtBackend("wasm", ort, { executionProviders: ["wasm"] });
      return engine.createSession(bytes);
    })());
  }
  return sessions.get(key)!;
}

function batchOf(len: number): Batch {
  const ids = new BigInt64Array(len);
  for (let i = 0; i < len; i++) ids[i] = BigInt(i === 0 ? 101 : i === len - 1 ? 102 : 1000 + ((i * 7919) % 20000));
  return { dims: [1, len], inputIds: ids, attentionMask: new BigInt64Array(len).fill(1n), tokenTypeIds: new BigInt64Array(len) };
}

const memories = new Set<WebAssembly.Memory>();
const instantiate = WebAssembly.instantiate;
const scan = (obj: object) => {
  for (const v of Object.values(obj)) {
    if (v instanceof WebAssembly.Memory) memories.add(v);
    else if (v && typeof v === "object") for (const w of Object.values(v)) if (w instanceof WebAssembly.Memory) memories.add(w);
  }
};
// Wraps workers.ts' own redirect (installed when it was imported, above).
WebAssembly.instantiate = (async (source: BufferSource | WebAssembly.Module, imports?: WebAssembly.Imports) => {
  if (imports) scan(imports);
  const result = (await instantiate(source as never, imports)) as unknown as WebAssembly.Instance | WebAssembly.WebAssemblyInstantiatedSource;
  scan((result instanceof WebAssembly.Instance ? result : result.instance).exports);
  return result;
}) as typeof WebAssembly.instantiate;

export default {
  async fetch(request: Request, env: never, ctx: unknown) {
    const url = new URL(request.url);
    if (url.pathname === "/__bench/engine") {
      const q = url.searchParams;
      const session = await engineSession(env, q.get("backend") ?? "wasm", q.get("model")!);
      const batch = batchOf(Number(q.get("len") ?? 128));
      const runs = Number(q.get("runs") ?? 1);
      for (let i = 0; i < runs; i++) await session.run(batch);
      return Response.json({ ok: true });
    }
    const floor = /^\/__bench\/raw\/models\/(.+)$/.exec(url.pathname);
    if (floor) {
      await request.arrayBuffer();
      const session = await engineSession(env, "wasm", floor[1]);
      const start = performance.now();
      await session.run(batchOf(128));
      return Response.json([{ label: "LABEL_0", score: 1 }], { headers: { "server-timing": `run;dur=${(performance.now() - start).toFixed(3)}` } });
    }
    if (url.pathname === "/__bench") {
      const wasmHeap = [...memories].reduce((sum, m) => sum + m.buffer.byteLength, 0);
      return Response.json({ wasmHeap });
    }
    return worker.fetch(request, env, ctx);
  },
};
