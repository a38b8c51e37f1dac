/**
 * `bert-edge pack`: turns a Hugging Face / Optimum export folder into an immutable, verified model
 * version that the registry serves from object storage:
 *
 *   <out>/<id>/<version>/config.json, tokenizer.json, tokenizer_config.json, [special_tokens_map.json, vocab.txt]
 *   <out>/<id>/<version>/onnx/model_quantized.onnx        graph only (a few hundred KB)
 *   <out>/<id>/<version>/onnx/model_quantized.onnx_data   every tensor ≥ 1 KiB, 64-byte aligned
 *   <out>/<id>/<version>/bert-wasm/model.bin              with --bert-wasm: the int8 model packed for bert-wasm
 *   <out>/<id>/<version>/manifest.json                    sha256 + size of every file
 *   <out>/<id>/current.json                               {"version"}: the alias, written last
 *
 * The version folder is assembled beside its final place and renamed into it, so a reader never
 * sees half a version; the alias moves only after the packed graph has been loaded on onnxruntime-node
 * and onnxruntime-web and matched the unpacked graph's outputs.
 */
import { createHash } from "node:crypto";
import { access, mkdir, readFile, rename, rm, writeFile } from "node:fs/promises";
import { basename, dirname, join, resolve } from "node:path";
import { parseArgs } from "node:util";
import type { Backend, Batch, ExternalData, Outputs } from "../engine/backend.ts";
import { padBatch } from "../engine/batch.ts";
import type { Manifest } from "../engine/manifest.ts";
import { labelsOf, type ModelConfig, type TaskName, taskFromConfig } from "../engine/model.ts";
import { BertTokenizer, UnsupportedTokenizerError } from "../engine/tokenizer.ts";
import { type BackendName, createBackend } from "../runtimes/backends.ts";
import { BertWasmUnsupportedError } from "../engine/backends/bert-wasm/format.ts";
import { packBertWasm } from "../engine/backends/bert-wasm/pack.ts";
import { pruneToFirstToken } from "../engine/first-token.ts";
import { DataType, decodeModel, encodeModel, EXTERNAL_THRESHOLD, externalTensor, loadExternalData, type Model, rawBytes } from "./onnx.ts";
import { mib, quantizeGraph } from "./quantize.ts";

export type PackedManifest = Manifest & { created: string };

export interface PackOptions {
  /** "org/name"; default: the export folder's name. */
  id?: string;
  /** Default: the first 12 hex digits of the sha256 over the files' sha256s, so re-packing is idempotent. */
  version?: string;
  /** Ship the fp32 graph as is instead of the int8 one. */
  fp32?: boolean;
  /** Backends that must load the packed graph and reproduce the unpacked outputs (default both). */
  verifyOn?: BackendName[];
  /**
   * Also write `bert-wasm/model.bin` (packBertWasm of the graph before externalization) and list it
   * as the manifest's `bert_wasm`; it must load and run on the bert-wasm backend.
   */
  bertWasm?: boolean;
  /**
   * Prune a classifier graph's last layer to the first token (src/engine/first-token.ts; default
   * true), so that every runtime, Workers included, serves the pruned graph.
   */
  firstToken?: boolean;
  /** Progress lines (default: none). */
  log?: (line: string) => void;
}

export interface PackResult {
  dir: string;
  manifest: PackedManifest;
  /** Largest |packed − unpacked| output difference, per backend. */
  verification: { backend: string; maxAbsDiff: number }[];
}

