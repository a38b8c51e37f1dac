/**
 * `bert-edge quantize`: int8 dynamic quantization of an fp32 BERT graph, in TypeScript.
 *
 * Produces the same graph as tools/fixtures/quantize.py (which mirrors onnxruntime's
 * `quantize_dynamic` with per-tensor QInt8 weights), node for node and byte for byte:
 *
 * - `MatMul` whose B is a 2-D float initializer (or a [1, 0] `Transpose` of one, the tied MLM
 *   decoder): x → DynamicQuantizeLinear → MatMulInteger(x_q, W_q, x_zp, W_zp) → Cast(float)
 *   → Mul(x_scale · W_scale). The bias `Add` after it is untouched; an activation feeding several
 *   MatMuls (Q/K/V) is quantized once.
 * - `Gather` on a 2-D float initializer (embedding tables): Gather(W_q) → DequantizeLinear.
 * - Everything else (Gemm pooler/classifier, LayerNorm, biases) stays fp32.
 *
 * Weights are symmetric int8 in [-127, 127] with zero point 0 and one scale per tensor: ORT's
 * MatMulInteger takes only a scalar (or per-column) B zero point, and per-tensor is what
 * quantize_dynamic does by default. A float initializer used by several quantized nodes is
 * quantized once, so the MLM decoder tied to the word embeddings keeps a single int8 copy, feeding
 * both the embedding Gather (through DequantizeLinear) and the decoder MatMulInteger (through a
 * Transpose that ORT constant-folds at session creation, costing one transient copy in memory,
 * not on disk or on the wire).
 */
import { readFile, stat, writeFile, mkdir } from "node:fs/promises";
import { dirname, join } from "node:path";
import {
  attribute,
  DataType,
  decodeModel,
  encodeModel,
  floatData,
  int,
  intAttr,
  intsAttr,
  loadExternalData,
  makeNode,
  makeTensor,
  type Model,
  type Node,
  type Tensor,
} from "./onnx.ts";

export interface QuantizedWeight {
  q: Int8Array;
  scale: number;
}

/** Symmetric per-tensor int8 quantization, as ORT's quant_utils.quantize_data (qrange ±127). */
export function quantizeWeight(w: Float32Array): QuantizedWeight {
  let rmin = 0;
  let rmax = 0;
  for (const v of w) {
    if (v < rmin) rmin = v;
    if (v > rmax) rmax = v;
  }
  const absmax = Math.max(-rmin, rmax);
  const scale = absmax > 0 ? Math.fround(absmax / 127) : 1;
  const q = new Int8Array(w.length);
  for (let i = 0; i < w.length; i++) {
    // float32 division then round-half-to-even, like numpy's rint(w / scale) on float32 arrays
    q[i] = Math.min(127, Math.max(-127, rint(Math.fround(w[i] / scale))));
  }
  return { q, scale };
}

function rint(x: number): number {
  const f = Math.floor(x);
  const d = x - f;
  if (d !== 0.5) return d < 0.5 ? f : f + 1;
  return f % 2 === 0 ? f : f + 1;
}

const QUANTIZED_OPS = new Set(["DynamicQuantizeLinear", "MatMulInteger", "QLinearMatMul", "DequantizeLinear", "QuantizeLinear"]);

class Quantizer {
  private readonly inits: Map<string, Tensor>;
  private readonly producers = new Map<string, Node>();
  private readonly newInits: Tensor[] = [];
  private readonly qweights = new Map<string, [string, string, string]>();
  private readonly qacts = new Map<string, [string, string, string]>();
  private readonly transposed = new Map<string, string>();
  private readonly nodes: Node[] = [];

  constructor(private readonly model: Model) {
    this.inits = new Map(model.graph.initializer.map((t) => [t.name, t]));
    for (const n of model.graph.node) for (const o of n.output) this.producers.set(o, n);
  }

  private isFloatInit(name: string): boolean {
    const t = this.inits.get(name);
    return t !== undefined && t.data_type === DataType.FLOAT && t.dims.length === 2;
  }

  private qweight(name: string): [string, string, string] {
    let names = this.qweights.get(name);
    if (!names) {
      const t = this.inits.get(name)!;
      const { q, scale } = quantizeWeight(floatData(t));
      names = [`${name}_quantized`, `${name}_scale`, `${name}_zero_point`];
      this.newInits.push(
        makeTensor(names[0], DataType.INT8, t.dims.map(int), q),
        makeTensor(names[1], DataType.FLOAT, [], Float32Array.of(scale)),
        makeTensor(names[2], DataType.INT8, [], Int8Array.of(0)),
      );
      this.qweights.set(name, names);
    }
    return names;
  }

  private qact(name: string): [string, string, string] {
    let names = this.qacts.get(name);
    if (!names) {
      const base = strip(name.replaceAll(":", "_").replaceAll("/", "_"), "_");
      names = [`${base}_quantized`, `${base}_scale`, `${base}_zero_point`];
      this.nodes.push(makeNode("DynamicQuantizeLinear", [name], [...names], `${base}_QuantizeLinear`));
      this.qacts.set(name, names);
    }
    return names;
  }

  /** [float initializer, transposed?] for a quantizable MatMul B input. */
  private matmulWeight(node: Node): [string, boolean] | undefined {
    const b = node.input[1];
    if (this.isFloatInit(b)) return [b, false];
    const prod = this.producers.get(b);
    if (prod?.op_type === "Transpose" && this.isFloatInit(prod.input[0])) {
      const perm = attribute(prod, "perm")?.ints?.map(int) ?? [1, 0];
      if (perm.length === 2 && perm[0] === 1 && perm[1] === 0) return [prod.input[0], true];
    }
    return undefined;
  }

