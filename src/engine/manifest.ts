import { sha256Hex } from "../hash.ts";
import type { TaskName } from "./model.ts";

/**
 * What `bert-edge pack` writes beside a packed model version (`<id>/<version>/manifest.json`); the
 * alias `<id>/current.json` (`{"version"}`) names the version served by default.
 */
export interface Manifest {
  id: string;
  version: string;
  task: TaskName;
  labels: string[];
  max_length: number;
  quantization: "int8-dynamic" | "none";
  /** The ONNX graph, relative to the version folder. */
  graph: string;
  /** External-data files the graph refers to, relative to the version folder. */
  external_data?: string[];
  /**
   * `bert-edge pack --bert-wasm`: the same int8 model as one packed bert-wasm file (relative to the
   * version folder), loaded instead of the ONNX graph when the backend is bert-wasm.
   */
  bert_wasm?: string;
  files: { path: string; sha256: string; bytes: number }[];
}

/** Throws unless `bytes` are exactly the file the manifest lists under `path`. */
export async function verifyFile(manifest: Manifest, path: string, bytes: Uint8Array): Promise<void> {
  const expected = manifest.files.find((f) => f.path === path);
  if (!expected) throw new Error(`${path} is not listed in the manifest`);
  if (bytes.byteLength !== expected.bytes) {
    throw new Error(`${path} is ${bytes.byteLength} bytes, the manifest says ${expected.bytes} (truncated or replaced?)`);
  }
  const actual = await sha256Hex(bytes);
  if (actual !== expected.sha256) {
    throw new Error(`${path} has sha256 ${actual.slice(0, 12)}…, the manifest says ${expected.sha256.slice(0, 12)}… (corrupted?)`);
  }
}
