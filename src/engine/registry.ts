import { ServiceError } from "../errors.ts";
import type { ObjectStorage } from "../storage/storage.ts";
import type { Backend, ExternalData } from "./backend.ts";
import { type Manifest, verifyFile } from "./manifest.ts";
import { type QueueOptions, RequestQueue } from "./queue.ts";
import { labelsOf, type LoadedModel, loadedModel, type ModelConfig, type TaskName, taskFromConfig } from "./model.ts";
import { BertTokenizer } from "./tokenizer.ts";

/** ONNX files a plain export folder may hold, in order of preference (int8 first, as served at the edge). */
const QUANTIZED_FILES = ["onnx/model_quantized.onnx", "model_quantized.onnx"];
const FULL_FILES = ["onnx/model.onnx", "model.onnx"];

/**
 * Default memory budget for loaded models: keeps a Workers isolate (128 MB) clear with room for
 * requests. A model costs its weight bytes times the heap factor measured by tools/edge-figures.ts
 * (onnxruntime-web's heap is 1.8× the weights with external data, 3.5× for one .onnx file).
 */
export const DEFAULT_MEMORY_BUDGET = 96 * 2 ** 20;
const HEAP_FACTOR = { externalData: 1.8, singleFile: 3.5, bertWasm: 1.3 };
const heapCost = (weightBytes: number, external: boolean) =>
  weightBytes * (external ? HEAP_FACTOR.externalData : HEAP_FACTOR.singleFile);

export interface ModelInfo {
  id: string;
  /** Packed models: the version served (the `current.json` alias unless pinned with `id@version`). */
  version?: string;
  task: TaskName;
  labels: string[];
  /** From config.json: "regression" tells a regression head from a one-label classifier. */
  problem_type?: ModelConfig["problem_type"];
  /** The ONNX file that is (or will be) served. */
  file: string;
  loaded: boolean;
}

export interface RegistryOptions {
  /** Serve `model_quantized.onnx` when a plain folder has it (default), else always the fp32 file. */
  preferQuantized?: boolean;
  /** Loaded models are evicted least-recently-used beyond this estimate of their memory, in bytes. */
  memoryBudget?: number;
  /** Each loaded model's request queue and micro-batching (src/engine/queue.ts). */
  queue?: QueueOptions;
}

/** Where one model's files live: a plain Hugging Face export folder, or a packed version with a manifest. */
interface Source {
  prefix: string;
  /** The file handed to the backend (a packed bert-wasm file for the bert-wasm backend, when listed). */
  file: string;
  config: ModelConfig;
  manifest?: Manifest;
}

interface Entry {
  info: Omit<ModelInfo, "loaded">;
  source: Source;
  loading?: Promise<LoadedModel>;
  loaded?: LoadedModel & { session: { release(): Promise<void> } };
  cost: number;
  lastUsed: number;
  /** Runs in progress: a model is never evicted under a running request. */
  running: number;
}

/**
 * Finds models in object storage and loads each lazily, on first use. Concurrent first requests
 * share one load; a failed load is forgotten so that the next request tries again; every file of a
 * packed model is checked against its manifest's sha256 before use.
 */
export class ModelRegistry {
  private entries?: Promise<Map<string, Entry>>;
  private clock = 0;

  constructor(
    private readonly storage: ObjectStorage,
    private readonly backend: Backend,
    private readonly options: RegistryOptions = {},
  ) {}

  get backendName() {
    return this.backend.name;
  }

  async list(): Promise<ModelInfo[]> {
    const entries = await this.discover();
    return [...entries.values()].filter((e) => !e.info.id.includes("@")).map(infoOf);
  }

  /** Metadata without loading the model; throws 404 for an unknown id. */
  async info(id: string): Promise<ModelInfo> {
    return infoOf(await this.entry(id));
  }

