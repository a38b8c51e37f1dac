import assert from "node:assert/strict";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, it } from "node:test";
import { decodeModel, encodeModel, EXTERNAL, EXTERNAL_THRESHOLD, intAttr, makeNode } from "../src/cli/onnx.ts";
import { packModel } from "../src/cli/pack.ts";
import type { Backend, Batch, ExternalData, Session } from "../src/engine/backend.ts";
import { padBatch } from "../src/engine/batch.ts";
import { FirstTokenBackend, firstTokenGraph } from "../src/engine/first-token.ts";
import { createBackend } from "../src/runtimes/backends.ts";
import { FIXTURES_DIR, maxAbsDiff, type ReferenceCase, readReference } from "./support/fixtures.ts";

/** Heads that read only the first token (pooler / hidden[:, 0]) and heads that read every token. */
const FIRST_TOKEN = ["tiny-bert-sentiment", "tiny-bert-mrpc", "tiny-bert-multilabel", "tiny-bert-regression", "tiny-bert-nli", "tiny-bert-reranker", "tiny-bert-swag", "tiny-distilbert-sentiment"];
const EVERY_TOKEN = { "tiny-bert-ner": "logits", "tiny-bert-qa": "_logits", "tiny-bert-mlm": "logits", "tiny-bert-embed": "last_hidden_state" };

const graph = (fixture: string, file = "model.onnx") => new Uint8Array(readFileSync(`${FIXTURES_DIR}/${fixture}/onnx/${file}`));
const wasm = createBackend("wasm", undefined, { firstToken: false });

const seqs = (x: number[] | number[][]) => (Array.isArray(x[0]) ? (x as number[][]) : [x as number[]]);

/**
 * A fixture's reference cases as padded batches (rows of different lengths: padding is exercised),
 * one batch per choice count (multiple choice), with PyTorch's logits.
 */
function referenceBatches(fixture: string): { batch: Batch; expected: number[] }[] {
  const all = readReference(fixture);
  const groups = [...new Set(all.map((c) => seqs(c.input_ids).length))];
  return groups.map((group) => referenceBatch(all.filter((c) => seqs(c.input_ids).length === group), group));
}

function referenceBatch(cases: ReferenceCase[], group: number): { batch: Batch; expected: number[] } {
  const encodings = cases.flatMap((c) => {
    const [types, masks] = [seqs(c.token_type_ids), c.attention_mask ? seqs(c.attention_mask) : undefined];
    return seqs(c.input_ids).map((ids, choice) => ({ ids, typeIds: types[choice], attentionMask: masks?.[choice] ?? ids.map(() => 1) }));
  });
  return { batch: padBatch(encodings, 0, group), expected: cases.flatMap((c) => c.outputs.logits.data) };
}

async function logits(session: Session, batch: Batch): Promise<Float32Array> {
  return (await session.run(batch)).logits.data;
}

