/** The onnxruntime builds available on Node: native (onnxruntime-node) and WASM (onnxruntime-web). */
import type { Backend } from "../engine/backend.ts";
import { OrtBackend } from "../engine/backends/ort.ts";

export type BackendName = "native" | "wasm";

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
  throw new Error(`unknown backend "${name}" (native | wasm)`);
}

