/**
 * What both Workers entries share (workers.ts with onnxruntime-web, workers-bert-wasm.ts without it):
 * the bindings and variables they read, bert-wasm's precompiled kernels, and the app built once per
 * isolate around a backend. Nothing here imports onnxruntime-web.
 */
import type { Backend } from "../engine/backend.ts";
import { createBertWasmBackend } from "../engine/backends/bert-wasm/index.ts";
import bertRelaxed from "../engine/backends/bert-wasm/bert-relaxed.wasm";
import bertSimd128 from "../engine/backends/bert-wasm/bert-simd128.wasm";
import { DEFAULT_MEMORY_BUDGET, ModelRegistry } from "../engine/registry.ts";
import { createApp } from "../http/app.ts";
import { CacheApiCache } from "../http/cache-api.ts";
import { type R2BucketLike, R2Storage } from "../storage/r2.ts";

export interface Env {
  MODELS: R2BucketLike;
  /** Optional memory budget for loaded models, in MiB (default keeps the isolate under 128 MB). */
  MEMORY_BUDGET_MB?: string;
  /**
   * workers.ts only. "bert-wasm" (default): bert-edge's own int8 encoder for models packed with
   * `bert-edge pack --bert-wasm` (no ONNX conversion here: protobufjs code generation is not allowed
   * in workerd), onnxruntime-web with a log line for the others. "wasm": onnxruntime-web for every model.
   */
  BACKEND?: string;
  /** "off": no response cache (answers are not kept in caches.default). */
  RESPONSE_CACHE?: string;
}

/** bert-wasm on the kernel modules wrangler precompiles (the CompiledWasm rule). */
export const bertWasmKernels = () => createBertWasmBackend(bertSimd128, { relaxed: bertRelaxed });

/** A Workers `fetch` handler: the app is built on the first request, when the bindings are known. */
export function workersHandler(backendFor: (env: Env) => Backend) {
  let app: ReturnType<typeof createApp> | undefined;
  return {
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
}
