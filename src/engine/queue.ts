/**
 * A fair request queue per model, with micro-batching.
 *
 * Requests are served in arrival order: the oldest waiting request always goes into the next run,
 * and younger ones of a compatible shape ride along with it. By default nothing waits on purpose:
 * a request that finds the engine idle runs at once (alone), and whatever arrived while a run was
 * executing is gathered into the next one — so a lone request waits no longer than unbatched, and
 * under load the engine runs fewer, fuller batches. `windowMs` adds a short deliberate wait. On Node
 * every engine holds the JS thread while it runs, so requests that come in during a run are parsed
 * after it: the queue takes one event-loop turn to let them in, and only after a run that merged
 * several requests does it sleep a little longer (`gatherMs`, `gatherRatio`) for stragglers.
 *
 * Merging re-pads every request to the longest in the run, feeds one `session.run`, and splits
 * the outputs back by rows, cropping the sequence axis of per-token outputs back to each request's
 * own length. Which outputs have a sequence axis is learnt from the runs themselves (an output
 * whose axis follows the input length at two different lengths); until it is known, only requests
 * of the same length are merged (no crop needed). Multiple-choice batches [b, choices, seq] merge
 * only with the same choice count.
 *
 * Note: int8 graphs quantize activations dynamically, per tensor over the whole batch, so a request
 * merged with others can get slightly different (not worse) numbers than alone; fp32 graphs give
 * the same numbers to float rounding (see docs/benchmarks.md for measurements).
 */
import { ServiceError } from "../errors.ts";
import type { Batch, OutputTensor, Outputs } from "./backend.ts";

export interface QueueOptions {
  /** Off: every request runs alone, still one at a time in arrival order (default on). */
  batching?: boolean;
  /**
   * Milliseconds the first request of a batch waits for company when the engine is idle (default 0:
   * it runs at once; batches are formed only from requests that arrived during the previous run).
   */
  windowMs?: number;
  /**
   * After a run that merged several requests, at most this many milliseconds are spent (sleeping,
   * woken by each arrival) letting requests that came in during it reach the queue, while any are on
   * their way (see `expectArrival`): the run held the JS thread (WASM inline, onnxruntime-node inside
   * a setImmediate), so they are still unparsed when it ends. Default 2. After a lone run: no wait.
   */
  gatherMs?: number;
  /**
   * The gather wait is also at most this fraction of the run that just ended (default 0.1): the wait
   * costs the engine idle time, which must stay small against what merging saves.
   */
  gatherRatio?: number;
  /**
   * Most padded tokens (rows × choices × seq) one run may hold (default 2048). A request past it runs
   * in parts of whole rows (at least one each) whose outputs are joined back: the engine's memory
   * grows with a run's tokens (onnxruntime's attention scores with their square), and a Worker has
   * 128 MB.
   */
  maxBatchTokens?: number;
  /** Most rows one merged run may hold. */
  maxBatchRows?: number;
  /** Merge a request only if its length is at least (longest − padSlack) / padRatio (bucketing by length). */
  padRatio?: number;
  padSlack?: number;
  /** Requests waiting (not running) beyond which new ones get 429 overloaded. */
  maxQueued?: number;
  /** Runs in flight at once (default 1: the engine's threads serve one run at a time). */
  concurrency?: number;
}

export const DEFAULT_QUEUE_OPTIONS: Required<QueueOptions> = {
  batching: true,
  windowMs: 0,
  gatherMs: 2,
  gatherRatio: 0.1,
  maxBatchTokens: 2048,
  maxBatchRows: 64,
  padRatio: 1.5,
  padSlack: 16,
  maxQueued: 256,
  concurrency: 1,
};

/** Where a request's time went, filled in by the queue (milliseconds). */
export interface RunTiming {
  /** Waiting for its turn (and for the gather window). */
  queueMs: number;
  /** The session.run it was part of, merging and splitting included. */
  runMs: number;
  /** Requests in that run. */
  merged: number;
}

/** 429 with a hint for `Retry-After`, in seconds. */
export class OverloadedError extends ServiceError {
  constructor(
    message: string,
    readonly retryAfter: number,
  ) {
    super(429, "overloaded", message);
  }
}