describe("first-token pruning of classifier graphs", () => {
  for (const fixture of FIRST_TOKEN) {
    it(`${fixture}: the pruned fp32 graph gives the exported graph's logits and PyTorch's`, async () => {
      const result = firstTokenGraph(graph(fixture));
      assert.ok("graph" in result, "skipped" in result ? result.skipped : "");
      assert.equal(result.inputRank, fixture === "tiny-bert-swag" ? 3 : 2);
      const backend = await wasm;
      const [full, pruned] = await Promise.all([backend.createSession(graph(fixture)), backend.createSession(result.graph, result.externalData)]);
      for (const { batch, expected } of referenceBatches(fixture)) {
        const [a, b] = [await logits(full, batch), await logits(pruned, batch)];
        assert.ok(maxAbsDiff(a, b) < 1e-5, `pruned vs exported: ${maxAbsDiff(a, b)}`);
        assert.ok(maxAbsDiff(b, expected) < 1e-4, `pruned vs PyTorch: ${maxAbsDiff(b, expected)}`);
      }
      await Promise.all([full.release(), pruned.release()]);
    });
  }

  it("prunes the int8 graphs too, and leaves them as close to PyTorch as the exported int8 graph", async () => {
    const backend = await wasm;
    for (const fixture of ["tiny-bert-sentiment", "tiny-bert-mrpc", "tiny-distilbert-sentiment"]) {
      const int8 = graph(fixture, "model_quantized.onnx");
      const result = firstTokenGraph(int8);
      assert.ok("graph" in result, `${fixture}: ${"skipped" in result ? result.skipped : ""}`);
      const [{ batch, expected }] = referenceBatches(fixture);
      const [full, pruned] = await Promise.all([backend.createSession(int8), backend.createSession(result.graph, result.externalData)]);
      const [fullErr, prunedErr] = [maxAbsDiff(await logits(full, batch), expected), maxAbsDiff(await logits(pruned, batch), expected)];
      // Measured (onnxruntime-web, these batches): exported int8 0.181–0.496 from PyTorch, pruned 0.183–0.533 (at most 0.037 more).
      assert.ok(prunedErr < fullErr + 0.1, `${fixture}: pruned int8 ${prunedErr} vs exported int8 ${fullErr}`);
      await Promise.all([full.release(), pruned.release()]);
    }
  });

  it("hands the weights over as views of the graph's own bytes, so that only the structure is written again", () => {
    for (const file of ["model.onnx", "model_quantized.onnx"]) {
      const original = graph("tiny-bert-sentiment", file);
      const result = firstTokenGraph(original);
      assert.ok("graph" in result, "skipped" in result ? result.skipped : "");
      const weights = result.externalData.reduce((sum, f) => sum + f.data.byteLength, 0);
      assert.ok(result.externalData.length > 10, `${result.externalData.length} weight files`);
      for (const f of result.externalData) assert.equal(f.data.buffer, original.buffer, `${f.path} is a copy`);
      // Every byte of the original is either a detached weight or in the new graph (which adds a few nodes).
      assert.ok(result.graph.byteLength < original.byteLength - weights + 4096, `${result.graph.byteLength} + ${weights} vs ${original.byteLength}`);
      assert.ok(weights > 0.9 * original.byteLength, `${weights} of ${original.byteLength} bytes detached`);
      const model = decodeModel(result.graph);
      assert.ok(model.graph.initializer.every((t) => t.data_location === EXTERNAL || (t.raw_data?.byteLength ?? 0) < EXTERNAL_THRESHOLD));
    }
  });

  for (const [fixture, output] of Object.entries(EVERY_TOKEN)) {
    it(`${fixture}: refused (its output reads every token)`, () => {
      for (const file of ["model.onnx", "model_quantized.onnx"]) {
        const result = firstTokenGraph(graph(fixture, file));
        assert.ok("skipped" in result && result.skipped.includes("reads every token") && result.skipped.includes(output), JSON.stringify("skipped" in result ? result.skipped : "pruned"));
      }
    });
  }

  it("refuses a classifier that also outputs its last hidden state", () => {
    const model = decodeModel(graph("tiny-bert-sentiment"));
    const pooler = model.graph.node.find((n) => n.op_type === "Gather" && n.output[0].includes("pooler"))!;
    model.graph.output.push({ name: pooler.input[0] });
    const result = firstTokenGraph(encodeModel(model));
    assert.deepEqual(result, { skipped: `output ${pooler.input[0]} reads every token` });
  });

  it("prunes a classifier whose graph ends in a Softmax of its own", () => {
    const model = decodeModel(graph("tiny-bert-sentiment"));
    model.graph.node.push(makeNode("Softmax", ["logits"], ["probabilities"], "head/Softmax", [intAttr("axis", -1)]));
    model.graph.output.push({ name: "probabilities" });
    const result = firstTokenGraph(encodeModel(model));
    assert.ok("graph" in result, "skipped" in result ? result.skipped : "");
  });

  it("refuses a graph that mixes another per-token tensor in after the last attention", () => {
    const model = decodeModel(graph("tiny-bert-sentiment"));
    const pooler = model.graph.node.find((n) => n.op_type === "Gather" && n.output[0].includes("pooler"))!;
    const embeddings = "/bert/embeddings/LayerNorm/Add_1_output_0";
    const at = model.graph.node.indexOf(pooler);
    model.graph.node.splice(at, 0, makeNode("Add", [pooler.input[0], embeddings], ["mixed"], "test/Add"));
    pooler.input[0] = "mixed";
    assert.deepEqual(firstTokenGraph(encodeModel(model)), { skipped: `Add test/Add after the last attention reads ${embeddings}, which has every token` });
  });

  it("refuses a head that reads a token other than the first", () => {
    const model = decodeModel(graph("tiny-bert-sentiment"));
    const pooler = model.graph.node.find((n) => n.op_type === "Gather" && n.output[0].includes("pooler"))!;
    // The pooler's index: a Constant node holding 0; make it 1.
    const index = model.graph.node.find((n) => n.output[0] === pooler.input[1])!;
    const t = index.attribute![0].t!;
    index.attribute![0].t = { ...t, raw_data: new Uint8Array(new BigInt64Array([1n]).buffer), int64_data: [] };
    const result = firstTokenGraph(encodeModel(model));
    assert.deepEqual(result, { skipped: "output logits reads every token" });
  });
});

