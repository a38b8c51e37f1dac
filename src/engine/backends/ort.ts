import type * as Ort from "onnxruntime-common";
import { type Backend, BackendError, type Batch, type ExternalData, type Outputs, type Session } from "../backend.ts";

/** The part of an onnxruntime module (web or node: both expose onnxruntime-common's API) we use. */
export interface OrtModule {
  InferenceSession: typeof Ort.InferenceSession;
  Tensor: typeof Ort.Tensor;
}

/**
 * One backend for both onnxruntime builds. The runtime entry point hands in the module, so the core
 * never imports a runtime-specific package: onnxruntime-web (WASM, every runtime) or
 * onnxruntime-node (native, Node only).
 */
export class OrtBackend implements Backend {
  constructor(
    readonly name: string,
    private readonly ort: OrtModule,
    private readonly options: Ort.InferenceSession.SessionOptions = {},
  ) {}

  async createSession(model: Uint8Array, externalData?: ExternalData): Promise<Session> {
    let session: Ort.InferenceSession;
    try {
      session = await this.ort.InferenceSession.create(model, {
        ...this.options,
        ...(externalData?.length ? { externalData } : {}),
      });
    } catch (err) {
      throw new BackendError(`onnxruntime (${this.name}) could not create a session: ${(err as Error).message}`);
    }
    return new OrtSession(session, this.ort);
  }
}

class OrtSession implements Session {
  constructor(
    private readonly session: Ort.InferenceSession,
    private readonly ort: OrtModule,
  ) {}

  get inputNames() {
    return this.session.inputNames;
  }
  get outputNames() {
    return this.session.outputNames;
  }

  async run(batch: Batch): Promise<Outputs> {
    const available: Record<string, BigInt64Array> = {
      input_ids: batch.inputIds,
      attention_mask: batch.attentionMask,
      token_type_ids: batch.tokenTypeIds,
    };
    const feeds: Record<string, Ort.Tensor> = {};
    for (const name of this.session.inputNames) {
      const data = available[name];
      if (!data) throw new BackendError(`the graph wants an input "${name}" that bert-edge does not provide`);
      feeds[name] = new this.ort.Tensor("int64", data, batch.dims);
    }
    const results = await this.session.run(feeds);
    const outputs: Outputs = {};
    for (const [name, tensor] of Object.entries(results)) {
      if (tensor.type !== "float32") throw new BackendError(`output "${name}" is ${tensor.type}, expected float32`);
      outputs[name] = { data: tensor.data as Float32Array, dims: tensor.dims };
    }
    return outputs;
  }

  async release() {
    await this.session.release();
  }
}
