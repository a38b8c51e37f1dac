/**
 * First-token pruning of an ONNX encoder graph: when every output of a graph reads the last layer
 * only at position 0 (a BERT pooler, a DistilBERT or ELECTRA classification head: `hidden[:, 0]`),
 * that layer needs keys and values for every token but queries, attention output, FFN and
 * LayerNorms for the first token alone. The rewrite slices the last layer's query input and its
 * residual to position 0, so those parts run on one row instead of `seq` (a sixth of a 6-layer
 * encoder's work; bert-wasm does the same in its own layer loop).
 *
 * Exact for fp32 graphs (each row is computed as before). In an int8 graph, the activations that
 * follow are quantized per tensor over the first tokens only instead of over every token, so the
 * numbers move within int8 rounding, as when requests are merged (src/engine/queue.ts).
 *
 * Purely structural and conservative: it applies only where it can prove the rule above on the
 * graph (the last Softmax, its Q·Kᵀ and P·V MatMuls, Q, K and V projections of one shared input,
 * every path from the attention to a graph output passing a Gather/Slice of position 0 on axis 1),
 * and otherwise returns the reason it did not. Token-level heads (NER, QA, fill-mask, embeddings)
 * are refused by that same check. Needs protobufjs (Node, Deno), like the bert-wasm converter.
 */
import type { Backend, ExternalData, Session } from "./backend.ts";
import { DataType, decodeModel, detachWeights, encodeModel, int, int64Data, makeNode, makeTensor, type Model, type Node, type Tensor } from "../cli/onnx.ts";

/** The rank of the pruned graph's inputs ([batch, seq] or [batch, choices, seq]), or why it was not pruned. */
export type Pruned = { inputRank: number } | { skipped: string };
/** A graph's structure and its weights as external data (views of the bytes it came from). */
export type DetachedGraph = { graph: Uint8Array; externalData: ExternalData };
/** The pruned graph and its inputs' rank; or why not, with the graph as it is but its weights detached when asked for. */
export type FirstTokenResult = (DetachedGraph & { inputRank: number }) | { skipped: string; detached?: DetachedGraph };

const PROJECTIONS = new Set(["MatMul", "MatMulInteger", "Gemm"]);
/** Ops that exporters use to compute shapes from `Shape` outputs and constants. */
const SHAPE_ARITHMETIC = new Set(["Gather", "Unsqueeze", "Squeeze", "Concat", "Cast", "Slice", "Reshape", "Add", "Sub", "Mul", "Div", "Equal", "Where", "ConstantOfShape", "Range"]);
/** Ops between Softmax and the P·V MatMul that keep the probabilities' shape. */
const PASS_THROUGH = new Set(["Cast", "Identity", "Dropout"]);

/**
 * ONNX bytes → the pruned graph, or why not. Its weights are not copied: see detachWeights. With
 * `externalWeights`, a graph that is not pruned comes back as `detached`: unchanged, but with its
 * inline weights as external data too.
 */
export function firstTokenGraph(bytes: Uint8Array, { externalWeights = false } = {}): FirstTokenResult {
  const model = decodeModel(bytes);
  const pruned = pruneToFirstToken(model);
  if ("skipped" in pruned && !externalWeights) return pruned;
  const externalData = detachWeights(model);
  if (!("skipped" in pruned)) return { graph: encodeModel(model), externalData, inputRank: pruned.inputRank };
  // Weights already outside (a packed model): nothing to gain from writing the graph again.
  return externalData.length ? { ...pruned, detached: { graph: encodeModel(model), externalData } } : pruned;
}