interface Pending {
  batch: Batch;
  rows: number;
  /** Choices per row (1 for [batch, seq]). */
  group: number;
  seq: number;
  enqueued: number;
  timing?: RunTiming;
  resolve(outputs: Outputs): void;
  reject(err: unknown): void;
}

type Runner = (batch: Batch) => Promise<Outputs>;

/** What is known of one output: whether its axis after the input's leading axes follows the input length. */
interface OutputAxis {
  seq?: boolean;
  /** An input length at which the axis was seen equal to it (not yet conclusive). */
  seenAt?: number;
}

const now = () => performance.now();

/**
 * One macrotask turn (I/O callbacks, i.e. new requests, run before `fn`), where the runtime offers one
 * that is not bound to a request: Node's setImmediate. On Workers, timers belong to the request that
 * set them and die with it (a queue settling on a finished request's timer would hang the others), so
 * there the queue takes the next batch at once: it merges what reached it during the previous run.
 */
const setImmediateFn = (globalThis as { setImmediate?: (fn: () => void) => unknown }).setImmediate;
const onWorkers = (globalThis as { navigator?: { userAgent?: string } }).navigator?.userAgent === "Cloudflare-Workers";
const nextTurn: ((fn: () => void) => void) | undefined = typeof setImmediateFn === "function" && !onWorkers ? (fn) => setImmediateFn(fn) : undefined;

let incoming = 0;
/** Queues gathering after a run, woken (a microtask later) whenever a request on its way arrives or ends. */
const gathering = new Set<() => void>();

/**
 * Marks a request on its way to a model queue (being parsed, validated, tokenized); call the returned
 * function once it reaches the queue or ends. After a run that had company, a queue waits (at most
 * min(`gatherMs`, `gatherRatio` × the run)) while any are on their way, so that they join the next
 * run instead of trailing it one by one. The wait sleeps (no polling): each arrival wakes the queue.
 * A lone request never waits for this: its run had no company.
 */
export function expectArrival(): () => void {
  incoming++;
  let done = false;
  return () => {
    if (!done) {
      done = true;
      incoming--;
      // A microtask later: the caller enqueues its request right after saying it arrived.
      if (gathering.size > 0) queueMicrotask(() => gathering.forEach((wake) => wake()));
    }
  };
}

export class RequestQueue {
  private readonly options: Required<QueueOptions>;
  private readonly waiting: Pending[] = [];
  private inFlight = 0;
  private timer?: ReturnType<typeof setTimeout>;
  /** Between a run's end and the next take: letting requests that arrived during the run reach the queue. */
  private settling = false;
  private readonly axes = new Map<string, OutputAxis>();
  /** Whether every output leads with the batch's rows; unknown before the first run. */
  private splittable?: boolean;
  /** Exponential average of run time per request, for Retry-After. */
  private msPerRequest = 0;
  /** Counters, for tests and the bench. */
  readonly stats = { runs: 0, requests: 0, merged: 0, rejected: 0, largestRun: 0 };
  /** Time spent between runs letting requests reach the queue (for the bench; never asserted on). */
  readonly waits = { settleMs: 0, settles: 0, sleepMs: 0 };

  constructor(
    private readonly runner: Runner,
    private readonly padTokenId = 0,
    options: QueueOptions = {},
  ) {
    this.options = { ...DEFAULT_QUEUE_OPTIONS, ...definedOnly(options) };
  }

  get queued() {
    return this.waiting.length;
  }
  get running() {
    return this.inFlight;
  }

  run(batch: Batch, timing?: RunTiming): Promise<Outputs> {
    if (batch.dims[0] > 1 && batch.inputIds.length > this.options.maxBatchTokens) return this.runInParts(batch, timing);
    const { maxQueued } = this.options;
    if (this.waiting.length >= maxQueued) {
      this.stats.rejected++;
      const seconds = Math.max(1, Math.ceil(((this.waiting.length + this.inFlight) * this.msPerRequest) / 1000));
      return Promise.reject(new OverloadedError(`the model has ${this.waiting.length} requests waiting; retry in ${seconds} s`, seconds));
    }
    const dims = batch.dims;
    const pending = new Promise<Outputs>((resolve, reject) => {
      this.waiting.push({
        batch,
        rows: dims[0],
        group: dims.length === 3 ? dims[1] : 1,
        seq: dims[dims.length - 1],
        enqueued: now(),
        timing,
        resolve,
        reject,
      });
    });
    this.pump();
    return pending;
  }

