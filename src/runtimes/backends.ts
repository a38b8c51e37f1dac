/**
 * The backends of the Node and Deno entry points: native (onnxruntime-node, Node only), wasm (onnxruntime-web) and bert-wasm
 * (our own int8 encoder, onnxruntime-web for models it cannot run).
 */
import type { Backend } from "../engine/backend.ts";
import { BertWasmOrOrt } from "../engine/backends/bert-wasm-or-ort.ts";
import { OrtBackend } from "../engine/backends/ort.ts";
import { readFileSync } from "node:fs";
import { availableParallelism } from "node:os";

/**
 * Whether onnxruntime-node's int8 kernels saturate here: on x86-64 without AVX-512 VNNI or AVX-VNNI,
 * MLAS multiplies uint8 activations by int8 weights with vpmaddubsw, which adds each pair of products
 * into a saturating int16 (two of 255 × ±127 overflow it). `cpuinfo`: /proc/cpuinfo, undefined where
 * there is none (the flags are unknown: assumed to saturate). Both are parameters, not defaults, so
 * that a test can pass `undefined` for the flags.
 */
export function int8Saturates(arch: string, cpuinfo: string | undefined): boolean {
  if (arch !== "x64") return false;
  if (cpuinfo === undefined) return true;
  const flags = /^flags\s*:(.*)$/m.exec(cpuinfo)?.[1].split(/\s+/) ?? [];
  return !flags.includes("avx512_vnni") && !flags.includes("avx_vnni");
}

/** /proc/cpuinfo, where there is one (Linux). */
export function readCpuinfo(): string | undefined {
  try {
    return readFileSync("/proc/cpuinfo", "utf8");
  } catch {
    return undefined;
  }
}

export type BackendName = "native" | "wasm" | "bert-wasm";

/**
 * onnxruntime-node's intra-op threads when none are asked for: one per core, as ORT's default; but
 * see `spinning` below. onnxruntime-node computes on the JS thread (synchronously, inside a
 * setImmediate) plus its pool, so with spinning pool threads a run takes the CPU from the HTTP work
 * and everything else on the box even between its parallel sections.
 */
export function defaultNativeThreads(cores = availableParallelism()): number {
  return Math.max(1, cores);
}

/** A backend by name; `threads`: intra-op threads (native: one per core by default; wasm: 1). */
export async function createBackend(name: BackendName, threads?: number, { spinning = false, firstToken = true }: BackendOptions = {}): Promise<Backend> {
  const backend = await createEngine(name, threads, spinning, firstToken);
  // bert-wasm prunes in its own layer loop (and hands other graphs to a wasm backend made here).
  if (!firstToken || name === "bert-wasm") return backend;
  const { FirstTokenBackend } = await import("../engine/first-token.ts");
  // onnxruntime-web copies a whole graph file into its heap and the weights out of it again: every
  // graph's weights go to it as external data instead (FirstTokenBackend).
  return new FirstTokenBackend(backend, { externalWeights: name === "wasm" });
}

export interface BackendOptions {
  /**
   * Whether ORT's pool threads busy-wait between parallel sections (ORT's default). Off unless asked
   * for: they keep spinning after each run, taking the CPU from the HTTP work and whatever else shares
   * the cores, and where CPU time is billed they multiply it (a 2-core Zen 5: 37.4 against 5.1 ms of
   * CPU per lone 16-token request; README, Speed). Without spinning, merged batches still use every core.
   */
  spinning?: boolean;
  /**
   * Run classifier graphs with their last layer pruned to the first token (src/engine/first-token.ts;
   * default on). Off: every graph runs as exported.
   */
  firstToken?: boolean;
}

async function createEngine(name: BackendName, threads: number | undefined, spinning: boolean, firstToken: boolean): Promise<Backend> {
  if (name === "native") {
    const ort = await import("onnxruntime-node");
    if (int8Saturates(process.arch, readCpuinfo())) {
      console.log("bert-edge: this CPU has no VNNI, where onnxruntime-node's int8 kernels saturate: int8 answers can drift from onnxruntime-web's (README, Backends)");
    }
    return new OrtBackend("native", ort.default ?? ort, {
      intraOpNumThreads: threads ?? defaultNativeThreads(),
      interOpNumThreads: 1,
      extra: { session: { intra_op: { allow_spinning: spinning ? "1" : "0" } } },
    });
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
      createBackend("wasm", undefined, { firstToken }),
    ]);
    return new BertWasmOrOrt(await loadBertWasmBackend(), wasm, (onnx) => packBertWasm(onnx));
  }
  throw new Error(`unknown backend "${name}" (native | wasm | bert-wasm)`);
}