  run(): Model {
    const { graph } = this.model;
    for (const node of graph.node) {
      const weight = node.op_type === "MatMul" ? this.matmulWeight(node) : undefined;
      if (weight) {
        const [wname, isTransposed] = weight;
        let [wq, ws, wz] = this.qweight(wname);
        if (isTransposed) {
          if (!this.transposed.has(wq)) {
            const tname = `${wq}_transposed`;
            this.nodes.push(makeNode("Transpose", [wq], [tname], tname, [intsAttr("perm", [1, 0])]));
            this.transposed.set(wq, tname);
          }
          wq = this.transposed.get(wq)!;
        }
        const [xq, xs, xz] = this.qact(node.input[0]);
        const base = baseName(node);
        const mmi = `${base}_output_quantized`;
        const cast = `${base}_output_quantized_cast_output`;
        const sc = `${base}_scales_mul_output`;
        this.nodes.push(
          makeNode("MatMulInteger", [xq, wq, xz, wz], [mmi], `${base}_quant`),
          makeNode("Cast", [mmi], [cast], `${base}_output_quantized_cast`, [intAttr("to", DataType.FLOAT)]),
          makeNode("Mul", [xs, ws], [sc], `${base}_scales_mul`),
          makeNode("Mul", [cast, sc], [node.output[0]], `${base}_output_scale_mul`),
        );
      } else if (node.op_type === "Gather" && this.isFloatInit(node.input[0])) {
        const [wq, ws, wz] = this.qweight(node.input[0]);
        const base = baseName(node);
        const gq = `${node.output[0]}_quantized`;
        this.nodes.push(
          makeNode("Gather", [wq, node.input[1]], [gq], `${base}_quant`, [intAttr("axis", int(attribute(node, "axis")?.i))]),
          makeNode("DequantizeLinear", [gq, ws, wz], [node.output[0]], `${base}_DequantizeLinear`),
        );
      } else {
        this.nodes.push(node);
      }
    }

    // Drop what became dead: the fp32 weights, and the fp32 Transpose of a tied embedding.
    const used = new Set(graph.output.map((o) => o.name));
    const keep: Node[] = [];
    for (const n of [...this.nodes].reverse()) {
      if (!n.output.some((o) => used.has(o))) continue;
      keep.push(n);
      for (const i of n.input) if (i) used.add(i);
    }
    graph.node = keep.reverse();
    graph.initializer = [...graph.initializer, ...this.newInits].filter((t) => used.has(t.name));
    // Shapes recorded for rewritten tensors are stale, and ORT infers them anyway.
    graph.value_info = [];
    // DynamicQuantizeLinear / MatMulInteger are default-domain ops from opset 11.
    for (const op of this.model.opset_import) {
      if (["", "ai.onnx"].includes(op.domain ?? "") && int(op.version) < 11) op.version = 11;
    }
    return this.model;
  }
}

function strip(s: string, ch: string): string {
  let start = 0;
  let end = s.length;
  while (start < end && s[start] === ch) start++;
  while (end > start && s[end - 1] === ch) end--;
  return s.slice(start, end);
}

function baseName(node: Node): string {
  return strip(node.name ?? "", "/").replaceAll("/", "_") || node.output[0];
}

/** Quantizes a decoded fp32 graph in place (its external data must be loaded). */
export function quantizeGraph(model: Model): Model {
  const already = model.graph.node.find((n) => QUANTIZED_OPS.has(n.op_type));
  if (already) throw new Error(`the graph is already quantized (it has a ${already.op_type} node)`);
  return new Quantizer(model).run();
}

/** fp32 ONNX bytes (weights inline) → int8 dynamically quantized ONNX bytes. */
export function quantizeModel(fp32: Uint8Array): Uint8Array {
  return encodeModel(quantizeGraph(decodeModel(fp32)));
}

/** Reads a graph (and its external data), quantizes it and writes it with weights inline. */
export async function quantizeFile(input: string, output: string): Promise<{ before: number; after: number }> {
  const graph = new Uint8Array(await readFile(input));
  const model = decodeModel(graph);
  const external = await loadExternalData(model, input);
  const bytes = encodeModel(quantizeGraph(model));
  await mkdir(dirname(output), { recursive: true });
  await writeFile(output, bytes);
  return { before: graph.byteLength + external, after: bytes.byteLength };
}

const USAGE = "usage: bert-edge quantize <in.onnx> <out.onnx>  |  bert-edge quantize <model-folder>";

/** `bert-edge quantize <in.onnx> <out.onnx>` or `bert-edge quantize <folder>` (onnx/model.onnx → onnx/model_quantized.onnx). */
export async function quantizeCommand(argv: string[]): Promise<void> {
  if (argv.includes("-h") || argv.includes("--help")) {
    console.log(USAGE);
    return;
  }
  let [input, output] = argv;
  if (!input || argv.length > 2) throw new Error(USAGE);
  if ((await stat(input)).isDirectory()) {
    if (output) throw new Error(USAGE);
    output = join(input, "onnx", "model_quantized.onnx");
    input = join(input, "onnx", "model.onnx");
  } else if (!output) {
    throw new Error(USAGE);
  }
  const { before, after } = await quantizeFile(input, output);
  console.error(`bert-edge: quantized ${input} (${mib(before)}) → ${output} (${mib(after)}, ${((100 * after) / before).toFixed(0)}%)`);
}

export const mib = (bytes: number) => `${(bytes / 2 ** 20).toFixed(2)} MiB`;
