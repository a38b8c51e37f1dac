/**
 * `bert-wasm` backend: BERT-family encoders and heads on our own int8 C kernels compiled to wasm32
 * (SIMD128, plus a relaxed-SIMD build picked at start-up when the engine has it and it passes a
 * self-test). Platform-neutral: takes compiled modules or bytes (workerd cannot compile bytes at run
 * time, so the Workers entry imports the .wasm files as modules). Node/Deno helpers: ./node.ts.
 *
 * The model is a packed weight file (format.ts, written by packBertWasm in ./pack.ts).
 */
import { type Backend, BackendError, type Batch, type ExternalData, type Outputs, type Session } from "../../backend.ts";
import { type BertWasmMeta, type F32Linear, type LayerNormRef, type Q8Linear, type TensorRef, q8Offset, readHeader } from "./format.ts";

export { BertWasmFormatError, BertWasmUnsupportedError } from "./format.ts";
export type { BertWasmMeta } from "./format.ts";

type WasmSource = WebAssembly.Module | Uint8Array | ArrayBuffer;

export interface BertWasmOptions {
  /** The relaxed-SIMD build (bert-relaxed.wasm). Used when it compiles and passes the self-test. */
  relaxed?: WasmSource | null;
  /** Where start-up decisions (which kernel build) are logged. Default: console.info. */
  log?: (message: string) => void;
  /**
   * Testing hook: replaces the relaxed instance's exports before the self-test, e.g. to simulate an
   * engine whose relaxed dot product is wrong (Node 20's relaxed_dot_i8x16_i7x16_add_s ignores its
   * accumulator).
   */
  wrapRelaxed?: (exports: KernelExports) => KernelExports;
}

export interface KernelExports {
  memory: WebAssembly.Memory;
  __heap_base: WebAssembly.Global;
  activate(x: number, n: number, act: number): void;
  embed(ids: number, types: number, rows: number, seq: number, h: number, hp: number, word: number, wordScale: number, pos: number, posScale: number, type: number, typeScale: number, out: number): void;
  layernorm(x: number, rows: number, h: number, gamma: number, beta: number, eps: number): void;
  quantize_rows(x: number, rows: number, k: number, xstride: number, q: number, kp: number, scales: number, zps: number): void;
  gemm_q8(a: number, ascale: number, azp: number, m: number, kp: number, w: number, wscale: number, wsum: number, bias: number, n: number, out: number, ostride: number, res: number, act: number): void;
  linear_f32(x: number, m: number, k: number, xstride: number, w: number, bias: number, n: number, out: number, ostride: number, act: number): void;
  attention(qkv: number, s: number, h: number, heads: number, mask: number, ctx: number, scratch: number, queries: number): void;
  attention_scratch(s: number, h: number, heads: number): number;
}

const ACT = { none: 0, gelu: 1, tanh: 2, relu: 3 } as const;

export type KernelVariant = "relaxed-simd" | "simd128";

interface Kernels {
  module: WebAssembly.Module;
  variant: KernelVariant;
  wrap?: (exports: KernelExports) => KernelExports;
}

async function compile(src: WasmSource): Promise<WebAssembly.Module> {
  if (src instanceof WebAssembly.Module) return src;
  return WebAssembly.compile((src instanceof Uint8Array ? src : new Uint8Array(src)) as Uint8Array<ArrayBuffer>);
}

async function instantiate(k: Kernels): Promise<KernelExports> {
  const instance = await WebAssembly.instantiate(k.module, {});
  const exports = instance.exports as unknown as KernelExports;
  return k.wrap ? k.wrap(exports) : exports;
}

/** Byte offset of activation (row, k) in quantize_rows' output (kernels.c A8_OFFSET): groups of 4 rows. */
const a8Offset = (row: number, k: number, kp: number) => Math.floor(row / 4) * 4 * kp + Math.floor(k / 4) * 16 + (row % 4) * 4 + (k % 4);