/** Prunes a decoded graph in place where the rule holds; leaves it untouched and says why otherwise. */
export function pruneToFirstToken(model: Model): Pruned {
  const g = model.graph;
  const opset = int(model.opset_import?.find((o) => !o.domain)?.version);
  if (opset < 10) return { skipped: `opset ${opset} (Slice with inputs needs 10)` };
  if (g.node.some((n) => n.op_type === "If" || n.op_type === "Loop" || n.op_type === "Scan")) return { skipped: "the graph has subgraphs" };

  const producer = new Map<string, Node>();
  const consumers = new Map<string, Node[]>();
  for (const n of g.node) {
    for (const o of n.output) producer.set(o, n);
    for (const i of n.input) {
      if (!i) continue;
      if (!consumers.has(i)) consumers.set(i, []);
      consumers.get(i)!.push(n);
    }
  }
  const initializers = new Map(g.initializer.map((t) => [t.name, t]));
  /** An int64 initializer or Constant node's values. */
  const constant = (name: string): BigInt64Array | undefined => {
    const p = producer.get(name);
    const t: Tensor | undefined = initializers.get(name) ?? (p?.op_type === "Constant" ? p.attribute?.find((a) => a.name === "value")?.t : undefined);
    return t?.data_type === DataType.INT64 ? int64Data(t) : undefined;
  };
  const ancestors = (tensor: string): Set<Node> => {
    const seen = new Set<Node>();
    const stack = [tensor];
    while (stack.length) {
      const n = producer.get(stack.pop()!);
      if (!n || seen.has(n)) continue;
      seen.add(n);
      stack.push(...n.input.filter(Boolean));
    }
    return seen;
  };
  /** The projection nearest to `tensor` upstream: a MatMul/MatMulInteger/Gemm on a constant weight. */
  const projection = (tensor: string): Node | undefined => {
    const queue = [tensor];
    const seen = new Set<Node>();
    while (queue.length) {
      const n = producer.get(queue.shift()!);
      if (!n || seen.has(n)) continue;
      seen.add(n);
      if (PROJECTIONS.has(n.op_type) && initializers.has(n.input[1])) return n;
      queue.push(...n.input.filter(Boolean));
    }
    return undefined;
  };

  /** The P·V MatMul a Softmax's probabilities feed (through shape-keeping ops), if any. */
  const pv = (softmax: Node): Node | undefined => {
    let probs = softmax.output[0];
    for (let n = consumers.get(probs); n?.length === 1 && PASS_THROUGH.has(n[0].op_type); n = consumers.get(probs)) probs = n[0].output[0];
    return consumers.get(probs)?.find((n) => n.op_type === "MatMul" && n.input[0] === probs);
  };
  // The last attention: the last Softmax that feeds a MatMul (a head may end in a Softmax of its own).
  const softmax = g.node.filter((n) => n.op_type === "Softmax" && pv(n)).at(-1);
  if (!softmax) return { skipped: "no attention Softmax → MatMul (a fused or non-attention graph)" };
  const context = pv(softmax)!;
  const index = new Map(g.node.map((n, i) => [n, i]));
  const scores = [...ancestors(softmax.input[0])].filter((n) => n.op_type === "MatMul").sort((a, b) => index.get(b)! - index.get(a)!)[0];
  if (!scores) return { skipped: "the last attention's scores are not a MatMul" };
  const [q, k, v] = [projection(scores.input[0]), projection(scores.input[1]), projection(context.input[1])];
  if (!q || !k || !v || new Set([q, k, v]).size < 3) return { skipped: "no separate Q, K and V projections" };
  const x = q.input[0];
  if (k.input[0] !== x || v.input[0] !== x) return { skipped: "Q, K and V do not read one input" };
  const quantizer = producer.get(x)?.op_type === "DynamicQuantizeLinear" ? producer.get(x)! : undefined;
  const hidden = quantizer ? quantizer.input[0] : x;
  const outputs = new Set(g.output.map((o) => o.name));
  if (outputs.has(hidden)) return { skipped: "the last layer's input is a graph output" };

  // Everything downstream of the attention must reach the outputs through a first-token selector.
  const isFirstToken = (n: Node): boolean => {
    if (n.op_type === "Gather") {
      const axis = int(n.attribute?.find((a) => a.name === "axis")?.i);
      const indices = constant(n.input[1]);
      return axis === 1 && indices?.length === 1 && indices[0] === 0n;
    }
    if (n.op_type === "Slice") {
      const [starts, ends, axes, steps] = [1, 2, 3, 4].map((i) => (n.input[i] ? constant(n.input[i]) : undefined));
      return starts?.length === 1 && starts[0] === 0n && ends?.[0] === 1n && axes?.[0] === 1n && (!n.input[4] || steps?.[0] === 1n);
    }
    return false;
  };
  const downstream = new Set<Node>();
  let selectors = 0;
  const stack = [softmax.output[0]];
  while (stack.length) {
    const t = stack.pop()!;
    if (outputs.has(t)) return { skipped: `output ${t} reads every token` };
    for (const n of consumers.get(t) ?? []) {
      if (downstream.has(n)) continue;
      downstream.add(n);
      if (isFirstToken(n)) selectors++;
      else stack.push(...n.output);
    }
  }
  if (!selectors) return { skipped: "no output reads the first token alone" };
  // ...and mix in no other per-token tensor than the values (P·V) and the layer's input (the residual,
  // sliced below): besides those and what the attention itself computes, only constants and shape
  // arithmetic (a wrong shape there fails the probe run at load instead of answering wrongly).
  const shapeValues = new Map<string, boolean>();
  const isShapeValue = (t: string): boolean => {
    if (initializers.has(t)) return true;
    if (shapeValues.has(t)) return shapeValues.get(t)!;
    const p = producer.get(t);
    const value = !!p && (p.op_type === "Shape" || p.op_type === "Constant" || (SHAPE_ARITHMETIC.has(p.op_type) && p.input.every((i) => !i || isShapeValue(i))));
    shapeValues.set(t, value);
    return value;
  };
  for (const n of downstream) {
    if (isFirstToken(n)) continue;
    const foreign = n.input.find((t) => t && !isShapeValue(t) && !downstream.has(producer.get(t)!) && t !== softmax.output[0] && t !== hidden && !(n === context && t === context.input[1]));
    if (foreign) return { skipped: `${n.op_type} ${n.name ?? ""} after the last attention reads ${foreign}, which has every token` };
  }

  // Keys and values keep every token; the query and whatever else reads the layer's input (its
  // residual) take position 0.
  const keysValues = new Set([...ancestors(scores.input[1]), ...ancestors(context.input[1])]);
  const sliceInputs = new Set<Node>();
  for (const n of consumers.get(hidden) ?? []) {
    // Shape reads (DistilBERT takes the key length from the layer's input) keep every token.
    if (keysValues.has(n) || n === quantizer || n.op_type === "Shape") continue;
    if (n !== q && !downstream.has(n)) return { skipped: `${n.op_type} ${n.name ?? ""} reads the last layer's input outside the attention` };
    sliceInputs.add(n);
  }

  const prefix = "bert_edge_first_token";
  const int64 = (name: string, value: number) => makeTensor(`${prefix}/${name}`, DataType.INT64, [1], new Uint8Array(new BigInt64Array([BigInt(value)]).buffer));
  g.initializer.push(int64("starts", 0), int64("ends", 1), int64("axes", 1));
  const slice = (tensor: string, name: string) =>
    makeNode("Slice", [tensor, `${prefix}/starts`, `${prefix}/ends`, `${prefix}/axes`], [`${prefix}/${name}`], `${prefix}/${name}/Slice`);
  const added: [Node, Node][] = [];
  const hiddenSlice = slice(hidden, "hidden");
  for (const n of sliceInputs) n.input = n.input.map((i) => (i === hidden ? hiddenSlice.output[0] : i));
  const first = [...sliceInputs].sort((a, b) => index.get(a)! - index.get(b)!)[0];
  if (first) added.push([hiddenSlice, first]);
  if (quantizer) {
    const querySlice = slice(x, "query_input");
    q.input = [querySlice.output[0], ...q.input.slice(1)];
    added.push([querySlice, q]);
  }
  for (const [node, before] of added) g.node.splice(g.node.indexOf(before), 0, node);
  // Recorded shapes of the last layer no longer hold (seq became 1): let onnxruntime infer them again.
  g.value_info = [];
  const inputRank = g.input.find((i) => i.name === "input_ids")?.type?.tensor_type?.shape?.dim?.length ?? 2;
  return { inputRank };
}

