/**
 * Cloudflare Workers entry point: hands the R2 binding and onnxruntime-web (WASM) to the shared app.
 *
 * workerd forbids compiling WebAssembly from bytes at run time and gives modules an empty
 * import.meta.url, so ORT's wasm is imported as a precompiled module (the CompiledWasm rule in
 * wrangler.toml) and ORT's own `WebAssembly.instantiate(bytes, imports)` call is redirected to it.
 * This leans on ORT internals: onnxruntime-web is pinned to an exact version and a test runs it in workerd.
 */
import * as ort from "onnxruntime-web/wasm";
import ortWasm from "../../node_modules/onnxruntime-web/dist/ort-wasm-simd-threaded.wasm";
import type { Backend } from "../engine/backend.ts";
import { createBertWasmBackend } from "../engine/backends/bert-wasm/index.ts";
import bertRelaxed from "../engine/backends/bert-wasm/bert-relaxed.wasm";
import bertSimd128 from "../engine/backends/bert-wasm/bert-simd128.wasm";
import { BertWasmOrOrt } from "../engine/backends/bert-wasm-or-ort.ts";
import { OrtBackend } from "../engine/backends/ort.ts";
import { DEFAULT_MEMORY_BUDGET, ModelRegistry } from "../engine/registry.ts";
import { createApp } from "../http/app.ts";
import { CacheApiCache } from "../http/cache-api.ts";
import { type R2BucketLike, R2Storage } from "../storage/r2.ts";

interface Env {
  MODELS: R2BucketLike;
  /** Optional memory budget for loaded models, in MiB (default keeps the isolate under 128 MB). */
  MEMORY_BUDGET_MB?: string;
  /**
   * "bert-wasm" (default): bert-edge's own int8 encoder for models packed with `bert-edge pack
   * --bert-wasm` (no ONNX conversion here: protobufjs code generation is not allowed in workerd),
   * onnxruntime-web with a log line for the others. "wasm": onnxruntime-web for every model.
   */
  BACKEND?: string;
  /** "off": no response cache (answers are not kept in caches.default). */
  RESPONSE_CACHE?: string;
}

const instantiate = WebAssembly.instantiate.bind(WebAssembly);
WebAssembly.instantiate = ((source: BufferSource | WebAssembly.Module, imports?: WebAssembly.Imports) =>
  source instanceof WebAssembly.Module
    ? instantiate(source, imports)
    : instantiate(ortWasm, imports).then((instance) => ({ instance, module: ortWasm }))) as typeof WebAssembly.instantiate;

ort.env.wasm.numThreads = 1;
ort.env.wasm.proxy = false;
// Any bytes: they are never compiled, the redirect above hands ORT the precompiled module instead.
ort.env.wasm.wasmBinary = new Uint8Array(8);

let app: ReturnType<typeof createApp> | undefined;

function backendFor(env: Env): Backend {
  const ortWeb = new OrtBackend("wasm", ort, { executionProviders: ["wasm"] });
  const name = env.BACKEND ?? "bert-wasm";
  if (name === "wasm") return ortWeb;
  if (name === "bert-wasm") return new BertWasmOrOrt(createBertWasmBackend(bertSimd128, { relaxed: bertRelaxed }), ortWeb);
  throw new Error(`BACKEND=${name}: want wasm or bert-wasm`);
}

export default {
  fetch(request: Request, env: Env, ctx: unknown) {
    app ??= createApp({
      registry: new ModelRegistry(new R2Storage(env.MODELS), backendFor(env), {
        memoryBudget: env.MEMORY_BUDGET_MB ? Number(env.MEMORY_BUDGET_MB) * 2 ** 20 : DEFAULT_MEMORY_BUDGET,
      }),
      cache: env.RESPONSE_CACHE === "off" ? false : new CacheApiCache((caches as unknown as { default: Cache }).default),
    });
    return app.fetch(request, env, ctx as never);
  },
};