  async get(id: string): Promise<LoadedModel> {
    const entry = await this.entry(id);
    entry.lastUsed = ++this.clock;
    if (entry.loaded) return entry.loaded;
    entry.loading ??= this.load(entry).then(
      (model) => {
        entry.loaded = model;
        entry.loading = undefined;
        return model;
      },
      (err) => {
        entry.loading = undefined;
        throw err;
      },
    );
    return entry.loading;
  }

  private async entry(id: string): Promise<Entry> {
    const entries = await this.discover();
    let entry = entries.get(id);
    if (!entry && id.includes("@")) entry = await this.pinnedVersion(entries, id);
    if (!entry) throw new ServiceError(404, "model_not_found", `no model "${id}" (GET /models lists them)`);
    return entry;
  }

  private discover(): Promise<Map<string, Entry>> {
    this.entries ??= this.scan().catch((err) => {
      this.entries = undefined;
      throw new ServiceError(500, "storage_error", `cannot list models in ${this.storage.location}: ${err.message}`);
    });
    return this.entries;
  }

  /** Plain export folders (config.json + an ONNX file) and packed models (`<id>/current.json`). */
  private async scan(): Promise<Map<string, Entry>> {
    const keys = await this.storage.list();
    const present = new Set(keys);
    const entries = new Map<string, Entry>();
    const packedVersions = new Set(keys.filter((k) => k.endsWith("/manifest.json")).map((k) => k.slice(0, -14)));
    for (const key of keys) {
      try {
        if (key.endsWith("/current.json")) {
          const id = key.slice(0, -"/current.json".length);
          const { version } = JSON.parse(await this.text(key)) as { version: string };
          entries.set(id, await this.packedEntry(id, version));
        } else if (key.endsWith("/config.json")) {
          const prefix = key.slice(0, -"/config.json".length);
          if (packedVersions.has(prefix)) continue;
          const candidates = this.options.preferQuantized === false ? FULL_FILES : [...QUANTIZED_FILES, ...FULL_FILES];
          const file = candidates.find((f) => present.has(`${prefix}/${f}`));
          if (!file) continue;
          const config = JSON.parse(await this.text(key)) as ModelConfig;
          const info = { id: prefix, task: taskFromConfig(config), labels: labelsOf(config), problem_type: config.problem_type, file };
          entries.set(prefix, this.newEntry(info, { prefix, file, config }));
        }
      } catch (err) {
        console.warn(`bert-edge: skipping ${key}: ${(err as Error).message}`);
      }
    }
    return entries;
  }

  private async pinnedVersion(entries: Map<string, Entry>, ref: string): Promise<Entry | undefined> {
    const at = ref.lastIndexOf("@");
    const [id, version] = [ref.slice(0, at), ref.slice(at + 1)];
    if (!entries.get(id)?.source.manifest || !/^[\w.-]+$/.test(version)) return undefined;
    const entry = await this.packedEntry(id, version).catch(() => undefined);
    if (entry) entries.set(ref, entry);
    return entry;
  }

  private async packedEntry(id: string, version: string): Promise<Entry> {
    const prefix = `${id}/${version}`;
    const manifest = JSON.parse(await this.text(`${prefix}/manifest.json`)) as Manifest;
    const config = JSON.parse(await this.text(`${prefix}/config.json`)) as ModelConfig;
    // The bert-wasm backend reads the packed bert-wasm file when the version has one (one file, no
    // conversion); every other backend, and versions without it, read the ONNX graph.
    const file = this.backend.name === "bert-wasm" && manifest.bert_wasm ? manifest.bert_wasm : manifest.graph;
    return this.newEntry(
      { id, version, task: manifest.task, labels: manifest.labels, problem_type: config.problem_type, file },
      { prefix, file, config, manifest },
    );
  }

