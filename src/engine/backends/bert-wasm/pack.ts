/**
 * ONNX (fp32 or dynamic-int8, torch.onnx / Optimum export of a BERT-family model) -> bert-wasm packed
 * weights (format.ts). Offline: reads the graph with src/cli/onnx.ts (protobufjs), so it is not meant
 * for the Workers bundle; the runtime side (index.ts) only needs format.ts.
 *
 * Linear weights in these exports are anonymous (`onnx::MatMul_358`), so each linear is found from
 * its named bias: the node consuming `...query.bias` (Add or Gemm) is followed back through the
 * dynamic-quantization Mul/Cast chain to its MatMul / MatMulInteger / Gemm and weight initializer
 * (through a Transpose or DequantizeLinear if there is one). Head count comes from the Reshape of the
 * query projection, LayerNorm epsilon from each LayerNorm's `Add(variance, eps)` (or a fused
 * LayerNormalization's attribute), the activation from the graph's Erf / Relu nodes.
 */
import {
  type Model,
  type Node,
  type Tensor,
  DataType,
  attribute,
  decodeModel,
  floatData,
  int,
  isExternal,
  rawBytes,
} from "../../../cli/onnx.ts";
import {
  type Activation,
  type BertWasmMeta,
  type DType,
  type EncoderLayer,
  type F32Linear,
  type Head,
  type LayerNormRef,
  type OutputSpec,
  type Q8Linear,
  type Q8Table,
  type TensorRef,
  ALIGN,
  BertWasmUnsupportedError,
  DTYPE_BYTES,
  FORMAT_VERSION,
  Q8_PANEL,
  align,
  q8Offset,
  writeFile,
} from "./format.ts";

export { BertWasmUnsupportedError };

export interface PackOptions {
  /** Overrides for values normally read from the graph. */
  numHeads?: number;
  layerNormEps?: number;
}

interface Weight {
  /** f32 [n][k] (out-channel major). */
  data: Float32Array;
  n: number;
  k: number;
  /** Set when the source was symmetric int8 with this per-tensor scale: requantization is lossless. */
  sourceScale?: number;
}

class DataWriter {
  private chunks: { offset: number; bytes: Uint8Array }[] = [];
  length = 0;
  add(dtype: DType, shape: number[], data: Int8Array | Int32Array | Float32Array): TensorRef {
    const bytes = new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
    const expected = shape.reduce((a, b) => a * b, 1) * DTYPE_BYTES[dtype];
    if (bytes.byteLength !== expected) throw new Error(`internal: tensor ${shape} ${dtype} has ${bytes.byteLength} bytes`);
    const offset = align(this.length, ALIGN);
    this.chunks.push({ offset, bytes });
    this.length = offset + bytes.byteLength;
    return { offset, dtype, shape };
  }
  finish(): Uint8Array {
    const out = new Uint8Array(align(this.length, ALIGN));
    for (const c of this.chunks) out.set(c.bytes, c.offset);
    return out;
  }
}

class Graph {
  readonly inits = new Map<string, Tensor>();
  readonly producer = new Map<string, Node>();
  readonly consumers = new Map<string, Node[]>();
  constructor(readonly model: Model) {
    for (const t of model.graph.initializer) this.inits.set(t.name, t);
    for (const n of model.graph.node) {
      for (const o of n.output) this.producer.set(o, n);
      for (const i of n.input) {
        if (!i) continue;
        const list = this.consumers.get(i) ?? [];
        list.push(n);
        this.consumers.set(i, list);
      }
    }
  }

  has(name: string): boolean {
    return this.inits.has(name) || this.inits.has(`${name}_quantized`);
  }

  /** Constant value (initializer or Constant node) as numbers, or undefined. */
  constant(name: string): number[] | undefined {
    let t = this.inits.get(name);
    if (!t) {
      const p = this.producer.get(name);
      if (p?.op_type === "Constant") t = attribute(p, "value")?.t ?? undefined;
    }
    if (!t) return undefined;
    const bytes = new Uint8Array(rawBytes(t));
    const view = new DataView(bytes.buffer);
    const n = t.dims.reduce<number>((a, d) => a * int(d), 1);
    const out: number[] = [];
    for (let i = 0; i < n; i++) {
      switch (t.data_type) {
        case DataType.FLOAT: out.push(view.getFloat32(i * 4, true)); break;
        case DataType.DOUBLE: out.push(view.getFloat64(i * 8, true)); break;
        case DataType.INT64: out.push(Number(view.getBigInt64(i * 8, true))); break;
        case DataType.INT32: out.push(view.getInt32(i * 4, true)); break;
        default: return undefined;
      }
    }
    return out;
  }