/**
 * Self-test of a kernel build: a small quantized GEMM with extreme values (weights ±127, activations
 * 0..127, several zero points, K = 48 to cover several k steps, ragged M and N to cover the tile
 * edges) against an exact integer reference computed here (operands written in the kernels' layouts:
 * q8Offset, a8Offset). Returns an error description, or null when it is right.
 */
export function selfTest(x: KernelExports): string | null {
  const M = 5, MP = 8, N = 7, NP = 8, K = 48;
  const base = (x.__heap_base.value as number + 63) & ~63;
  const need = base + MP * K + NP * K + 4 * (2 * M + 3 * NP + 2 * M * N) + 1024;
  if (x.memory.buffer.byteLength < need) x.memory.grow(Math.ceil((need - x.memory.buffer.byteLength) / 65536));
  const mem = x.memory.buffer;
  const aP = base, wP = aP + MP * K, asP = wP + NP * K, zP = asP + 4 * M, wsP = zP + 4 * M, sumP = wsP + 4 * NP, bP = sumP + 4 * NP, oP = bP + 4 * NP, rP = oP + 4 * M * N;
  const a = new Uint8Array(M * K), w = new Int8Array(NP * K), aPacked = new Uint8Array(mem, aP, MP * K), packed = new Int8Array(mem, wP, NP * K);
  let seed = 12345;
  const rnd = () => ((seed = (seed * 1103515245 + 12345) >>> 0) >>> 8);
  for (let i = 0; i < a.length; i++) a[i] = i % 11 === 0 ? 127 : i % 17 === 0 ? 0 : rnd() % 128;
  for (let i = 0; i < N * K; i++) w[i] = i % 7 === 0 ? -127 : i % 13 === 0 ? 127 : (rnd() % 255) - 127;
  for (let n = 0; n < NP; n++) for (let k = 0; k < K; k++) packed[q8Offset(n, k, K)] = w[n * K + k];
  for (let m = 0; m < M; m++) for (let k = 0; k < K; k++) aPacked[a8Offset(m, k, K)] = a[m * K + k];
  new Float32Array(mem, asP, M).fill(1);
  const zp = new Int32Array(mem, zP, M);
  for (let m = 0; m < M; m++) zp[m] = [0, 64, 127, 3, 100][m];
  new Float32Array(mem, wsP, NP).fill(1);
  new Float32Array(mem, bP, NP).fill(0);
  const wsum = new Int32Array(mem, sumP, NP);
  for (let n = 0; n < NP; n++) {
    let s = 0;
    for (let k = 0; k < K; k++) s += w[n * K + k];
    wsum[n] = s;
  }
  // Without and with a residual (the partial last panel takes another path when it adds one).
  const residual = new Float32Array(x.memory.buffer, rP, M * N);
  for (let i = 0; i < M * N; i++) residual[i] = 1000 * (i + 1);
  for (const res of [0, rP]) {
    x.gemm_q8(aP, asP, zP, M, K, wP, wsP, sumP, bP, N, oP, N, res, 0);
    const out = new Float32Array(x.memory.buffer, oP, M * N);
    for (let m = 0; m < M; m++) {
      for (let n = 0; n < N; n++) {
        let s = res ? residual[m * N + n] : 0;
        for (let k = 0; k < K; k++) s += w[n * K + k] * (a[m * K + k] - zp[m]);
        if (out[m * N + n] !== s) return `gemm_q8[${m}][${n}]${res ? " with a residual" : ""} = ${out[m * N + n]}, expected ${s}`;
      }
    }
  }
  return null;
}