describe("FirstTokenBackend", () => {
  /** A backend whose sessions answer only for graphs `works` accepts. */
  function fakeBackend(works: (model: Uint8Array) => boolean): Backend & { created: Uint8Array[]; released: number } {
    const created: Uint8Array[] = [];
    const backend = {
      name: "fake",
      created,
      released: 0,
      async createSession(model: Uint8Array): Promise<Session> {
        created.push(model);
        return {
          inputNames: ["input_ids"],
          outputNames: ["logits"],
          run: async () => {
            if (!works(model)) throw new Error("Reshape: invalid shape\nmore detail");
            return { logits: { data: new Float32Array(2), dims: [1, 2] } };
          },
          release: async () => void backend.released++,
        };
      },
    };
    return backend;
  }

  it("serves the pruned graph of a classifier after a probe run", async () => {
    const original = graph("tiny-bert-sentiment");
    const inner = fakeBackend(() => true);
    const lines: string[] = [];
    await new FirstTokenBackend(inner, { log: (l) => lines.push(l) }).createSession(original);
    assert.equal(inner.created.length, 1);
    assert.notDeepEqual(inner.created[0], original);
    assert.deepEqual(lines, []);
  });

  it("serves a token-level graph as it is", async () => {
    const original = graph("tiny-bert-ner");
    const inner = fakeBackend(() => true);
    await new FirstTokenBackend(inner, { log: () => assert.fail("no log expected") }).createSession(original);
    assert.deepEqual(inner.created, [original]);
  });

  it("falls back to the exported graph, with a log line, when the pruned one fails its probe", async () => {
    const original = graph("tiny-bert-sentiment");
    const inner = fakeBackend((model) => model === original);
    const lines: string[] = [];
    await new FirstTokenBackend(inner, { log: (l) => lines.push(l) }).createSession(original);
    assert.equal(inner.created.length, 2);
    assert.equal(inner.created[1], original);
    assert.equal(inner.released, 1);
    assert.deepEqual(lines, ["bert-edge: first-token pruning failed (Reshape: invalid shape); serving the graph as exported"]);
  });

  it("hands a token-level graph to the engine with its weights as external data when asked, answering as the file does", async () => {
    const original = graph("tiny-bert-ner", "model_quantized.onnx");
    const engine = await wasm;
    const created: { model: Uint8Array; externalData?: ExternalData }[] = [];
    const recording: Backend = {
      name: engine.name,
      createSession: (model, externalData) => (created.push({ model, externalData }), engine.createSession(model, externalData)),
    };
    const detached = await new FirstTokenBackend(recording, { externalWeights: true, log: () => assert.fail("no log expected") }).createSession(original);
    assert.equal(created.length, 1);
    // The structure alone: the embeddings and every layer's weights went out as views of `original`.
    assert.ok(created[0].model.byteLength < original.byteLength / 4, `${created[0].model.byteLength} of ${original.byteLength} bytes`);
    assert.ok(created[0].externalData!.every((f) => f.data.buffer === original.buffer));
    const whole = await engine.createSession(original);
    for (const { batch } of referenceBatches("tiny-bert-ner")) assert.deepEqual(await logits(detached, batch), await logits(whole, batch));
  });

  it("falls back to the graph as exported, with a log line, when its detached weights fail to load", async () => {
    const original = graph("tiny-bert-ner");
    const inner = fakeBackend(() => true);
    const failing: Backend = {
      name: "fake",
      createSession: async (model, externalData) => {
        if (externalData?.length) throw new Error("external data: not supported\nmore detail");
        return inner.createSession(model);
      },
    };
    const lines: string[] = [];
    await new FirstTokenBackend(failing, { externalWeights: true, log: (l) => lines.push(l) }).createSession(original);
    assert.deepEqual(inner.created, [original]);
    assert.deepEqual(lines, ["bert-edge: loading the weights as external data failed (external data: not supported); serving the graph as exported"]);
  });

  it("is what createBackend builds by default, detaching every graph's weights on WASM only, and not with firstToken off", async () => {
    const web = await createBackend("wasm");
    assert.ok(web instanceof FirstTokenBackend && web.externalWeights);
    const native = await createBackend("native");
    assert.ok(native instanceof FirstTokenBackend && !native.externalWeights);
    assert.ok(!((await createBackend("wasm", undefined, { firstToken: false })) instanceof FirstTokenBackend));
  });
});