  /** An initializer as f32, dequantizing `<name>_quantized` / `_scale` / `_zero_point` (ORT quantize_dynamic naming). */
  tensor(name: string): { data: Float32Array; dims: number[]; sourceScale?: number } {
    const t = this.inits.get(name);
    if (t) return this.fromTensor(t);
    const q = this.inits.get(`${name}_quantized`);
    if (q) return this.dequantize(q, `${name}_scale`, `${name}_zero_point`);
    throw new BertWasmUnsupportedError(`initializer ${name} not found`);
  }

  private fromTensor(t: Tensor): { data: Float32Array; dims: number[]; sourceScale?: number } {
    if (isExternal(t)) throw new BertWasmUnsupportedError(`initializer ${t.name} is in external data; pass a self-contained graph`);
    const dims = t.dims.map(int);
    if (t.data_type === DataType.FLOAT) return { data: floatData(t), dims };
    if (t.data_type === DataType.INT8 || t.data_type === DataType.UINT8) {
      const base = t.name.endsWith("_quantized") ? t.name.slice(0, -"_quantized".length) : t.name;
      return this.dequantize(t, `${base}_scale`, `${base}_zero_point`);
    }
    throw new BertWasmUnsupportedError(`initializer ${t.name}: data type ${t.data_type} not supported`);
  }

  private dequantize(q: Tensor, scaleName: string, zpName: string, scaleOverride?: number[], zpOverride?: number[]) {
    const scale = scaleOverride ?? this.constant(scaleName);
    const zpT = this.inits.get(zpName);
    let zp = zpOverride ?? [0];
    if (!zpOverride && zpT) zp = Array.from(q.data_type === DataType.UINT8 ? new Uint8Array(rawBytes(zpT)) : new Int8Array(new Uint8Array(rawBytes(zpT)).buffer));
    if (!scale || scale.length !== 1 || zp.length !== 1) {
      throw new BertWasmUnsupportedError(`${q.name}: only per-tensor quantized initializers are supported`);
    }
    const raw = new Uint8Array(rawBytes(q));
    const values = q.data_type === DataType.UINT8 ? raw : new Int8Array(raw.buffer, raw.byteOffset, raw.byteLength);
    const s = Math.fround(scale[0]);
    const data = new Float32Array(values.length);
    let symmetric = zp[0] === 0 && q.data_type === DataType.INT8;
    for (let i = 0; i < values.length; i++) {
      data[i] = (values[i] - zp[0]) * s;
      if (values[i] === -128) symmetric = false;
    }
    return { data, dims: q.dims.map(int), sourceScale: symmetric ? s : undefined };
  }

  /** Resolves a MatMul B / Gemm B input to an f32 [n][k] weight. `kn`: the tensor is laid out [k][n]. */
  weightInput(name: string, kn: boolean): Weight {
    const p = this.producer.get(name);
    if (p?.op_type === "Transpose") {
      const perm = attribute(p, "perm")?.ints?.map(int);
      if (perm && !(perm.length === 2 && perm[0] === 1 && perm[1] === 0)) throw new BertWasmUnsupportedError(`Transpose ${p.name}: perm ${perm}`);
      return this.weightInput(p.input[0], !kn);
    }
    if (p?.op_type === "DequantizeLinear") {
      const q = this.inits.get(p.input[0]);
      if (!q) throw new BertWasmUnsupportedError(`DequantizeLinear ${p.name}: input is not an initializer`);
      const t = this.dequantize(q, p.input[1], p.input[2] ?? "");
      return toNK(t.data, t.dims, kn, t.sourceScale);
    }
    const t = this.inits.get(name);
    if (!t) throw new BertWasmUnsupportedError(`weight ${name} is not an initializer`);
    const f = this.fromTensor(t);
    return toNK(f.data, f.dims, kn, f.sourceScale);
  }

