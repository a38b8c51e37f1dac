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
import { BertWasmOrOrt } from "../engine/backends/bert-wasm-or-ort.ts";
import { OrtBackend } from "../engine/backends/ort.ts";
import { bertWasmKernels, type Env, workersHandler } from "./workers-app.ts";

const instantiate = WebAssembly.instantiate.bind(WebAssembly);
WebAssembly.instantiate = ((source: BufferSource | WebAssembly.Module, imports?: WebAssembly.Imports) =>
  source instanceof WebAssembly.Module
    ? instantiate(source, imports)
    : instantiate(ortWasm, imports).then((instance) => ({ instance, module: ortWasm }))) as typeof WebAssembly.instantiate;

ort.env.wasm.numThreads = 1;
ort.env.wasm.proxy = false;
// Any bytes: they are never compiled, the redirect above hands ORT the precompiled module instead.
ort.env.wasm.wasmBinary = new Uint8Array(8);

export default workersHandler((env: Env) => {
  const ortWeb = new OrtBackend("wasm", ort, { executionProviders: ["wasm"] });
  const name = env.BACKEND ?? "bert-wasm";
  if (name === "wasm") return ortWeb;
  if (name === "bert-wasm") return new BertWasmOrOrt(bertWasmKernels(), ortWeb);
  throw new Error(`BACKEND=${name}: want wasm or bert-wasm`);
});
