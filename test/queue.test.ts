/**
 * The per-model request queue (src/engine/queue.ts): arrival order, micro-batching that gives the
 * same answers as solo runs (fp32 fixtures), crop of per-token outputs, 429 when full, and no
 * waiting for a lone request. Asserts on counts and order, never on timings.
 */
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import type { Batch, Outputs } from "../src/engine/backend.ts";
import { padBatch } from "../src/engine/batch.ts";
import type { LoadedModel } from "../src/engine/model.ts";
import { expectArrival, OverloadedError, RequestQueue } from "../src/engine/queue.ts";
import { ModelRegistry } from "../src/engine/registry.ts";
import { createApp } from "../src/http/app.ts";
import { createBackend } from "../src/runtimes/backends.ts";
import { FIXTURES_DIR, maxAbsDiff } from "./support/fixtures.ts";
import { loadFixture } from "./support/load-model.ts";
import { MemoryStorage } from "./support/memory-storage.ts";

/** A batch of `rows` rows of `seq` tokens whose first id tells the request apart. */
function fakeBatch(tag: number, seq = 4, rows = 1, choices = 1): Batch {
  const size = rows * choices * seq;
  const ids = new BigInt64Array(size).fill(BigInt(tag));
  return {
    dims: choices > 1 ? [rows, choices, seq] : [rows, seq],
    inputIds: ids,
    attentionMask: new BigInt64Array(size).fill(1n),
    tokenTypeIds: new BigInt64Array(size),
  };
}

/** A runner that records each batch and answers only when released; output `ids` echoes input_ids. */
function gatedRunner() {
  const calls: Batch[] = [];
  const gates: (() => void)[] = [];
  const runner = (batch: Batch): Promise<Outputs> => {
    calls.push(batch);
    return new Promise((ok) =>
      gates.push(() =>
        ok({
          ids: { data: Float32Array.from(batch.inputIds, Number), dims: batch.dims },
          pooled: { data: new Float32Array(batch.dims[0] * 3).fill(batch.dims[0]), dims: [batch.dims[0], 3] },
        }),
      ),
    );
  };
  const release = async () => {
    gates.shift()!();
    // Let the run's end and the queue's next take (a macrotask later) happen.
    await new Promise((ok) => setTimeout(ok, 5));
  };
  return { runner, calls, release };
}

const tagsOf = (batch: Batch) => {
  const seq = batch.dims[batch.dims.length - 1];
  const stride = batch.inputIds.length / batch.dims[0];
  return Array.from({ length: batch.dims[0] }, (_, r) => Number(batch.inputIds[r * stride])).filter(() => seq > 0);
};