  /** The linear whose bias initializer is `biasName`: weight f32 [n][k] + bias. */
  linear(biasName: string): { weight: Weight; bias: Float32Array; node: Node } {
    const bias = this.tensor(biasName).data;
    const users = this.consumers.get(biasName) ?? [];
    for (const u of users) {
      if (u.op_type === "Gemm") {
        const transB = int(attribute(u, "transB")?.i);
        const transA = int(attribute(u, "transA")?.i);
        if (transA) throw new BertWasmUnsupportedError(`Gemm ${u.name} with transA`);
        const alpha = attribute(u, "alpha")?.f ?? 1;
        const beta = attribute(u, "beta")?.f ?? 1;
        if (alpha !== 1 || beta !== 1) throw new BertWasmUnsupportedError(`Gemm ${u.name}: alpha/beta != 1`);
        return { weight: this.weightInput(u.input[1], !transB), bias, node: u };
      }
      if (u.op_type === "Add") {
        const other = u.input[0] === biasName ? u.input[1] : u.input[0];
        const mm = this.findMatMul(other, 0);
        if (mm) return { weight: this.matMulWeight(mm), bias, node: u };
      }
    }
    throw new BertWasmUnsupportedError(`no MatMul/Gemm found for bias ${biasName}`);
  }

  private findMatMul(name: string, depth: number): Node | undefined {
    const p = this.producer.get(name);
    if (!p || depth > 4) return undefined;
    if (p.op_type === "MatMul" || p.op_type === "MatMulInteger") return p;
    if (p.op_type === "Cast") return this.findMatMul(p.input[0], depth + 1);
    if (p.op_type === "Mul") {
      for (const i of p.input) {
        const m = this.findMatMul(i, depth + 1);
        if (m) return m;
      }
    }
    return undefined;
  }

  private matMulWeight(mm: Node): Weight {
    if (mm.op_type === "MatMul") return this.weightInput(mm.input[1], true);
    // MatMulInteger(a_q, b_q, a_zp, b_zp) -> Cast -> Mul(., a_scale * b_scale): ORT quantize_dynamic naming.
    let b = mm.input[1];
    let kn = true;
    const p = this.producer.get(b);
    if (p?.op_type === "Transpose") {
      b = p.input[0];
      kn = false;
    }
    const q = this.inits.get(b);
    if (!q || !b.endsWith("_quantized")) throw new BertWasmUnsupportedError(`MatMulInteger ${mm.name}: weight ${b} is not a quantized initializer`);
    const base = b.slice(0, -"_quantized".length);
    const t = this.dequantize(q, `${base}_scale`, mm.input[3] || `${base}_zero_point`);
    return toNK(t.data, t.dims, kn, t.sourceScale);
  }

  /** LayerNorm epsilon for the LayerNorm with weight `gammaName`. */
  layerNormEps(gammaName: string): number | undefined {
    for (const u of this.consumers.get(gammaName) ?? []) {
      if (u.op_type === "LayerNormalization") return attribute(u, "epsilon")?.f ?? 1e-5;
      if (u.op_type !== "Mul") continue;
      const other = u.input[0] === gammaName ? u.input[1] : u.input[0];
      const div = this.producer.get(other);
      if (div?.op_type !== "Div") continue;
      const sqrt = this.producer.get(div.input[1]);
      if (sqrt?.op_type !== "Sqrt") continue;
      const add = this.producer.get(sqrt.input[0]);
      if (add?.op_type !== "Add") continue;
      for (const i of add.input) {
        const c = this.constant(i);
        if (c && c.length === 1) return c[0];
      }
    }
    return undefined;
  }

  /** Number of attention heads from the Reshape [b, s, heads, head_dim] of the query projection. */
  numHeads(queryBias: string): number | undefined {
    const add = (this.consumers.get(queryBias) ?? []).find((n) => n.op_type === "Add");
    if (!add) return undefined;
    for (const r of this.consumers.get(add.output[0]) ?? []) {
      if (r.op_type !== "Reshape") continue;
      const shape = this.constant(r.input[1]);
      if (shape?.length === 4) return shape[2];
      const concat = this.producer.get(r.input[1]);
      if (concat?.op_type === "Concat" && concat.input.length === 4) {
        const c = this.constant(concat.input[2]);
        if (c?.length === 1) return c[0];
      }
    }
    return undefined;
  }

