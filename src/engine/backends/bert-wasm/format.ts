/**
 * The bert-wasm packed weight file. One file, read once:
 *
 *   bytes 0..8    magic "BERTWASM"
 *   bytes 8..12   u32 LE format version (2)
 *   bytes 12..16  u32 LE byte length of the metadata JSON
 *   bytes 16..    metadata JSON (UTF-8), zero-padded to a multiple of 64 bytes
 *   data          every tensor at a 64-byte-aligned offset from the start of this section
 *
 * The runtime copies the data section once into the wasm module's linear memory (at a 64-aligned
 * address) and the kernels read every tensor in place. Encoder weights are int8, n rows (output
 * channels) of kp (k rounded up to 16, zero-padded) in the panel layout of q8Offset (n padded to a
 * multiple of 8 with zero rows), with a per-output-channel f32 scale and an i32 row sum (for the
 * activation zero point), both padded like the rows; biases and LayerNorm are f32 (int8 linears'
 * biases padded too). The word-embedding table is stored once:
 * the masked-LM decoder of a tied model reads the same int8 rows (per-row scale = per-output-channel
 * scale of the decoder). Small head linears (pooler, classifiers, QA) stay f32.
 */

export const MAGIC = "BERTWASM";
export const FORMAT_VERSION = 2;
export const ALIGN = 64;

export type DType = "i8" | "i32" | "f32";

/** A tensor in the data section: byte offset (64-aligned) from the start of the data section. */
export interface TensorRef {
  offset: number;
  dtype: DType;
  shape: number[];
}

/** Rows of an int8 matrix are stored in panels of this many (the GEMM's tile width). */
export const Q8_PANEL = 8;

/**
 * Byte offset of int8 element (row, k) of a matrix with rows of kp: panels of 8 rows, and inside a
 * panel, for every 4 consecutive k, two 16-byte vectors each holding those 4 k of 4 consecutive rows
 * (kernels.c Q8_OFFSET: one load feeds four 4-element dot products).
 */
export function q8Offset(row: number, k: number, kp: number): number {
  return Math.floor(row / 8) * 8 * kp + Math.floor(k / 4) * 32 + (Math.floor(row / 4) % 2) * 16 + (row % 4) * 4 + (k % 4);
}

/** int8 linear: out = x W^T + b, W int8 n x kp (q8Offset layout) with scale[n]; wsum[n] = sum_k W[n][k]. */
export interface Q8Linear {
  n: number;
  k: number;
  kp: number;
  weight: TensorRef;
  scale: TensorRef;
  wsum: TensorRef;
  bias: TensorRef;
}

/** f32 linear: W f32 [n][k]. */
export interface F32Linear {
  n: number;
  k: number;
  weight: TensorRef;
  bias: TensorRef;
}

/** int8 table with per-row scales (and row sums, so the word table doubles as the MLM decoder). */
export interface Q8Table {
  rows: number;
  k: number;
  kp: number;
  weight: TensorRef;
  scale: TensorRef;
  wsum: TensorRef;
}

export interface LayerNormRef {
  gamma: TensorRef;
  beta: TensorRef;
  eps: number;
}

export interface EncoderLayer {
  /** Q, K and V projections concatenated: n = 3 * hidden. */
  qkv: Q8Linear;
  attnOut: Q8Linear;
  attnNorm: LayerNormRef;
  ffnIn: Q8Linear;
  ffnOut: Q8Linear;
  ffnNorm: LayerNormRef;
}

export type Activation = "gelu" | "relu";

export type Head =
  /** BERT pooler (tanh) or DistilBERT pre_classifier (relu) on the first token, then the classifier. */
  | { kind: "sequence" | "multiple-choice"; pool: F32Linear; poolActivation: "tanh" | "relu"; classifier: F32Linear }
  | { kind: "token"; classifier: F32Linear }
  | { kind: "qa"; classifier: F32Linear }
  /** transform dense + activation + LayerNorm, then the tied decoder (word table) + bias. */
  | { kind: "mlm"; transform: Q8Linear; transformActivation: Activation; transformNorm: LayerNormRef; decoderBias: TensorRef }
  /** last_hidden_state (and pooler_output when the graph has it). */
  | { kind: "none"; pool?: F32Linear };

export interface OutputSpec {
  name: string;
  /** As the ONNX graph declares them: symbolic names or sizes. */
  dims: (string | number)[];
}

export interface BertWasmMeta {
  format: "bert-wasm";
  version: number;
  /** HF class the graph corresponds to, e.g. "BertForSequenceClassification" (inferred from the graph). */
  architecture: string;
  modelType: "bert" | "distilbert";
  /** What the ONNX initializers were: fp32, or int8 (dynamic quantization). */
  source: "fp32" | "int8";
  hidden: number;
  hiddenPadded: number;
  heads: number;
  layers: number;
  intermediate: number;
  vocab: number;
  maxPositions: number;
  typeVocab: number;
  activation: Activation;
  inputNames: string[];
  /** Rank of input_ids: 2 ([batch, seq]) or 3 ([batch, choices, seq]). */
  inputRank: number;
  outputs: OutputSpec[];
  embeddings: { word: Q8Table; position: Q8Table; tokenType?: Q8Table; norm: LayerNormRef };
  encoder: EncoderLayer[];
  head: Head;
  dataLength: number;
}

export const DTYPE_BYTES: Record<DType, number> = { i8: 1, i32: 4, f32: 4 };

export const align = (n: number, a = ALIGN) => Math.ceil(n / a) * a;

export class BertWasmFormatError extends Error {
  override name = "BertWasmFormatError";
}

/** Parses the header; returns the metadata and where the data section starts in `bytes`. */
export function readHeader(bytes: Uint8Array): { meta: BertWasmMeta; dataStart: number } {
  if (bytes.byteLength < 16 || new TextDecoder().decode(bytes.subarray(0, 8)) !== MAGIC) {
    throw new BertWasmFormatError("not a bert-wasm packed model (magic BERTWASM missing)");
  }
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const version = view.getUint32(8, true);
  if (version !== FORMAT_VERSION) throw new BertWasmFormatError(`bert-wasm format version ${version}; this build reads ${FORMAT_VERSION}`);
  const jsonLength = view.getUint32(12, true);
  const meta = JSON.parse(new TextDecoder().decode(bytes.subarray(16, 16 + jsonLength))) as BertWasmMeta;
  const dataStart = align(16 + jsonLength);
  if (bytes.byteLength < dataStart + meta.dataLength) {
    throw new BertWasmFormatError(`bert-wasm model truncated: ${bytes.byteLength} bytes, header says ${dataStart + meta.dataLength}`);
  }
  return { meta, dataStart };
}

/** Serializes metadata + data section. */
export function writeFile(meta: BertWasmMeta, data: Uint8Array): Uint8Array {
  const json = new TextEncoder().encode(JSON.stringify(meta));
  const dataStart = align(16 + json.byteLength);
  const out = new Uint8Array(dataStart + data.byteLength);
  out.set(new TextEncoder().encode(MAGIC), 0);
  const view = new DataView(out.buffer);
  view.setUint32(8, FORMAT_VERSION, true);
  view.setUint32(12, json.byteLength, true);
  out.set(json, 16);
  out.set(data, dataStart);
  return out;
}

/** The graph is not a BERT-family model this backend implements: the caller falls back to onnxruntime-web. */
export class BertWasmUnsupportedError extends Error {
  override name = "BertWasmUnsupportedError";
}
