/**
 * The whole contract between the tasks and an inference engine, after text-embeddings-inference's
 * `Backend` trait: a flat, padded batch goes in, named float tensors come out.
 */

/** A padded batch, row-major. `dims` is [batch, seq], or [batch, choices, seq] for multiple choice. */
export interface Batch {
  dims: number[];
  inputIds: BigInt64Array;
  attentionMask: BigInt64Array;
  tokenTypeIds: BigInt64Array;
}

export interface OutputTensor {
  data: Float32Array;
  dims: readonly number[];
}

export type Outputs = Record<string, OutputTensor>;

export interface Session {
  readonly inputNames: readonly string[];
  readonly outputNames: readonly string[];
  /** Runs the graph, feeding only the inputs it declares (DistilBERT graphs have no token_type_ids). */
  run(batch: Batch): Promise<Outputs>;
  release(): Promise<void>;
}

/** External-data files of an ONNX graph, by the path the graph refers to them with. */
export type ExternalData = { path: string; data: Uint8Array }[];

export interface Backend {
  /** "wasm" (onnxruntime-web) or "native" (onnxruntime-node). */
  readonly name: string;
  createSession(model: Uint8Array, externalData?: ExternalData): Promise<Session>;
}

export class BackendError extends Error {
  override name = "BackendError";
}