describe("request queue", () => {
  test("a lone request on an idle engine runs at once, alone", () => {
    const { runner, calls } = gatedRunner();
    const queue = new RequestQueue(runner);
    void queue.run(fakeBatch(1));
    // Synchronously: no timer, no gather window.
    assert.equal(calls.length, 1);
    assert.equal(queue.queued, 0);
    assert.equal(calls[0].dims[0], 1);
  });

  test("requests that arrive during a run are served next, in arrival order, as one run", async () => {
    const { runner, calls, release } = gatedRunner();
    const queue = new RequestQueue(runner);
    const done: number[] = [];
    const all = [1, 2, 3, 4, 5].map((tag) => queue.run(fakeBatch(tag)).then((out) => (done.push(tag), out)));
    assert.equal(calls.length, 1, "one run at a time");
    assert.deepEqual(tagsOf(calls[0]), [1]);
    await release();
    assert.equal(calls.length, 2);
    assert.deepEqual(tagsOf(calls[1]), [2, 3, 4, 5], "the rest, merged, oldest first");
    await release();
    const outputs = await Promise.all(all);
    assert.deepEqual(done, [1, 2, 3, 4, 5]);
    // Split back: each request gets its own row, with its own dims.
    outputs.forEach((out, i) => {
      assert.deepEqual(out.ids.dims, [1, 4]);
      assert.equal(out.ids.data[0], i + 1);
      assert.deepEqual(out.pooled.dims, [1, 3]);
    });
    assert.deepEqual(queue.stats, { runs: 2, requests: 5, merged: 4, rejected: 0, largestRun: 4 });
  });

  test("after a run that had company, requests still on their way (expectArrival) are waited for and join the next run", async () => {
    const { runner, calls, release } = gatedRunner();
    const queue = new RequestQueue(runner, 0, { gatherMs: 60_000, gatherRatio: Infinity });
    const all = [1, 2, 3].map((tag) => queue.run(fakeBatch(tag)));
    await release();
    assert.deepEqual(tagsOf(calls[1]), [2, 3]);
    all.push(queue.run(fakeBatch(4)));
    const onTheWay = expectArrival();
    try {
      await release();
      assert.equal(calls.length, 2, "the next run waits while a request is on its way");
      all.push(queue.run(fakeBatch(5)));
    } finally {
      onTheWay();
    }
    await new Promise((ok) => setTimeout(ok, 5));
    assert.equal(calls.length, 3, "woken by the arrival, not by the deadline");
    assert.deepEqual(tagsOf(calls[2]), [4, 5]);
    await release();
    await Promise.all(all);
    assert.equal(queue.waits.settles, 3);
  });

  test("after a lone run, the next starts at once: no waiting for requests on their way", async () => {
    const { runner, calls, release } = gatedRunner();
    const queue = new RequestQueue(runner, 0, { gatherMs: 60_000, gatherRatio: Infinity });
    const all = [queue.run(fakeBatch(1)), queue.run(fakeBatch(2))];
    const onTheWay = expectArrival();
    try {
      await release();
      assert.equal(calls.length, 2, "a run of one request had no company: nothing to gather for");
      assert.deepEqual(tagsOf(calls[1]), [2]);
    } finally {
      onTheWay();
    }
    await release();
    await Promise.all(all);
  });

  test("the gather wait is bounded by gatherRatio of the run that ended", async () => {
    const { runner, calls, release } = gatedRunner();
    const queue = new RequestQueue(runner, 0, { gatherMs: 60_000, gatherRatio: 0 });
    const all = [1, 2, 3].map((tag) => queue.run(fakeBatch(tag)));
    await release();
    all.push(queue.run(fakeBatch(4)));
    const onTheWay = expectArrival();
    try {
      await release();
      assert.equal(calls.length, 3, "a zero ratio: no wait after a merged run either");
      assert.deepEqual(tagsOf(calls[2]), [4]);
    } finally {
      onTheWay();
    }
    await release();
    await Promise.all(all);
  });

  test("batching off: one request per run, still in arrival order", async () => {
    const { runner, calls, release } = gatedRunner();
    const queue = new RequestQueue(runner, 0, { batching: false });
    const all = [1, 2, 3].map((tag) => queue.run(fakeBatch(tag)));
    for (let i = 0; i < 3; i++) await release();
    await Promise.all(all);
    assert.deepEqual(calls.map(tagsOf), [[1], [2], [3]]);
  });

  test("the token budget and length buckets split runs without letting anyone starve", async () => {
    const { runner, calls, release } = gatedRunner();
    const queue = new RequestQueue(runner, 0, { maxBatchTokens: 16 });
    // Learn the outputs' axes first: two solo runs at different lengths.
    const warm = [queue.run(fakeBatch(9, 4))];
    await release();
    warm.push(queue.run(fakeBatch(9, 6)));
    await release();
    await Promise.all(warm);
    calls.length = 0;
    const all = [
      queue.run(fakeBatch(1, 4)), // runs alone (idle)
      queue.run(fakeBatch(2, 4)),
      queue.run(fakeBatch(3, 40)), // too long to share a bucket with 4-token requests
      queue.run(fakeBatch(4, 4)),
      queue.run(fakeBatch(5, 4)),
      queue.run(fakeBatch(6, 4)),
      queue.run(fakeBatch(7, 4)),
    ];
    for (let i = 0; i < 4; i++) await release();
    await Promise.all(all);
    // 2 heads a run of 4-token requests up to 16 tokens: 2, 4, 5, 6; then 3 (the oldest left) alone; then 7.
    assert.deepEqual(calls.map(tagsOf), [[1], [2, 4, 5, 6], [3], [7]]);
  });

  test("a request over the token budget runs in parts of whole rows, its outputs joined in order", async () => {
    const calls: Batch[] = [];
    const queue = new RequestQueue(async (batch) => {
      calls.push(batch);
      return {
        ids: { data: Float32Array.from(batch.inputIds, Number), dims: batch.dims },
        first: { data: Float32Array.from({ length: batch.dims[0] }, (_, r) => Number(batch.inputIds[r * (batch.inputIds.length / batch.dims[0])])), dims: [batch.dims[0]] },
      };
    }, 0, { maxBatchTokens: 20 });
    // 7 rows of 2 choices x 3 tokens = 6 tokens a row: 3 rows a run (18 <= 20).
    const rows = 7;
    const batch = fakeBatch(0, 3, rows, 2);
    batch.inputIds.forEach((_, i) => (batch.inputIds[i] = BigInt(100 + i)));
    const timing = { queueMs: 0, runMs: 0, merged: 1 };
    const out = await queue.run(batch, timing);
    assert.deepEqual(calls.map((c) => c.dims), [[3, 2, 3], [3, 2, 3], [1, 2, 3]]);
    assert.deepEqual(out.ids.dims, [rows, 2, 3]);
    assert.deepEqual(Array.from(out.ids.data), Array.from(batch.inputIds, Number));
    assert.deepEqual(Array.from(out.first.data), [100, 106, 112, 118, 124, 130, 136]);
    assert.ok(timing.runMs >= 0 && timing.queueMs >= 0);
    // Within the budget: one run, as given.
    calls.length = 0;
    await queue.run(fakeBatch(1, 3, 3, 2));
    assert.deepEqual(calls.map((c) => c.dims), [[3, 2, 3]]);
  });

  test("multiple-choice batches merge only with the same choice count", async () => {
    const { runner, calls, release } = gatedRunner();
    const queue = new RequestQueue(runner);
    const all = [queue.run(fakeBatch(1, 4, 1, 3)), queue.run(fakeBatch(2, 4, 1, 3)), queue.run(fakeBatch(3, 4, 1, 2)), queue.run(fakeBatch(4, 4, 2, 3))];
    for (let i = 0; i < 3; i++) await release();
    const outputs = await Promise.all(all);
    assert.deepEqual(calls.map((b) => b.dims), [[1, 3, 4], [3, 3, 4], [1, 2, 4]]);
    assert.deepEqual(outputs[3].ids.dims, [2, 3, 4]);
    assert.deepEqual(Array.from(outputs[3].ids.data), Array(24).fill(4));
  });

  test("a full queue answers 429 overloaded with a retry hint", async () => {
    const { runner, release } = gatedRunner();
    const queue = new RequestQueue(runner, 0, { maxQueued: 2 });
    const accepted = [queue.run(fakeBatch(1)), queue.run(fakeBatch(2)), queue.run(fakeBatch(3))];
    await assert.rejects(queue.run(fakeBatch(4)), (err: unknown) => {
      assert.ok(err instanceof OverloadedError);
      assert.equal(err.status, 429);
      assert.equal(err.type, "overloaded");
      assert.ok(err.retryAfter >= 1);
      return true;
    });
    assert.equal(queue.stats.rejected, 1);
    await release();
    await release();
    await Promise.all(accepted);
  });

  test("a failed run rejects every request in it, and the queue goes on", async () => {
    let n = 0;
    const queue = new RequestQueue(async (batch) => {
      if (n++ === 1) throw new Error("boom");
      return { x: { data: new Float32Array(batch.dims[0]), dims: [batch.dims[0]] } };
    });
    const results = await Promise.allSettled([1, 2, 3, 4].map((t) => queue.run(fakeBatch(t))));
    assert.deepEqual(results.map((r) => r.status), ["fulfilled", "rejected", "rejected", "rejected"]);
    assert.equal((await queue.run(fakeBatch(5))).x.dims[0], 1);
  });
});