/**
 * A backend that runs first-token-pruned graphs where they apply (see firstTokenGraph), and each
 * graph as it is everywhere else. A pruned graph must answer a tiny probe batch before it is used;
 * if it does not, the original graph is served and the reason logged. Graphs it does not apply to
 * (token-level heads) go through silently: that is the normal case for them.
 *
 * With `externalWeights`, the graphs it does not prune get their weights handed over as in-memory
 * external data too (detachWeights), as a pruned graph's are. For onnxruntime-web this halves the heap
 * of a graph whose weights are inline: the whole file is copied into the heap and its weights copied
 * again out of it (the MiniLM-shaped int8 graph, unpruned, after a 128-token run: 40 instead of 78 MiB;
 * the NER demo model: 16 instead of 23 MiB). onnxruntime-node keeps no such second copy: no gain there.
 */
export class FirstTokenBackend implements Backend {
  readonly name: string;
  readonly externalWeights: boolean;
  private readonly log: (line: string) => void;

  constructor(
    private readonly inner: Backend,
    { log = console.log, externalWeights = false }: { log?: (line: string) => void; externalWeights?: boolean } = {},
  ) {
    this.name = inner.name;
    this.log = log;
    this.externalWeights = externalWeights;
  }

  async createSession(model: Uint8Array, externalData?: ExternalData): Promise<Session> {
    let result: FirstTokenResult;
    try {
      result = firstTokenGraph(model, { externalWeights: this.externalWeights });
    } catch (err) {
      result = { skipped: (err as Error).message };
    }
    const pruned = "skipped" in result ? undefined : result;
    const rewritten = "skipped" in result ? result.detached : result;
    if (!rewritten) return this.inner.createSession(model, externalData);
    let session: Session | undefined;
    try {
      session = await this.inner.createSession(rewritten.graph, [...(externalData ?? []), ...rewritten.externalData]);
      if (pruned) {
        const dims = pruned.inputRank === 3 ? [1, 2, 4] : [1, 4];
        const size = dims.reduce((a, b) => a * b, 1);
        await session.run({ dims, inputIds: new BigInt64Array(size), attentionMask: new BigInt64Array(size).fill(1n), tokenTypeIds: new BigInt64Array(size) });
      }
      return session;
    } catch (err) {
      await session?.release();
      const what = pruned ? "first-token pruning" : "loading the weights as external data";
      this.log(`bert-edge: ${what} failed (${(err as Error).message.split("\n")[0]}); serving the graph as exported`);
      return this.inner.createSession(model, externalData);
    }
  }
}