  /** An oversize request: its rows in parts under the token budget, in order; outputs joined on the first axis. */
  private async runInParts(batch: Batch, timing?: RunTiming): Promise<Outputs> {
    const rows = batch.dims[0];
    const perRow = batch.inputIds.length / rows;
    const step = Math.max(1, Math.floor(this.options.maxBatchTokens / perRow));
    const began = now();
    const parts: Promise<Outputs>[] = [];
    const partRows: number[] = [];
    const timings: RunTiming[] = [];
    for (let r = 0; r < rows; r += step) {
      const end = Math.min(rows, r + step);
      const slice = (a: BigInt64Array) => a.subarray(r * perRow, end * perRow);
      const part: Batch = { dims: [end - r, ...batch.dims.slice(1)], inputIds: slice(batch.inputIds), attentionMask: slice(batch.attentionMask), tokenTypeIds: slice(batch.tokenTypeIds) };
      const t: RunTiming = { queueMs: 0, runMs: 0, merged: 1 };
      timings.push(t);
      partRows.push(end - r);
      parts.push(this.run(part, t));
    }
    const outputs = await Promise.all(parts);
    if (timing) {
      // The parts ran one after another: their runs, and the rest of the wall time waiting.
      timing.runMs = timings.reduce((sum, t) => sum + t.runMs, 0);
      timing.queueMs = Math.max(0, now() - began - timing.runMs);
      timing.merged = Math.max(...timings.map((t) => t.merged));
    }
    const joined: Outputs = {};
    for (const name of Object.keys(outputs[0])) {
      const pieces = outputs.map((o) => o[name]);
      if (pieces.some((p, i) => p.dims[0] !== partRows[i])) throw new Error(`output ${name} does not lead with the batch's rows: cannot join the parts of an oversize request`);
      const data = new Float32Array(pieces.reduce((sum, p) => sum + p.data.length, 0));
      let at = 0;
      for (const p of pieces) {
        data.set(p.data, at);
        at += p.data.length;
      }
      joined[name] = { data, dims: [pieces.reduce((sum, p) => sum + p.dims[0], 0), ...pieces[0].dims.slice(1)] };
    }
    return joined;
  }

  private pump() {
    if (this.settling) return;
    while (this.inFlight < this.options.concurrency && this.waiting.length > 0) {
      const { windowMs, batching } = this.options;
      if (batching && windowMs > 0 && this.inFlight === 0) {
        const wait = this.waiting[0].enqueued + windowMs - now();
        if (wait > 0 && !this.full()) {
          this.timer ??= setTimeout(() => {
            this.timer = undefined;
            this.pump();
          }, wait);
          return;
        }
      }
      if (this.timer) {
        clearTimeout(this.timer);
        this.timer = undefined;
      }
      void this.execute(this.take());
    }
  }

  /** Whether the waiting requests already fill a run (no point waiting for more). */
  private full() {
    const { maxBatchRows, maxBatchTokens } = this.options;
    let rows = 0;
    let tokens = 0;
    for (const p of this.waiting) {
      rows += p.rows;
      tokens += p.rows * p.group * p.seq;
    }
    return rows >= maxBatchRows || tokens >= maxBatchTokens;
  }

  /** The oldest request, and the younger compatible ones that fit with it, in arrival order. */
  private take(): Pending[] {
    const head = this.waiting.shift()!;
    const taken = [head];
    if (!this.options.batching || !this.mergeable(head)) return taken;
    const { maxBatchRows, maxBatchTokens, padRatio, padSlack } = this.options;
    const axesKnown = this.axesKnown();
    let rows = head.rows;
    let longest = head.seq;
    let shortest = head.seq;
    for (let i = 0; i < this.waiting.length && rows < maxBatchRows; ) {
      const p = this.waiting[i];
      const seq = Math.max(longest, p.seq);
      const low = Math.min(shortest, p.seq);
      const fits =
        p.group === head.group &&
        (axesKnown || p.seq === head.seq) &&
        low * padRatio + padSlack >= seq &&
        rows + p.rows <= maxBatchRows &&
        (rows + p.rows) * head.group * seq <= maxBatchTokens;
      if (fits) {
        taken.push(p);
        this.waiting.splice(i, 1);
        rows += p.rows;
        longest = seq;
        shortest = low;
      } else {
        i++;
      }
    }
    return taken;
  }