async function chooseKernels(simd128: WasmSource, options: BertWasmOptions): Promise<Kernels> {
  const log = options.log ?? ((m: string) => console.info(m));
  const baseline: Kernels = { module: await compile(simd128), variant: "simd128" };
  if (!options.relaxed) {
    log("bert-wasm: no relaxed-SIMD build given; using the SIMD128 kernels");
    return baseline;
  }
  let relaxed: Kernels;
  try {
    relaxed = { module: await compile(options.relaxed), variant: "relaxed-simd", wrap: options.wrapRelaxed };
  } catch (err) {
    log(`bert-wasm: relaxed SIMD unavailable (${(err as Error).message.split("\n")[0]}); falling back to the SIMD128 kernels`);
    return baseline;
  }
  let problem: string | null;
  try {
    problem = selfTest(await instantiate(relaxed));
  } catch (err) {
    problem = (err as Error).message;
  }
  if (problem) {
    log(`bert-wasm: relaxed-SIMD self-test failed (${problem}); falling back to the SIMD128 kernels`);
    return baseline;
  }
  log("bert-wasm: using the relaxed-SIMD kernels (self-test passed)");
  return relaxed;
}

export class BertWasmBackend implements Backend {
  readonly name = "bert-wasm";
  private kernels?: Promise<Kernels>;

  constructor(
    private readonly simd128: WasmSource,
    private readonly options: BertWasmOptions = {},
  ) {}

  /** Which kernel build sessions use (decided once, on first use). */
  async variant(): Promise<KernelVariant> {
    return (await this.getKernels()).variant;
  }

  private getKernels(): Promise<Kernels> {
    this.kernels ??= chooseKernels(this.simd128, this.options);
    return this.kernels;
  }

  async createSession(model: Uint8Array, externalData?: ExternalData): Promise<Session> {
    if (externalData?.length) throw new BackendError("bert-wasm models are a single packed file; external data is not supported");
    let header: ReturnType<typeof readHeader>;
    try {
      header = readHeader(model);
    } catch (err) {
      throw new BackendError(`bert-wasm: ${(err as Error).message}`);
    }
    const kernels = await this.getKernels();
    return new BertWasmSession(await instantiate(kernels), header.meta, model.subarray(header.dataStart, header.dataStart + header.meta.dataLength), kernels.variant);
  }
}

export function createBertWasmBackend(wasm: WasmSource, options?: BertWasmOptions): BertWasmBackend {
  return new BertWasmBackend(wasm, options);
}

const F32 = 4;

export class BertWasmSession implements Session {
  readonly inputNames: readonly string[];
  readonly outputNames: readonly string[];
  private weights: number;
  private scratch: number;
  private released = false;

  constructor(
    private readonly x: KernelExports,
    readonly meta: BertWasmMeta,
    data: Uint8Array,
    readonly variant: KernelVariant,
  ) {
    this.inputNames = meta.inputNames;
    this.outputNames = meta.outputs.map((o) => o.name);
    this.weights = ((x.__heap_base.value as number) + 63) & ~63;
    this.scratch = this.weights + ((data.byteLength + 63) & ~63);
    this.ensure(this.scratch);
    new Uint8Array(this.x.memory.buffer, this.weights, data.byteLength).set(data);
  }

  /** Bytes of this session's wasm memory (weights, scratch, the module's stack and data); it never shrinks. */
  get memoryBytes(): number {
    return this.x.memory.buffer.byteLength;
  }

  private ensure(bytes: number) {
    const have = this.x.memory.buffer.byteLength;
    if (bytes > have) this.x.memory.grow(Math.ceil((bytes - have) / 65536));
  }

  private p(t: TensorRef): number {
    return this.weights + t.offset;
  }