  count(op: string): number {
    return this.model.graph.node.filter((n) => n.op_type === op).length;
  }
}

function toNK(data: Float32Array, dims: number[], kn: boolean, sourceScale?: number): Weight {
  if (dims.length !== 2) throw new BertWasmUnsupportedError(`weight of rank ${dims.length}`);
  if (!kn) return { data, n: dims[0], k: dims[1], sourceScale };
  const [k, n] = dims;
  const out = new Float32Array(n * k);
  for (let i = 0; i < k; i++) for (let j = 0; j < n; j++) out[j * k + i] = data[i * n + j];
  return { data: out, n, k, sourceScale };
}

const pad16 = (k: number) => Math.ceil(k / 16) * 16;

/** Rows padded to the GEMM's panel: n rounded up to Q8_PANEL. */
const panelRows = (n: number) => Math.ceil(n / Q8_PANEL) * Q8_PANEL;

/** A float vector zero-padded to the panel rows (biases of int8 linears: the GEMM reads whole panels). */
const padToPanel = (v: Float32Array) => {
  const out = new Float32Array(panelRows(v.length));
  out.set(v);
  return out;
};

/**
 * int8 rows with per-row scale, in the kernels' panel layout (q8Offset; rows padded with zeros):
 * lossless when the source was symmetric per-tensor int8.
 */
function quantizeRows(w: Weight): { q: Int8Array; scale: Float32Array; wsum: Int32Array; kp: number; np: number } {
  const { n, k, data } = w;
  const kp = pad16(k);
  const np = panelRows(n);
  const q = new Int8Array(np * kp);
  const scale = new Float32Array(np);
  const wsum = new Int32Array(np);
  for (let r = 0; r < n; r++) {
    const row = data.subarray(r * k, r * k + k);
    let s: number;
    if (w.sourceScale !== undefined) s = w.sourceScale;
    else {
      let amax = 0;
      for (let i = 0; i < k; i++) amax = Math.max(amax, Math.abs(row[i]));
      s = Math.fround(amax > 0 ? amax / 127 : 1);
    }
    scale[r] = s;
    let sum = 0;
    for (let i = 0; i < k; i++) {
      const v = Math.max(-127, Math.min(127, Math.round(row[i] / s)));
      q[q8Offset(r, i, kp)] = v;
      sum += v;
    }
    wsum[r] = sum;
  }
  return { q, scale, wsum, kp, np };
}

function concatWeights(ws: Weight[]): Weight {
  const k = ws[0].k;
  if (ws.some((w) => w.k !== k)) throw new BertWasmUnsupportedError("Q/K/V input sizes differ");
  const n = ws.reduce((a, w) => a + w.n, 0);
  const data = new Float32Array(n * k);
  let o = 0;
  for (const w of ws) {
    data.set(w.data, o);
    o += w.data.length;
  }
  // Keep the lossless path only when all three share one source scale.
  const s = ws[0].sourceScale;
  return { data, n, k, sourceScale: s !== undefined && ws.every((w) => w.sourceScale === s) ? s : undefined };
}

function concatF32(parts: Float32Array[]): Float32Array {
  const out = new Float32Array(parts.reduce((a, p) => a + p.length, 0));
  let o = 0;
  for (const p of parts) {
    out.set(p, o);
    o += p.length;
  }
  return out;
}

function elemDims(g: Model["graph"]["input"][number]): (string | number)[] {
  return (g.type?.tensor_type?.shape?.dim ?? []).map((d) => (d.dim_param ? d.dim_param : d.dim_value != null ? int(d.dim_value) : ""));
}

