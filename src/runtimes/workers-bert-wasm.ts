/**
 * Cloudflare Workers entry with bert-wasm only: no onnxruntime-web in the bundle (~20× smaller than
 * src/runtimes/workers.ts). Serves models packed with `bert-edge pack --bert-wasm`; a model without a
 * bert-wasm file answers 500 model_load_failed saying so. Deploy with
 * `wrangler deploy -c wrangler.bert-wasm.toml` (same bucket binding, this file as main).
 */
import { BackendError, type Backend } from "../engine/backend.ts";
import { createBertWasmBackend } from "../engine/backends/bert-wasm/index.ts";
import bertRelaxed from "../engine/backends/bert-wasm/bert-relaxed.wasm";
import bertSimd128 from "../engine/backends/bert-wasm/bert-simd128.wasm";
import { BertWasmOrOrt } from "../engine/backends/bert-wasm-or-ort.ts";
import { DEFAULT_MEMORY_BUDGET, ModelRegistry } from "../engine/registry.ts";
import { createApp } from "../http/app.ts";
import { CacheApiCache } from "../http/cache-api.ts";
import { type R2BucketLike, R2Storage } from "../storage/r2.ts";

interface Env {
  MODELS: R2BucketLike;
  MEMORY_BUDGET_MB?: string;
}

const noFallback: Backend = {
  name: "none",
  createSession: () => Promise.reject(new BackendError("this Worker carries only bert-wasm: pack the model with `bert-edge pack --bert-wasm`")),
};

let app: ReturnType<typeof createApp> | undefined;

export default {
  fetch(request: Request, env: Env, ctx: unknown) {
    app ??= createApp({
      registry: new ModelRegistry(new R2Storage(env.MODELS), new BertWasmOrOrt(createBertWasmBackend(bertSimd128, { relaxed: bertRelaxed }), noFallback), {
        memoryBudget: env.MEMORY_BUDGET_MB ? Number(env.MEMORY_BUDGET_MB) * 2 ** 20 : DEFAULT_MEMORY_BUDGET,
      }),
      cache: new CacheApiCache((caches as unknown as { default: Cache }).default),
    });
    return app.fetch(request, env, ctx as never);
  },
};