describe("bert-edge pack", () => {
  const prunedNodes = (dir: string) => decodeModel(new Uint8Array(readFileSync(join(dir, "onnx/model_quantized.onnx")))).graph.node.filter((n) => n.name?.startsWith("bert_edge_first_token")).map((n) => n.op_type);

  it("writes a classifier's graph pruned (so Workers serve it so too), a token-level head's as it is, and neither with firstToken off", async () => {
    const out = mkdtempSync(join(tmpdir(), "bert-edge-first-token-"));
    try {
      const lines: string[] = [];
      const sentiment = await packModel(join(FIXTURES_DIR, "tiny-bert-sentiment"), out, { verifyOn: ["wasm"], log: (l) => lines.push(l) });
      // int8: the query input and the residual are sliced.
      assert.deepEqual(prunedNodes(sentiment.dir), ["Slice", "Slice"]);
      assert.ok(lines.includes("first-token pruning: the last layer runs queries, attention output and FFN for the first token only"));
      // Loaded again on Node, the pruned graph is left as it is (already pruned).
      assert.ok("skipped" in firstTokenGraph(new Uint8Array(readFileSync(join(sentiment.dir, "onnx/model_quantized.onnx")))));
      const ner = await packModel(join(FIXTURES_DIR, "tiny-bert-ner"), out, { verifyOn: ["wasm"], log: (l) => lines.push(l) });
      assert.deepEqual(prunedNodes(ner.dir), []);
      assert.ok(lines.includes("first-token pruning: not applied (output logits reads every token)"));
      const exact = await packModel(join(FIXTURES_DIR, "tiny-bert-sentiment"), out, { id: "exact", verifyOn: ["wasm"], firstToken: false });
      assert.deepEqual(prunedNodes(exact.dir), []);
    } finally {
      rmSync(out, { recursive: true, force: true });
    }
  });
});
