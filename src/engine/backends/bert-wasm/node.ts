/**
 * Node / Deno helpers for the bert-wasm backend: read the committed .wasm builds next to this file and,
 * on Node 20 (V8 11.3), enable relaxed SIMD with `--experimental-wasm-relaxed-simd` through
 * v8.setFlagsFromString before compiling (NODE_OPTIONS does not accept it). Deno and newer Node have
 * relaxed SIMD on by default. Not for workerd: there, import the two .wasm files as modules and call
 * createBertWasmBackend(simd128Module, { relaxed: relaxedModule }).
 */
import { readFile } from "node:fs/promises";
import { type BertWasmBackend, type BertWasmOptions, createBertWasmBackend } from "./index.ts";

export const SIMD128_WASM_URL = new URL("./bert-simd128.wasm", import.meta.url);
export const RELAXED_WASM_URL = new URL("./bert-relaxed.wasm", import.meta.url);

let flagSet = false;

/** Turns on relaxed SIMD in V8 builds that still gate it behind a flag (Node 20). Best effort. */
export async function enableRelaxedSimd(): Promise<void> {
  if (flagSet) return;
  flagSet = true;
  const g = globalThis as { process?: { versions?: Record<string, string> }; Deno?: unknown };
  if (g.Deno || !g.process?.versions?.node) return;
  const major = Number(g.process.versions.v8?.split(".")[0] ?? 0);
  if (major >= 12) return; // V8 >= 11.4 ships relaxed SIMD without a flag
  try {
    const v8 = await import("node:v8");
    v8.setFlagsFromString("--experimental-wasm-relaxed-simd");
  } catch {
    // not Node: nothing to do
  }
}

export async function readBertWasmModules(): Promise<{ simd128: Uint8Array; relaxed: Uint8Array }> {
  const [simd128, relaxed] = await Promise.all([readFile(SIMD128_WASM_URL), readFile(RELAXED_WASM_URL)]);
  return { simd128: new Uint8Array(simd128), relaxed: new Uint8Array(relaxed) };
}

/** A bert-wasm backend with both kernel builds, relaxed SIMD enabled where a flag is needed. */
export async function loadBertWasmBackend(options: Omit<BertWasmOptions, "relaxed"> & { relaxed?: boolean } = {}): Promise<BertWasmBackend> {
  const { relaxed: useRelaxed = true, ...rest } = options;
  if (useRelaxed) await enableRelaxedSimd();
  const m = await readBertWasmModules();
  return createBertWasmBackend(m.simd128, { ...rest, relaxed: useRelaxed ? m.relaxed : null });
}