/** Solo answers (one request at a time) and merged answers (all queued behind a blocker) of a real model. */
async function soloAndMerged(model: LoadedModel, batches: Batch[]) {
  const solo: Outputs[] = [];
  for (const b of batches) solo.push(await model.run(b));
  const blocker = model.run(batches[0]);
  const merged = await Promise.all(batches.map((b) => model.run(b)));
  await blocker;
  return { solo, merged };
}

function assertSame(solo: Outputs[], merged: Outputs[], tolerance: number) {
  solo.forEach((s, i) => {
    for (const [name, t] of Object.entries(s)) {
      assert.deepEqual(merged[i][name].dims, t.dims, `${name} of request ${i}`);
      const diff = maxAbsDiff(merged[i][name].data, t.data);
      assert.ok(diff <= tolerance, `${name} of request ${i}: merged differs from solo by ${diff}`);
    }
  });
}

describe("micro-batching on real models (fp32: merged = solo within 1e-5)", () => {
  const encode = (model: LoadedModel, texts: string[], pair?: string) =>
    padBatch(
      texts.map((t) => model.tokenizer.encode(t, pair)[0]),
      model.tokenizer.padTokenId,
    );

  test("sequence classification, requests of different lengths", async () => {
    const model = await loadFixture("tiny-bert-sentiment", "native");
    const texts = ["I loved it.", "The service was slow and the food arrived cold, again.", "Fine.", "A long, winding, mostly pleasant story about a very small dog."];
    const batches = [encode(model, [texts[0]]), encode(model, [texts[1], texts[2]]), encode(model, [texts[2]]), encode(model, [texts[3]])];
    const { solo, merged } = await soloAndMerged(model, batches);
    assertSame(solo, merged, 1e-5);
    const stats = (model as unknown as { queue: RequestQueue }).queue.stats;
    assert.ok(stats.largestRun >= 4, `requests were merged (largest run ${stats.largestRun})`);
  });

  test("token classification: per-token outputs are cropped back to each request's length", async () => {
    const model = await loadFixture("tiny-bert-ner", "native");
    const batches = [encode(model, ["I live in Berlin."]), encode(model, ["Angela Merkel met Emmanuel Macron in Paris on Tuesday."]), encode(model, ["Hi."])];
    const { solo, merged } = await soloAndMerged(model, batches);
    assert.notEqual(solo[0].logits.dims[1], solo[1].logits.dims[1]);
    assertSame(solo, merged, 1e-5);
    assert.ok((model as unknown as { queue: RequestQueue }).queue.stats.largestRun >= 3);
  });

  test("question answering: start and end logits cropped", async () => {
    const model = await loadFixture("tiny-bert-qa", "native");
    const batches = [
      encode(model, ["Where is the tower?"], "The Eiffel Tower is in Paris."),
      encode(model, ["Who built it?"], "It was built by Gustave Eiffel's company between 1887 and 1889 for the World's Fair."),
    ];
    const { solo, merged } = await soloAndMerged(model, batches);
    assertSame(solo, merged, 1e-5);
  });

  test("multiple choice: [batch, choices, seq] merged with the same choice count", async () => {
    const model = await loadFixture("tiny-bert-swag", "native");
    const mc = (prompt: string, choices: string[]) =>
      padBatch(
        choices.map((c) => model.tokenizer.encode(prompt, c)[0]),
        model.tokenizer.padTokenId,
        choices.length,
      );
    const batches = [
      mc("She opened the fridge and", ["took out the milk.", "flew away.", "sang."]),
      mc("The man put on his running shoes and", ["went out for a long jog in the park.", "ate them.", "slept."]),
      mc("It rained.", ["They got wet.", "The sun shone brightly all day long without a cloud."]),
    ];
    const { solo, merged } = await soloAndMerged(model, batches);
    assertSame(solo, merged, 1e-5);
  });
});