/** Files of an export folder that a served model needs, besides the graph. */
const MODEL_FILES = ["config.json", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt"];
const REQUIRED_FILES = new Set(["config.json", "tokenizer.json"]);
const GRAPH_INPUTS = new Set(["input_ids", "attention_mask", "token_type_ids"]);
const TASK_OUTPUTS: Record<TaskName, string[]> = {
  "text-classification": ["logits"],
  "zero-shot-classification": ["logits"],
  "token-classification": ["logits"],
  "multiple-choice": ["logits"],
  "fill-mask": ["logits"],
  "question-answering": ["start_logits", "end_logits"],
  "feature-extraction": ["last_hidden_state"],
};
/** Cache-line alignment: any typed-array view of a tensor is legal, padding stays negligible. */
const ALIGN = 64;
/** Same graph, same weights, same kernels: anything above float noise means the packing broke something. */
const VERIFY_TOLERANCE = 1e-5;
/** `--bert-wasm`: where the packed bert-wasm file goes in the version folder. */
export const BERT_WASM_FILE = "bert-wasm/model.bin";

export class PackError extends Error {
  override name = "PackError";
}

interface Validated {
  config: ModelConfig;
  task: TaskName;
  tokenizer: BertTokenizer;
  /** Path of the graph to pack, and whether it must be quantized first. */
  graphPath: string;
  quantize: boolean;
  fp32: boolean;
}

const exists = (path: string) => access(path).then(() => true, () => false);

async function readJson(dir: string, file: string): Promise<unknown> {
  let text: string;
  try {
    text = await readFile(join(dir, file), "utf8");
  } catch {
    throw new PackError(`${dir}: no ${file}`);
  }
  try {
    return JSON.parse(text);
  } catch (err) {
    throw new PackError(`${dir}: ${file} is not valid JSON (${(err as Error).message})`);
  }
}

async function firstExisting(dir: string, names: string[]): Promise<string | undefined> {
  for (const name of names) if (await exists(join(dir, name))) return join(dir, name);
  return undefined;
}

/** Checks that the folder is a BERT export bert-edge can serve; throws PackError saying why not. */
export async function validateExport(srcDir: string, fp32 = false): Promise<Validated> {
  const config = (await readJson(srcDir, "config.json")) as ModelConfig;
  if (typeof config !== "object" || config === null || Array.isArray(config)) throw new PackError(`${srcDir}: config.json is not an object`);
  let task: TaskName;
  try {
    task = taskFromConfig(config);
  } catch (err) {
    throw new PackError(`${srcDir}: config.json: ${(err as Error).message}`);
  }
  const tokenizerJson = await readJson(srcDir, "tokenizer.json");
  const tokenizerConfig = (await exists(join(srcDir, "tokenizer_config.json")))
    ? ((await readJson(srcDir, "tokenizer_config.json")) as Record<string, unknown>)
    : {};
  let tokenizer: BertTokenizer;
  try {
    tokenizer = BertTokenizer.fromJSON(tokenizerJson, tokenizerConfig);
  } catch (err) {
    const what = err instanceof UnsupportedTokenizerError ? "unsupported tokenizer" : "invalid tokenizer";
    throw new PackError(`${srcDir}: ${what} in tokenizer.json: ${(err as Error).message}`);
  }
  const quantized = await firstExisting(srcDir, ["onnx/model_quantized.onnx", "model_quantized.onnx"]);
  const full = await firstExisting(srcDir, ["onnx/model.onnx", "model.onnx"]);
  let graphPath: string | undefined;
  let quantize = false;
  if (fp32) {
    graphPath = full;
    if (!graphPath) throw new PackError(`${srcDir}: --fp32 needs onnx/model.onnx`);
  } else {
    graphPath = quantized ?? full;
    quantize = !quantized;
    if (!graphPath) throw new PackError(`${srcDir}: no onnx/model_quantized.onnx or onnx/model.onnx`);
  }
  return { config, task, tokenizer, graphPath, quantize, fp32 };
}

/** Graph inputs ⊆ what the backend feeds, outputs = what the task reads (float). */
function checkSignature(model: Model, task: TaskName, where: string): void {
  const inits = new Set(model.graph.initializer.map((t) => t.name));
  // Graphs of IR < 4 also list their initializers as inputs.
  const inputs = model.graph.input.map((i) => i.name).filter((n) => !inits.has(n));
  const unknown = inputs.filter((n) => !GRAPH_INPUTS.has(n));
  if (unknown.length > 0) throw new PackError(`${where}: graph inputs ${unknown.join(", ")} are not among ${[...GRAPH_INPUTS].join(", ")}`);
  if (!inputs.includes("input_ids")) throw new PackError(`${where}: the graph has no input_ids input`);
  const outputs = model.graph.output.map((o) => o.name);
  const missing = TASK_OUTPUTS[task].filter((n) => !outputs.includes(n));
  if (missing.length > 0) {
    throw new PackError(`${where}: a ${task} graph needs outputs ${TASK_OUTPUTS[task].join(", ")}; it has ${outputs.join(", ")}`);
  }
  const nonFloat = model.graph.output.filter((o) => (o.type?.tensor_type?.elem_type ?? DataType.FLOAT) !== DataType.FLOAT);
  if (nonFloat.length > 0) throw new PackError(`${where}: outputs ${nonFloat.map((o) => o.name).join(", ")} are not float32`);
}

/**
 * Moves every tensor of ≥ 1 KiB into one data file at 64-byte aligned offsets. Tensors with
 * identical bytes share one range, so a weight that an exporter duplicated is still stored once.
 */
export function externalize(model: Model, location: string): Uint8Array {
  const chunks: Uint8Array[] = [];
  const offsets = new Map<string, [offset: number, length: number]>();
  let size = 0;
  model.graph.initializer = model.graph.initializer.map((t) => {
    const raw = rawBytes(t);
    if (raw.byteLength < EXTERNAL_THRESHOLD) return t;
    const key = createHash("sha256").update(raw).digest("hex");
    let range = offsets.get(key);
    if (!range) {
      const pad = (ALIGN - (size % ALIGN)) % ALIGN;
      if (pad) chunks.push(new Uint8Array(pad));
      range = [size + pad, raw.byteLength];
      chunks.push(raw);
      size += pad + raw.byteLength;
      offsets.set(key, range);
    }
    return externalTensor(t, location, range[0], range[1]);
  });
  const data = new Uint8Array(size);
  let at = 0;
  for (const c of chunks) {
    data.set(c, at);
    at += c.byteLength;
  }
  return data;
}

/** A small input of the task's shape: a pair for QA, two choices for multiple choice. */
function sampleBatch(task: TaskName, tokenizer: BertTokenizer): Batch {
  const text = "bert-edge checks that the packed model gives the same answers.";
  const encode = (a: string, b?: string) => tokenizer.encode(a, b, { maxLength: 64 })[0];
  if (task === "multiple-choice") return padBatch([encode(text, "It does."), encode(text, "It does not.")], tokenizer.padTokenId, 2);
  if (task === "question-answering") return padBatch([encode("What does bert-edge check?", text)], tokenizer.padTokenId);
  return padBatch([encode(text)], tokenizer.padTokenId);
}

function maxAbsDiff(a: Outputs, b: Outputs): number {
  let max = 0;
  for (const [name, t] of Object.entries(a)) {
    const u = b[name];
    if (!u || u.data.length !== t.data.length) throw new PackError(`packed graph output ${name} differs in shape`);
    for (let i = 0; i < t.data.length; i++) max = Math.max(max, Math.abs(t.data[i] - u.data[i]));
  }
  return max;
}

/** One run of `batch` in a fresh session, released afterwards. */
async function runOnce(backend: Backend, bytes: Uint8Array, batch: Batch, data?: ExternalData): Promise<Outputs> {
  const session = await backend.createSession(bytes, data);
  try {
    return await session.run(batch);
  } finally {
    await session.release();
  }
}

async function verifyPacked(
  unpacked: Uint8Array,
  graph: Uint8Array,
  externalData: ExternalData,
  batch: Batch,
  backends: Backend[],
): Promise<PackResult["verification"]> {
  const results: PackResult["verification"] = [];
  for (const backend of backends) {
    const diff = maxAbsDiff(await runOnce(backend, unpacked, batch), await runOnce(backend, graph, batch, externalData));
    if (!(diff <= VERIFY_TOLERANCE)) throw new PackError(`the packed graph's outputs differ from the unpacked graph's on ${backend.name} by ${diff}`);
    results.push({ backend: backend.name, maxAbsDiff: diff });
  }
  return results;
}

const sha256 = (bytes: Uint8Array) => createHash("sha256").update(bytes).digest("hex");

function checkId(id: string): void {
  if (!/^[\w.-]+(\/[\w.-]+)*$/.test(id) || id.split("/").some((s) => s === "." || s === "..")) {
    throw new PackError(`invalid model id ${JSON.stringify(id)} (want org/name: letters, digits, "_", "-", ".")`);
  }
}

export async function packModel(srcDir: string, outDir: string, options: PackOptions = {}): Promise<PackResult> {
  const log = options.log ?? (() => {});
  const id = options.id ?? basename(resolve(srcDir));
  checkId(id);
  if (options.version !== undefined && !/^[\w.-]+$/.test(options.version)) throw new PackError(`invalid version ${JSON.stringify(options.version)}`);
  const v = await validateExport(srcDir, options.fp32);

  const original = new Uint8Array(await readFile(v.graphPath));
  const model = decodeModel(original);
  await loadExternalData(model, v.graphPath);
  if (v.quantize) {
    quantizeGraph(model);
    log(`quantized ${v.graphPath} to int8`);
  }
  checkSignature(model, v.task, v.graphPath);
  const quantized = !v.fp32;
  const graphName = quantized ? "onnx/model_quantized.onnx" : "onnx/model.onnx";
  const dataName = `${graphName}_data`;
  // bert-wasm converts the graph as exported (it prunes in its own layer loop).
  const forBertWasm = options.bertWasm ? encodeModel(model) : undefined;
  if (options.firstToken !== false) {
    const pruned = pruneToFirstToken(model);
    log("skipped" in pruned ? `first-token pruning: not applied (${pruned.skipped})` : "first-token pruning: the last layer runs queries, attention output and FFN for the first token only");
  }
  const unpacked = encodeModel(model);
  const data = externalize(model, basename(dataName));
  const graph = encodeModel(model);
  log(`graph ${mib(unpacked.byteLength)} → ${graphName} ${mib(graph.byteLength)} + ${dataName} ${mib(data.byteLength)}`);

  const files = new Map<string, Uint8Array>();
  for (const name of MODEL_FILES) {
    const path = join(srcDir, name);
    if (await exists(path)) files.set(name, new Uint8Array(await readFile(path)));
    else if (REQUIRED_FILES.has(name)) throw new PackError(`${srcDir}: no ${name}`);
  }
  files.set(graphName, graph);
  files.set(dataName, data);
  let bertWasm: Uint8Array | undefined;
  if (forBertWasm) {
    try {
      bertWasm = packBertWasm(forBertWasm);
    } catch (err) {
      if (err instanceof BertWasmUnsupportedError) throw new PackError(`${v.graphPath}: --bert-wasm: ${err.message}`);
      throw err;
    }
    files.set(BERT_WASM_FILE, bertWasm);
    log(`${BERT_WASM_FILE} ${mib(bertWasm.byteLength)}`);
  }
  const listed = [...files].sort(([a], [b]) => (a < b ? -1 : 1)).map(([path, bytes]) => ({ path, sha256: sha256(bytes), bytes: bytes.byteLength }));
  const version = options.version ?? sha256(new TextEncoder().encode(listed.map((f) => `${f.sha256}  ${f.path}\n`).join(""))).slice(0, 12);

  const backends = await Promise.all((options.verifyOn ?? ["native", "wasm"]).map((name) => createBackend(name)));
  const batch = sampleBatch(v.task, v.tokenizer);
  const verification = await verifyPacked(unpacked, graph, [{ path: basename(dataName), data }], batch, backends);
  log(`verified on ${verification.map((r) => `${r.backend} (max diff ${r.maxAbsDiff})`).join(", ")}`);
  if (bertWasm) {
    // Our own int8 kernels differ from onnxruntime's in the last digits (per-token activation
    // scales): check that the file loads, runs and gives finite outputs of the graph's shapes.
    const [own, ort] = await Promise.all([createBackend("bert-wasm"), createBackend("wasm")]);
    const diff = maxAbsDiff(await runOnce(ort, forBertWasm!, batch), await runOnce(own, bertWasm, batch));
    if (!Number.isFinite(diff)) throw new PackError(`${BERT_WASM_FILE} gives non-finite outputs`);
    verification.push({ backend: "bert-wasm", maxAbsDiff: diff });
    log(`${BERT_WASM_FILE} runs on bert-wasm (max diff to onnxruntime-web int8 ${diff.toFixed(4)})`);
  }

  const manifest: PackedManifest = {
    id,
    version,
    task: v.task,
    labels: labelsOf(v.config),
    max_length: Math.min(v.tokenizer.modelMaxLength, v.config.max_position_embeddings ?? Infinity),
    quantization: quantized ? "int8-dynamic" : "none",
    graph: graphName,
    external_data: [dataName],
    ...(bertWasm ? { bert_wasm: BERT_WASM_FILE } : {}),
    files: listed,
    created: new Date().toISOString(),
  };

  const modelDir = join(outDir, id);
  const dir = join(modelDir, version);
  if (await exists(join(dir, "manifest.json"))) {
    const previous = JSON.parse(await readFile(join(dir, "manifest.json"), "utf8")) as PackedManifest;
    if (JSON.stringify(previous.files) !== JSON.stringify(listed)) {
      throw new PackError(`${dir} already holds a different version ${version}; versions are immutable, pick another --version`);
    }
    log(`${id}@${version} is already packed in ${dir}`);
  } else {
    const staging = join(modelDir, `.${version}.staging-${process.pid}`);
    await rm(staging, { recursive: true, force: true });
    for (const [path, bytes] of files) {
      await mkdir(dirname(join(staging, path)), { recursive: true });
      await writeFile(join(staging, path), bytes);
    }
    await writeFile(join(staging, "manifest.json"), `${JSON.stringify(manifest, null, 2)}\n`);
    await rm(dir, { recursive: true, force: true }); // a crashed earlier pack may have left a folder without manifest
    await rename(staging, dir);
  }
  const alias = join(modelDir, "current.json");
  await writeFile(`${alias}.tmp`, `${JSON.stringify({ version })}\n`);
  await rename(`${alias}.tmp`, alias);
  return { dir, manifest, verification };
}

const USAGE = "usage: bert-edge pack <export-dir> --out <dir> [--id org/name] [--version V] [--fp32] [--bert-wasm] [--first-token on|off]";

export async function packCommand(argv: string[]): Promise<void> {
  const { positionals, values } = parseArgs({
    args: argv,
    allowPositionals: true,
    options: {
      out: { type: "string" },
      id: { type: "string" },
      version: { type: "string" },
      fp32: { type: "boolean", default: false },
      "bert-wasm": { type: "boolean", default: false },
      "first-token": { type: "string", default: "on" },
      help: { type: "boolean", short: "h" },
    },
  });
  if (values.help) {
    console.log(USAGE);
    return;
  }
  if (positionals.length !== 1 || !values.out || !["on", "off"].includes(values["first-token"]!)) throw new Error(USAGE);
  const log = (line: string) => console.error(`bert-edge: ${line}`);
  const { dir, manifest } = await packModel(positionals[0], values.out, { id: values.id, version: values.version, fp32: values.fp32, bertWasm: values["bert-wasm"], firstToken: values["first-token"] === "on", log });
  const total = manifest.files.reduce((s, f) => s + f.bytes, 0);
  log(`packed ${manifest.id}@${manifest.version} (${manifest.task}, ${manifest.quantization}, ${mib(total)}) in ${dir}; current.json → ${manifest.version}`);
}
