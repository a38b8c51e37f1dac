/**
 * The backends available on Node: native (onnxruntime-node), wasm (onnxruntime-web) and bert-wasm
 * (our own int8 encoder, onnxruntime-web for models it cannot run).
 */
import type { Backend } from "../engine/backend.ts";
import { BertWasmOrOrt } from "../engine/backends/bert-wasm-or-ort.ts";
import { OrtBackend } from "../engine/backends/ort.ts";

export type BackendName = "native" | "wasm" | "bert-wasm";

export async function createBackend(name: BackendName, threads?: number): Promise<Backend> {
  if (name === "native") {
    const ort = await import("onnxruntime-node");
    return new OrtBackend("native", ort.default ?? ort, threads ? { intraOpNumThreads: threads, interOpNumThreads: 1 } : {});
  }
  if (name === "wasm") {
    const ort = await import("onnxruntime-web");
    // One thread, as in an edge isolate; no proxy worker.
    ort.env.wasm.numThreads = threads ?? 1;
    ort.env.wasm.proxy = false;
    return new OrtBackend("wasm", ort, { executionProviders: ["wasm"] });
  }
  if (name === "bert-wasm") {
    const [{ loadBertWasmBackend }, { packBertWasm }, wasm] = await Promise.all([
      import("../engine/backends/bert-wasm/node.ts"),
      import("../engine/backends/bert-wasm/pack.ts"),
      createBackend("wasm"),
    ]);
    return new BertWasmOrOrt(await loadBertWasmBackend(), wasm, (onnx) => packBertWasm(onnx));
  }
  throw new Error(`unknown backend "${name}" (native | wasm | bert-wasm)`);
}