describe("HTTP", () => {
  test("Server-Timing splits tokenize, queue, run and decode", async () => {
    const storage = new MemoryStorage().addFolder(`${FIXTURES_DIR}/tiny-bert-sentiment`, "s");
    const app = createApp({ registry: new ModelRegistry(storage, await createBackend("native")), cache: false });
    const res = await app.request("/models/s", { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ inputs: "hello" }) });
    assert.equal(res.status, 200);
    assert.match(res.headers.get("server-timing") ?? "", /^tokenize;dur=[\d.]+, queue;dur=[\d.]+, run;dur=[\d.]+;desc="\d+ merged", decode;dur=[\d.]+$/);
  });

  test("a full queue answers 429 with Retry-After, uncached", async () => {
    const real = await createBackend("native");
    let gate!: () => void;
    const opened = new Promise<void>((ok) => (gate = ok));
    const backend = {
      name: "gated",
      async createSession(model: Uint8Array) {
        const session = await real.createSession(model);
        return { ...session, inputNames: session.inputNames, outputNames: session.outputNames, run: async (b: Batch) => (await opened, session.run(b)), release: () => session.release() };
      },
    };
    const storage = new MemoryStorage().addFolder(`${FIXTURES_DIR}/tiny-bert-sentiment`, "s");
    const app = createApp({ registry: new ModelRegistry(storage, backend, { queue: { maxQueued: 2 } }), cache: false });
    const post = (text: string) => app.request("/models/s", { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ inputs: text }) });
    await app.request("/models/s/load", { method: "POST" });
    const first = [post("a"), post("b"), post("c")];
    await new Promise((ok) => setTimeout(ok, 20));
    const refused = await post("d");
    assert.equal(refused.status, 429);
    assert.equal(((await refused.json()) as { error_type: string }).error_type, "overloaded");
    assert.ok(Number(refused.headers.get("retry-after")) >= 1);
    assert.equal(refused.headers.get("cache-control"), "no-store");
    gate();
    assert.deepEqual((await Promise.all(first)).map((r) => r.status), [200, 200, 200]);
  });
});