  async run(batch: Batch): Promise<Outputs> {
    if (this.released) throw new BackendError("bert-wasm session released");
    const m = this.meta;
    const dims = batch.dims;
    if (dims.length !== m.inputRank) throw new BackendError(`bert-wasm: input rank ${dims.length}, the model wants ${m.inputRank}`);
    const seq = dims[dims.length - 1];
    const seqs = dims.slice(0, -1).reduce((a, b) => a * b, 1);
    const T = seqs * seq;
    if (seq > m.maxPositions) throw new BackendError(`bert-wasm: sequence length ${seq} exceeds max_position_embeddings ${m.maxPositions}`);
    if (batch.inputIds.length !== T || batch.attentionMask.length !== T) throw new BackendError("bert-wasm: batch arrays do not match dims");
    const H = m.hidden, I = m.intermediate;
    const Kmax = Math.max(m.hiddenPadded, Math.ceil(I / 16) * 16);
    const head = m.head;
    const mlm = head.kind === "mlm";
    // Scratch layout (bytes, 64-aligned).
    let at = this.scratch;
    const take = (bytes: number) => {
      const p = at;
      at += (bytes + 63) & ~63;
      return p;
    };
    const ids = take(T * 4), types = take(T * 4), mask = take(T * 4);
    const hid = take(T * H * F32), qkv = take(T * 3 * H * F32), ctx = take(T * H * F32), ffn = take(T * I * F32);
    const q8 = take(Math.ceil(T / 4) * 4 * Kmax), ascale = take(T * F32), azp = take(T * 4), scores = take(this.x.attention_scratch(seq, H, m.heads));
    const pooled = take(seqs * H * F32), pooled2 = take(seqs * H * F32);
    const headOut = take(mlm ? T * m.vocab * F32 : T * Math.max(H, 2, head.kind === "token" ? head.classifier.n : 0) * F32);
    this.ensure(at);
    const mem = this.x.memory.buffer;
    const idsV = new Int32Array(mem, ids, T), typesV = new Int32Array(mem, types, T), maskV = new Int32Array(mem, mask, T);
    for (let i = 0; i < T; i++) {
      const id = Number(batch.inputIds[i]);
      if (!(id >= 0 && id < m.vocab)) throw new BackendError(`bert-wasm: token id ${id} outside the vocabulary (${m.vocab})`);
      idsV[i] = id;
      maskV[i] = Number(batch.attentionMask[i]) ? 1 : 0;
      const t = m.embeddings.tokenType && batch.tokenTypeIds.length === T ? Number(batch.tokenTypeIds[i]) : 0;
      if (m.embeddings.tokenType && !(t >= 0 && t < m.typeVocab)) throw new BackendError(`bert-wasm: token type ${t} outside 0..${m.typeVocab - 1}`);
      typesV[i] = t;
    }
    const x = this.x;
    const e = m.embeddings;
    x.embed(ids, e.tokenType ? types : 0, T, seq, H, e.word.kp, this.p(e.word.weight), this.p(e.word.scale), this.p(e.position.weight), this.p(e.position.scale),
      e.tokenType ? this.p(e.tokenType.weight) : 0, e.tokenType ? this.p(e.tokenType.scale) : 0, hid);
    this.norm(hid, T, H, e.norm);

    const gemm = (input: number, rows: number, k: number, l: Q8Linear, out: number, residual = 0, act = 0) => {
      x.quantize_rows(input, rows, k, k, q8, l.kp, ascale, azp);
      x.gemm_q8(q8, ascale, azp, rows, l.kp, this.p(l.weight), this.p(l.scale), this.p(l.wsum), this.p(l.bias), l.n, out, l.n, residual, act);
    };
    // Sequence and multiple-choice heads read only the first token of each sequence: the last layer
    // computes every key and value but only that query, and its rows alone from there on (same bits:
    // every kernel works row by row).
    const firstTokenOnly = head.kind === "sequence" || head.kind === "multiple-choice";
    let rows = T;
    let firstTokenStride = seq * H; // between the first tokens of consecutive sequences in `hid`
    for (const [index, layer] of m.encoder.entries()) {
      const last = firstTokenOnly && index === m.encoder.length - 1;
      gemm(hid, T, H, layer.qkv, qkv);
      for (let s = 0; s < seqs; s++) {
        x.attention(qkv + s * seq * 3 * H * F32, seq, H, m.heads, mask + s * seq * 4, ctx + s * seq * H * F32, scores, last ? 1 : seq);
      }
      if (last) {
        const f32 = new Float32Array(x.memory.buffer);
        for (let s = 1; s < seqs; s++) {
          f32.copyWithin((ctx >> 2) + s * H, (ctx >> 2) + s * seq * H, (ctx >> 2) + s * seq * H + H);
          f32.copyWithin((hid >> 2) + s * H, (hid >> 2) + s * seq * H, (hid >> 2) + s * seq * H + H);
        }
        rows = seqs;
        firstTokenStride = H;
      }
      gemm(ctx, rows, H, layer.attnOut, hid, hid);
      this.norm(hid, rows, H, layer.attnNorm);
      gemm(hid, rows, H, layer.ffnIn, ffn); // GELU / ReLU in its own pass: faster than in the GEMM's epilogue
      x.activate(ffn, rows * I, ACT[m.activation]);
      gemm(ffn, rows, I, layer.ffnOut, hid, hid);
      this.norm(hid, rows, H, layer.ffnNorm);
    }

    const read = (ptr: number, n: number) => new Float32Array(x.memory.buffer, ptr, n).slice();
    const lead = dims.slice(0, -1);
    const linear = (input: number, rows: number, stride: number, l: F32Linear, out: number, act: number) =>
      x.linear_f32(input, rows, l.k, stride, this.p(l.weight), this.p(l.bias), l.n, out, l.n, act);
    const pool = (l: F32Linear, act: number) => {
      // First token of every sequence.
      linear(hid, seqs, firstTokenStride, l, pooled, act);
    };
    const outputs: Outputs = {};
    switch (head.kind) {
      case "sequence":
      case "multiple-choice": {
        pool(head.pool, ACT[head.poolActivation]);
        linear(pooled, seqs, H, head.classifier, pooled2, ACT.none);
        const n = head.classifier.n;
        outputs.logits = head.kind === "sequence" ? { data: read(pooled2, seqs * n), dims: [seqs, n] } : { data: read(pooled2, seqs), dims: lead };
        break;
      }
      case "token": {
        linear(hid, T, H, head.classifier, headOut, ACT.none);
        outputs.logits = { data: read(headOut, T * head.classifier.n), dims: [...lead, seq, head.classifier.n] };
        break;
      }
      case "qa": {
        linear(hid, T, H, head.classifier, headOut, ACT.none);
        const both = read(headOut, T * 2);
        const start = new Float32Array(T), end = new Float32Array(T);
        for (let i = 0; i < T; i++) {
          start[i] = both[2 * i];
          end[i] = both[2 * i + 1];
        }
        outputs.start_logits = { data: start, dims: [...lead, seq] };
        outputs.end_logits = { data: end, dims: [...lead, seq] };
        break;
      }
      case "mlm": {
        gemm(hid, T, H, head.transform, ctx, 0, ACT[head.transformActivation]);
        this.norm(ctx, T, H, head.transformNorm);
        x.quantize_rows(ctx, T, H, H, q8, e.word.kp, ascale, azp);
        x.gemm_q8(q8, ascale, azp, T, e.word.kp, this.p(e.word.weight), this.p(e.word.scale), this.p(e.word.wsum), this.p(head.decoderBias), m.vocab, headOut, m.vocab, 0, 0);
        outputs.logits = { data: read(headOut, T * m.vocab), dims: [...lead, seq, m.vocab] };
        break;
      }
      case "none": {
        outputs.last_hidden_state = { data: read(hid, T * H), dims: [...lead, seq, H] };
        if (head.pool) {
          pool(head.pool, ACT.tanh);
          outputs.pooler_output = { data: read(pooled, seqs * H), dims: [...lead, H] };
        }
        break;
      }
    }
    const result: Outputs = {};
    for (const name of this.outputNames) {
      if (!outputs[name]) throw new BackendError(`bert-wasm: output ${name} not produced`);
      result[name] = outputs[name];
    }
    return result;
  }

  private norm(ptr: number, rows: number, h: number, n: LayerNormRef) {
    this.x.layernorm(ptr, rows, h, this.p(n.gamma), this.p(n.beta), n.eps);
  }

  async release(): Promise<void> {
    this.released = true;
  }
}
