/**
 * Cloudflare Workers entry with bert-wasm only: no onnxruntime-web in the bundle (~20× smaller than
 * src/runtimes/workers.ts). Serves models packed with `bert-edge pack --bert-wasm`; a model without a
 * bert-wasm file answers 500 model_load_failed saying so. Deploy with
 * `wrangler deploy -c wrangler.bert-wasm.toml` (same bucket binding, this file as main).
 */
import { BackendError, type Backend } from "../engine/backend.ts";
import { BertWasmOrOrt } from "../engine/backends/bert-wasm-or-ort.ts";
import { bertWasmKernels, workersHandler } from "./workers-app.ts";

const noFallback: Backend = {
  name: "none",
  createSession: () => Promise.reject(new BackendError("this Worker carries only bert-wasm: pack the model with `bert-edge pack --bert-wasm`")),
};

export default workersHandler(() => new BertWasmOrOrt(bertWasmKernels(), noFallback));