  private newEntry(info: Entry["info"], source: Source): Entry {
    const m = source.manifest;
    if (m?.bert_wasm && source.file === m.bert_wasm) {
      const bytes = m.files.find((f) => f.path === m.bert_wasm)?.bytes ?? 0;
      return { info, source, cost: bytes * HEAP_FACTOR.bertWasm, lastUsed: 0, running: 0 };
    }
    const weights = m?.files
      .filter((f) => f.path === source.file || m?.external_data?.includes(f.path))
      .reduce((sum, f) => sum + f.bytes, 0);
    const external = (m?.external_data?.length ?? 0) > 0;
    return { info, source, cost: heapCost(weights ?? 0, external), lastUsed: 0, running: 0 };
  }

  private async load(entry: Entry) {
    const { info, source } = entry;
    try {
      const read = async (path: string) => {
        const bytes = await this.bytes(`${source.prefix}/${path}`);
        if (source.manifest) await verifyFile(source.manifest, path, bytes);
        return bytes;
      };
      const graphDir = source.file.includes("/") ? source.file.slice(0, source.file.lastIndexOf("/") + 1) : "";
      const [tokenizerJson, tokenizerConfig, graph, externalData] = await Promise.all([
        read("tokenizer.json").then(decodeJson),
        read("tokenizer_config.json")
          .then(decodeJson)
          .catch(() => ({})),
        read(source.file),
        Promise.all(
          (source.file === source.manifest?.bert_wasm ? [] : (source.manifest?.external_data ?? [])).map(async (path) => ({
            path: path.slice(graphDir.length),
            data: await read(path),
          })),
        ) as Promise<ExternalData>,
      ]);
      const tokenizer = BertTokenizer.fromJSON(tokenizerJson, tokenizerConfig);
      if (!source.manifest) entry.cost = heapCost(graph.byteLength, false);
      await this.makeRoom(entry);
      const session = await this.backend.createSession(graph, externalData);
      const model = loadedModel({ id: info.id, config: source.config, tokenizer, file: source.file }, session);
      // One fair queue per loaded model: requests run in arrival order, merged while the engine is busy.
      const queue = new RequestQueue(model.run, tokenizer.padTokenId, this.options.queue);
      const ended = () => void entry.running--;
      const run: LoadedModel["run"] = (batch, timing) => {
        entry.running++;
        const ran = queue.run(batch, timing);
        // The caller awaits the queue's own promise: no async wrapper's extra hops after the run.
        ran.then(ended, ended);
        return ran;
      };
      return { ...model, run, queue };
    } catch (err) {
      if (err instanceof ServiceError) throw err;
      throw new ServiceError(500, "model_load_failed", `model "${info.id}" failed to load: ${(err as Error).message}`);
    }
  }

  /** Evicts least-recently-used models until `incoming` fits the memory budget. */
  private async makeRoom(incoming: Entry) {
    const budget = this.options.memoryBudget ?? Infinity;
    const loaded = [...(await this.discover()).values()].filter((e) => e.loaded && e !== incoming && e.running === 0);
    let used = loaded.reduce((sum, e) => sum + e.cost, 0);
    for (const victim of loaded.sort((a, b) => a.lastUsed - b.lastUsed)) {
      if (used + incoming.cost <= budget) break;
      const session = victim.loaded!.session;
      victim.loaded = undefined;
      used -= victim.cost;
      console.log(`bert-edge: evicting ${victim.info.id} to load ${incoming.info.id} (memory budget ${budget} bytes)`);
      await session.release();
    }
  }

  private async bytes(key: string): Promise<Uint8Array> {
    const bytes = await this.storage.get(key);
    if (!bytes) throw new Error(`${key} is missing from ${this.storage.location}`);
    return bytes;
  }

  private async text(key: string): Promise<string> {
    return new TextDecoder().decode(await this.bytes(key));
  }
}

const decodeJson = (bytes: Uint8Array) => JSON.parse(new TextDecoder().decode(bytes));

function infoOf(entry: Entry): ModelInfo {
  return { ...entry.info, loaded: entry.loaded !== undefined };
}