/** Packs an ONNX BERT/DistilBERT export into the bert-wasm format. Throws BertWasmUnsupportedError for anything else. */
export function packBertWasm(onnxBytes: Uint8Array, options: PackOptions = {}): Uint8Array {
  let model: Model;
  try {
    model = decodeModel(onnxBytes);
  } catch (err) {
    throw new BertWasmUnsupportedError(`not an ONNX model: ${(err as Error).message}`);
  }
  const g = new Graph(model);
  const w = new DataWriter();

  // --- architecture ------------------------------------------------------------------------
  let modelType: "bert" | "distilbert";
  let p: string;
  if (g.has("bert.embeddings.word_embeddings.weight")) [modelType, p] = ["bert", "bert."];
  else if (g.has("distilbert.embeddings.word_embeddings.weight")) [modelType, p] = ["distilbert", "distilbert."];
  else if (g.has("embeddings.word_embeddings.weight") && g.has("encoder.layer.0.attention.self.query.bias")) [modelType, p] = ["bert", ""];
  else {
    const sample = [...g.inits.keys()].slice(0, 4).join(", ");
    throw new BertWasmUnsupportedError(`unknown architecture: no BERT or DistilBERT embeddings among the initializers (${sample}, ...)`);
  }
  for (const name of g.inits.keys()) {
    if (/distance_embedding|relative_attention|rel_embeddings/.test(name)) {
      throw new BertWasmUnsupportedError(`unsupported: relative position embeddings (${name}); only absolute positions`);
    }
  }
  if (modelType === "distilbert" && !g.has("distilbert.embeddings.position_embeddings.weight")) {
    throw new BertWasmUnsupportedError("unsupported: DistilBERT with sinusoidal position embeddings");
  }

  const names =
    modelType === "bert"
      ? (i: number) => {
          const l = `${p}encoder.layer.${i}.`;
          return {
            q: `${l}attention.self.query.bias`, k: `${l}attention.self.key.bias`, v: `${l}attention.self.value.bias`,
            o: `${l}attention.output.dense.bias`, attnNorm: `${l}attention.output.LayerNorm`,
            ffnIn: `${l}intermediate.dense.bias`, ffnOut: `${l}output.dense.bias`, ffnNorm: `${l}output.LayerNorm`,
          };
        }
      : (i: number) => {
          const l = `${p}transformer.layer.${i}.`;
          return {
            q: `${l}attention.q_lin.bias`, k: `${l}attention.k_lin.bias`, v: `${l}attention.v_lin.bias`,
            o: `${l}attention.out_lin.bias`, attnNorm: `${l}sa_layer_norm`,
            ffnIn: `${l}ffn.lin1.bias`, ffnOut: `${l}ffn.lin2.bias`, ffnNorm: `${l}output_layer_norm`,
          };
        };
  let layers = 0;
  while (g.has(names(layers).q)) layers++;
  if (layers === 0) throw new BertWasmUnsupportedError("no encoder layers found");

  const activation: Activation = g.count("Erf") >= layers ? "gelu" : g.count("Relu") >= layers ? "relu" : (() => {
    throw new BertWasmUnsupportedError("unsupported hidden activation (only exact-erf GELU and ReLU)");
  })();

  // --- embeddings -----------------------------------------------------------------------------
  const table = (name: string): Q8Table => {
    const t = g.tensor(name);
    if (t.dims.length !== 2) throw new BertWasmUnsupportedError(`${name}: rank ${t.dims.length}`);
    const r = quantizeRows({ data: t.data, n: t.dims[0], k: t.dims[1], sourceScale: t.sourceScale });
    return {
      rows: t.dims[0], k: t.dims[1], kp: r.kp,
      weight: w.add("i8", [r.np, r.kp], r.q),
      scale: w.add("f32", [r.np], r.scale),
      wsum: w.add("i32", [r.np], r.wsum),
    };
  };
  const eps = (gamma: string) => {
    const e = options.layerNormEps ?? g.layerNormEps(gamma);
    if (e === undefined) throw new BertWasmUnsupportedError(`could not read the LayerNorm epsilon of ${gamma}; pass layerNormEps`);
    return e;
  };
  const norm = (base: string): LayerNormRef => {
    const gamma = g.tensor(`${base}.weight`).data;
    const beta = g.tensor(`${base}.bias`).data;
    return { gamma: w.add("f32", [gamma.length], gamma), beta: w.add("f32", [beta.length], beta), eps: eps(`${base}.weight`) };
  };
  const word = table(`${p}embeddings.word_embeddings.weight`);
  const position = table(`${p}embeddings.position_embeddings.weight`);
  const tokenType = g.has(`${p}embeddings.token_type_embeddings.weight`) ? table(`${p}embeddings.token_type_embeddings.weight`) : undefined;
  const embNorm = norm(`${p}embeddings.LayerNorm`);
  const hidden = word.k;
  if (hidden % 4) throw new BertWasmUnsupportedError(`hidden size ${hidden} is not a multiple of 4`);

  // --- encoder --------------------------------------------------------------------------------
  const q8 = (weight: Weight, bias: Float32Array): Q8Linear => {
    const r = quantizeRows(weight);
    return {
      n: weight.n, k: weight.k, kp: r.kp,
      weight: w.add("i8", [r.np, r.kp], r.q),
      scale: w.add("f32", [r.np], r.scale),
      wsum: w.add("i32", [r.np], r.wsum),
      bias: w.add("f32", [r.np], padToPanel(bias)),
    };
  };
  const q8Linear = (biasName: string): Q8Linear => {
    const l = g.linear(biasName);
    return q8(l.weight, l.bias);
  };
  const f32Linear = (biasName: string): F32Linear => {
    const l = g.linear(biasName);
    return { n: l.weight.n, k: l.weight.k, weight: w.add("f32", [l.weight.n, l.weight.k], l.weight.data), bias: w.add("f32", [l.bias.length], l.bias) };
  };

  const heads = options.numHeads ?? g.numHeads(names(0).q);
  if (!heads || hidden % heads) throw new BertWasmUnsupportedError(`could not read the number of attention heads (hidden ${hidden}); pass numHeads`);

  const encoder: EncoderLayer[] = [];
  for (let i = 0; i < layers; i++) {
    const n = names(i);
    const lq = g.linear(n.q), lk = g.linear(n.k), lv = g.linear(n.v);
    for (const l of [lq, lk, lv]) if (l.weight.n !== hidden || l.weight.k !== hidden) throw new BertWasmUnsupportedError(`layer ${i}: attention projection is ${l.weight.n}x${l.weight.k}`);
    const qkv = q8(concatWeights([lq.weight, lk.weight, lv.weight]), concatF32([lq.bias, lk.bias, lv.bias]));
    const attnOut = q8Linear(n.o);
    const attnNorm = norm(n.attnNorm);
    const ffnIn = q8Linear(n.ffnIn);
    const ffnOut = q8Linear(n.ffnOut);
    const ffnNorm = norm(n.ffnNorm);
    encoder.push({ qkv, attnOut, attnNorm, ffnIn, ffnOut, ffnNorm });
  }
  const intermediate = encoder[0].ffnIn.n;

  // --- inputs / outputs ------------------------------------------------------------------------
  const inputNames = model.graph.input.map((i) => i.name).filter((n) => !g.inits.has(n));
  for (const n of inputNames) {
    if (!["input_ids", "attention_mask", "token_type_ids"].includes(n)) throw new BertWasmUnsupportedError(`unsupported graph input ${n}`);
  }
  const idsInput = model.graph.input.find((i) => i.name === "input_ids");
  if (!idsInput) throw new BertWasmUnsupportedError("graph has no input_ids input");
  const inputRank = elemDims(idsInput).length;
  const outputs: OutputSpec[] = model.graph.output.map((o) => ({ name: o.name, dims: elemDims(o) }));
  const outNames = outputs.map((o) => o.name);

  // --- head -----------------------------------------------------------------------------------
  let head: Head;
  let architecture: string;
  const cap = modelType === "bert" ? "Bert" : "DistilBert";
  const mlmBias = modelType === "bert" ? "cls.predictions.bias" : "vocab_projector.bias";
  if (g.has(mlmBias)) {
    const [tName, tNorm] = modelType === "bert" ? ["cls.predictions.transform.dense.bias", "cls.predictions.transform.LayerNorm"] : ["vocab_transform.bias", "vocab_layer_norm"];
    const dec = g.linear(mlmBias);
    // Tied decoder: the decoder weight must be the word-embedding table (we store it once).
    const emb = g.tensor(`${p}embeddings.word_embeddings.weight`).data;
    if (dec.weight.n !== word.rows || dec.weight.k !== hidden) throw new BertWasmUnsupportedError("MLM decoder shape differs from the word embeddings");
    let maxDiff = 0, maxAbs = 0;
    for (let i = 0; i < emb.length; i++) {
      maxDiff = Math.max(maxDiff, Math.abs(emb[i] - dec.weight.data[i]));
      maxAbs = Math.max(maxAbs, Math.abs(emb[i]));
    }
    if (maxDiff > 1e-6 * Math.max(1, maxAbs)) throw new BertWasmUnsupportedError("unsupported: MLM decoder not tied to the word embeddings");
    const transformAct: Activation = activation;
    head = { kind: "mlm", transform: q8Linear(tName), transformActivation: transformAct, transformNorm: norm(tNorm), decoderBias: w.add("f32", [panelRows(dec.bias.length)], padToPanel(dec.bias)) };
    architecture = `${cap}ForMaskedLM`;
  } else if (g.has("qa_outputs.bias")) {
    head = { kind: "qa", classifier: f32Linear("qa_outputs.bias") };
    architecture = `${cap}ForQuestionAnswering`;
  } else if (g.has("classifier.bias")) {
    const poolName = modelType === "bert" ? `${p}pooler.dense.bias` : "pre_classifier.bias";
    const logits = outputs.find((o) => o.name === "logits");
    if (!logits) throw new BertWasmUnsupportedError("classifier graph without a logits output");
    if (logits.dims.length === 3) {
      head = { kind: "token", classifier: f32Linear("classifier.bias") };
      architecture = `${cap}ForTokenClassification`;
    } else if (g.has(poolName)) {
      const kind = inputRank === 3 ? "multiple-choice" : "sequence";
      head = { kind, pool: f32Linear(poolName), poolActivation: modelType === "bert" ? "tanh" : "relu", classifier: f32Linear("classifier.bias") };
      architecture = `${cap}For${kind === "sequence" ? "SequenceClassification" : "MultipleChoice"}`;
    } else throw new BertWasmUnsupportedError("sequence classifier without a pooler / pre_classifier");
  } else if (outNames.includes("last_hidden_state")) {
    const poolName = `${p}pooler.dense.bias`;
    head = outNames.includes("pooler_output") && g.has(poolName) ? { kind: "none", pool: f32Linear(poolName) } : { kind: "none" };
    architecture = `${cap}Model`;
  } else {
    throw new BertWasmUnsupportedError(`unknown head: outputs ${outNames.join(", ")}`);
  }
  const supported: Record<Head["kind"], string[]> = {
    sequence: ["logits"], "multiple-choice": ["logits"], token: ["logits"], qa: ["start_logits", "end_logits"], mlm: ["logits"],
    none: head.kind === "none" && head.pool ? ["last_hidden_state", "pooler_output"] : ["last_hidden_state"],
  };
  for (const n of outNames) if (!supported[head.kind].includes(n)) throw new BertWasmUnsupportedError(`unsupported output ${n} for a ${head.kind} head`);
  if (head.kind === "multiple-choice" || inputRank === 3) {
    if (head.kind !== "multiple-choice" || (head.classifier.n !== 1)) throw new BertWasmUnsupportedError("rank-3 inputs only for multiple choice with one logit per choice");
  }

  const sourceInt8 = [...g.inits.keys()].some((n) => n.endsWith("_quantized"));
  const meta: BertWasmMeta = {
    format: "bert-wasm",
    version: FORMAT_VERSION,
    architecture,
    modelType,
    source: sourceInt8 ? "int8" : "fp32",
    hidden,
    hiddenPadded: pad16(hidden),
    heads,
    layers,
    intermediate,
    vocab: word.rows,
    maxPositions: position.rows,
    typeVocab: tokenType?.rows ?? 0,
    activation,
    inputNames,
    inputRank,
    outputs,
    embeddings: { word, position, tokenType, norm: embNorm },
    encoder,
    head,
    dataLength: 0,
  };
  const data = w.finish();
  meta.dataLength = data.byteLength;
  return writeFile(meta, data);
}
