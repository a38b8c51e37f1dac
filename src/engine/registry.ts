import { ServiceError } from "../errors.ts";
import type { ObjectStorage } from "../storage/storage.ts";
import type { Backend } from "./backend.ts";
import { labelsOf, type LoadedModel, loadedModel, type ModelConfig, type TaskName, taskFromConfig } from "./model.ts";
import { BertTokenizer } from "./tokenizer.ts";

/** ONNX files a model folder may hold, in order of preference (int8 first, as served at the edge). */
const QUANTIZED_FILES = ["onnx/model_quantized.onnx", "model_quantized.onnx"];
const FULL_FILES = ["onnx/model.onnx", "model.onnx"];

export interface ModelInfo {
  id: string;
  task: TaskName;
  labels: string[];
  /** The ONNX file that is (or will be) served. */
  file: string;
  loaded: boolean;
}

export interface RegistryOptions {
  /** Serve `model_quantized.onnx` when a folder has it (default), else always the fp32 file. */
  preferQuantized?: boolean;
}

interface Entry {
  info: Omit<ModelInfo, "loaded">;
  config: ModelConfig;
  loading?: Promise<LoadedModel>;
  loaded?: LoadedModel & { session: { release(): Promise<void> } };
}

/**
 * Finds model folders in object storage (a folder is a model when it holds config.json and an ONNX
 * file; its id is its path) and loads each lazily, on first use. Concurrent first requests share
 * one load; a failed load is forgotten so that the next request tries again.
 */
export class ModelRegistry {
  private entries?: Promise<Map<string, Entry>>;

  constructor(
    private readonly storage: ObjectStorage,
    private readonly backend: Backend,
    private readonly options: RegistryOptions = {},
  ) {}

  async list(): Promise<ModelInfo[]> {
    const entries = await this.discover();
    return [...entries.values()].map((e) => ({ ...e.info, loaded: e.loaded !== undefined }));
  }

  /** Metadata without loading the model; throws 404 for an unknown id. */
  async info(id: string): Promise<ModelInfo> {
    const entry = await this.entry(id);
    return { ...entry.info, loaded: entry.loaded !== undefined };
  }

  async get(id: string): Promise<LoadedModel> {
    const entry = await this.entry(id);
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
    const entry = (await this.discover()).get(id);
    if (!entry) throw new ServiceError(404, "model_not_found", `no model "${id}" (GET /models lists them)`);
    return entry;
  }

  private discover(): Promise<Map<string, Entry>> {
    this.entries ??= this.scan().catch((err) => {
      this.entries = undefined;
      throw err;
    });
    return this.entries;
  }

  private async scan(): Promise<Map<string, Entry>> {
    const keys = await this.storage.list();
    const present = new Set(keys);
    const entries = new Map<string, Entry>();
    for (const key of keys) {
      if (!key.endsWith("/config.json")) continue;
      const id = key.slice(0, -"/config.json".length);
      const candidates = this.options.preferQuantized === false ? FULL_FILES : [...QUANTIZED_FILES, ...FULL_FILES];
      const file = candidates.find((f) => present.has(`${id}/${f}`));
      if (!file) continue;
      try {
        const config = JSON.parse(await this.text(`${id}/config.json`)) as ModelConfig;
        entries.set(id, { config, info: { id, task: taskFromConfig(config), labels: labelsOf(config), file } });
      } catch (err) {
        console.warn(`bert-edge: skipping ${id}: ${(err as Error).message}`);
      }
    }
    return entries;
  }

  private async load({ info, config }: Entry) {
    try {
      const [tokenizerJson, tokenizerConfig, onnx] = await Promise.all([
        this.text(`${info.id}/tokenizer.json`).then(JSON.parse),
        this.text(`${info.id}/tokenizer_config.json`)
          .then(JSON.parse)
          .catch(() => ({})),
        this.bytes(`${info.id}/${info.file}`),
      ]);
      const tokenizer = BertTokenizer.fromJSON(tokenizerJson, tokenizerConfig);
      const session = await this.backend.createSession(onnx);
      return loadedModel({ id: info.id, config, tokenizer, file: info.file }, session);
    } catch (err) {
      throw new ServiceError(500, "model_load_failed", `model "${info.id}" failed to load: ${(err as Error).message}`);
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