  private mergeable(p: Pending) {
    // Only once a run has shown that every output leads with the batch's rows (so it can be split).
    return this.splittable === true && p.rows * p.group * p.seq < this.options.maxBatchTokens && p.rows < this.options.maxBatchRows;
  }

  /** Every output's sequence axis is known, so requests of different lengths can be merged and cropped. */
  private axesKnown() {
    if (this.axes.size === 0) return false;
    for (const a of this.axes.values()) if (a.seq === undefined) return false;
    return true;
  }

  private async execute(taken: Pending[]) {
    this.inFlight++;
    const start = now();
    for (const p of taken) if (p.timing) p.timing.queueMs = start - p.enqueued;
    let runMs = 0;
    try {
      const batch = taken.length === 1 ? taken[0].batch : merge(taken, this.padTokenId);
      const outputs = await this.runner(batch);
      this.learn(batch, outputs);
      const parts = taken.length === 1 ? [outputs] : this.split(taken, batch, outputs);
      runMs = now() - start;
      this.msPerRequest = this.msPerRequest ? 0.8 * this.msPerRequest + (0.2 * runMs) / taken.length : runMs / taken.length;
      this.stats.runs++;
      this.stats.requests += taken.length;
      if (taken.length > 1) this.stats.merged += taken.length;
      this.stats.largestRun = Math.max(this.stats.largestRun, taken.length);
      taken.forEach((p, i) => {
        if (p.timing) Object.assign(p.timing, { runMs, merged: taken.length });
        p.resolve(parts[i]);
      });
    } catch (err) {
      for (const p of taken) p.reject(err);
    } finally {
      this.inFlight--;
      this.settle(taken.length, runMs || now() - start);
    }
  }

  /**
   * After a run. Every engine on Node holds the JS thread while it computes (onnxruntime-node runs
   * synchronously inside a setImmediate, WASM runs inline), so requests that came in during the run
   * are still unparsed when it ends: one macrotask turn lets them reach the queue. Then, only if the
   * run had company (more than one request: the load is concurrent), the queue sleeps while more are
   * on their way and the waiting ones do not fill a run, for at most min(gatherMs, gatherRatio × the
   * run's time): the engine idles meanwhile, so the wait must stay small against the run.
   */
  private settle(ranTogether: number, runMs: number) {
    if (!this.options.batching || !nextTurn) return this.pump();
    this.settling = true;
    const { gatherMs, gatherRatio } = this.options;
    const began = now();
    const limit = ranTogether > 1 ? (Number.isFinite(gatherRatio) ? Math.min(gatherMs, gatherRatio * runMs) : gatherMs) : 0;
    const deadline = began + limit;
    let timer: ReturnType<typeof setTimeout> | undefined;
    let slept = 0;
    let finished = false;
    const finish = () => {
      if (finished) return;
      finished = true;
      gathering.delete(wake);
      if (timer) {
        clearTimeout(timer);
        this.waits.sleepMs += now() - slept;
      }
      this.waits.settleMs += now() - began;
      this.waits.settles++;
      this.settling = false;
      this.pump();
    };
    // Nothing more to gather: no one on the way, the time is up, or a full run is waiting.
    const gathered = () => incoming === 0 || now() >= deadline || this.full();
    const wake = () => {
      if (gathered()) finish();
    };
    nextTurn(() => {
      if (gathered()) return finish();
      gathering.add(wake);
      slept = now();
      timer = setTimeout(finish, deadline - slept);
    });
  }

