import type { Backend, ExternalData, Session } from "../backend.ts";
import { BertWasmUnsupportedError, MAGIC } from "./bert-wasm/format.ts";

const magic = new TextEncoder().encode(MAGIC);
const isBertWasmFile = (bytes: Uint8Array) => magic.every((b, i) => bytes[i] === b);

/**
 * The `bert-wasm` backend as the service uses it: our own encoder for every model it can run, and
 * onnxruntime-web, with a log line, for the rest — never a silently wrong answer. A packed bert-wasm
 * file runs as it is; an ONNX graph is converted first where the runtime hands in a converter
 * (Node, Deno: the converter needs protobufjs code generation, which Workers forbid).
 */
export class BertWasmOrOrt implements Backend {
  readonly name = "bert-wasm";

  constructor(
    private readonly own: Backend,
    private readonly fallback: Backend,
    private readonly convert?: (onnx: Uint8Array) => Uint8Array,
    private readonly log: (line: string) => void = console.warn,
  ) {}

  async createSession(model: Uint8Array, externalData?: ExternalData): Promise<Session> {
    if (isBertWasmFile(model)) return this.own.createSession(model);
    let reason = "no bert-wasm file and no converter in this runtime";
    if (this.convert && !externalData?.length) {
      try {
        return await this.own.createSession(this.convert(model));
      } catch (err) {
        if (!(err instanceof BertWasmUnsupportedError)) throw err;
        reason = err.message;
      }
    } else if (externalData?.length) {
      reason = "the graph keeps its weights as external data (pack with --bert-wasm)";
    }
    this.log(`bert-edge: bert-wasm cannot run this model (${reason}); using onnxruntime-web`);
    return this.fallback.createSession(model, externalData);
  }
}