  /** Learns from a run which outputs carry the sequence axis (their axis after the input's leading axes). */
  private learn(batch: Batch, outputs: Outputs) {
    const axis = batch.dims.length - 1;
    const seq = batch.dims[axis];
    const aligned = Object.values(outputs).every((t) => t.dims[0] === batch.dims[0]);
    this.splittable = this.splittable !== false && aligned;
    for (const [name, tensor] of Object.entries(outputs)) {
      let known = this.axes.get(name);
      if (!known) this.axes.set(name, (known = {}));
      if (known.seq !== undefined) continue;
      if (tensor.dims.length <= axis || tensor.dims[axis] !== seq) known.seq = false;
      else if (known.seenAt !== undefined && known.seenAt !== seq) known.seq = true;
      else known.seenAt = seq;
    }
  }

  /** Each request's rows of every output, cropped on the sequence axis to its own length. */
  private split(taken: Pending[], batch: Batch, outputs: Outputs): Outputs[] {
    const parts: Outputs[] = taken.map(() => ({}));
    const axis = batch.dims.length - 1;
    const seq = batch.dims[axis];
    for (const [name, tensor] of Object.entries(outputs)) {
      const total = tensor.dims[0];
      const rowSize = tensor.data.length / total;
      const hasSeq = this.axes.get(name)?.seq === true && tensor.dims[axis] === seq;
      if (total !== batch.dims[0]) throw new Error(`output "${name}" has ${total} rows for a batch of ${batch.dims[0]}`);
      let row = 0;
      taken.forEach((p, i) => {
        const rows = p.rows;
        const view = tensor.data.subarray(row * rowSize, (row + rows) * rowSize);
        row += rows;
        if (!hasSeq || p.seq === seq) {
          parts[i][name] = { data: view, dims: [rows, ...tensor.dims.slice(1)] };
        } else {
          parts[i][name] = crop(view, [rows, ...tensor.dims.slice(1)], axis, p.seq);
        }
      });
    }
    return parts;
  }
}

/** `tensor` with its axis `axis` cut to the first `length` entries. */
function crop(data: Float32Array, dims: readonly number[], axis: number, length: number): OutputTensor {
  const outer = dims.slice(0, axis).reduce((a, b) => a * b, 1);
  const inner = dims.slice(axis + 1).reduce((a, b) => a * b, 1);
  const from = dims[axis] * inner;
  const to = length * inner;
  const out = new Float32Array(outer * to);
  for (let o = 0; o < outer; o++) out.set(data.subarray(o * from, o * from + to), o * to);
  const croppedDims = dims.slice();
  croppedDims[axis] = length;
  return { data: out, dims: croppedDims };
}

/** One batch of every request's rows, re-padded to the longest sequence. */
export function merge(taken: readonly { batch: Batch; rows: number; group: number; seq: number }[], padTokenId: number): Batch {
  const group = taken[0].group;
  const seq = Math.max(...taken.map((p) => p.seq));
  const rows = taken.reduce((sum, p) => sum + p.rows, 0);
  const size = rows * group * seq;
  const inputIds = new BigInt64Array(size);
  const attentionMask = new BigInt64Array(size);
  const tokenTypeIds = new BigInt64Array(size);
  const pad = BigInt(padTokenId);
  let offset = 0;
  for (const p of taken) {
    const { batch } = p;
    const lines = p.rows * group;
    if (p.seq === seq) {
      inputIds.set(batch.inputIds, offset);
      attentionMask.set(batch.attentionMask, offset);
      tokenTypeIds.set(batch.tokenTypeIds, offset);
    } else {
      for (let l = 0; l < lines; l++) {
        const from = l * p.seq;
        const to = offset + l * seq;
        inputIds.set(batch.inputIds.subarray(from, from + p.seq), to);
        attentionMask.set(batch.attentionMask.subarray(from, from + p.seq), to);
        tokenTypeIds.set(batch.tokenTypeIds.subarray(from, from + p.seq), to);
        if (pad !== 0n) inputIds.fill(pad, to + p.seq, to + seq);
      }
    }
    offset += lines * seq;
  }
  return { dims: group > 1 ? [rows, group, seq] : [rows, seq], inputIds, attentionMask, tokenTypeIds };
}

function definedOnly<T extends object>(options: T): Partial<T> {
  return Object.fromEntries(Object.entries(options).filter(([, v]) => v !== undefined)) as Partial<T>;
}
