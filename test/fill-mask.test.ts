import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { describe, test } from "node:test";
import type { Batch, Outputs } from "../src/engine/backend.ts";
import type { LoadedModel } from "../src/engine/model.ts";
import { BertTokenizer } from "../src/engine/tokenizer.ts";
import { ServiceError } from "../src/errors.ts";
import { type FillMaskPrediction, fillMask, targetIds, topTokens } from "../src/tasks/fill-mask.ts";
import { softmax } from "../src/tasks/math.ts";
import { readReference } from "./support/fixtures.ts";
import { hasFixture, loadFixture } from "./support/load-model.ts";
import { fakeModel } from "./support/fake-model.ts";

const TOKENIZER_DIR = new URL("../tools/fixtures/tokenizer/", import.meta.url);
const tokenizer = BertTokenizer.fromJSON(
  JSON.parse(readFileSync(new URL("tokenizer.json", TOKENIZER_DIR), "utf8")),
  JSON.parse(readFileSync(new URL("tokenizer_config.json", TOKENIZER_DIR), "utf8")),
);
const V = tokenizer.vocabSize;
const id = (t: string) => tokenizer.tokenToId(t)!;

/** A model whose logits are 0 except `boosts[row][position][token]`. */
function fakeMlm(boosts: Record<number, Record<number, Record<number, number>>> = {}) {
  const batches: Batch[] = [];
  const model = fakeModel({
    id: "fake-mlm",
    task: "fill-mask",
    tokenizer,
    async run(batch): Promise<Outputs> {
      batches.push(batch);
      const [b, s] = batch.dims;
      const data = new Float32Array(b * s * V);
      for (const [row, positions] of Object.entries(boosts)) {
        for (const [pos, tokens] of Object.entries(positions)) {
          for (const [tok, value] of Object.entries(tokens)) data[(Number(row) * s + Number(pos)) * V + Number(tok)] = value;
        }
      }
      return { logits: { data, dims: [b, s, V] } };
    },
  });
  return { model, batches };
}

const close = (a: number, b: number, eps = 1e-9) => assert.ok(Math.abs(a - b) < eps, `${a} != ${b}`);

describe("fill-mask decoding", () => {
  test("topTokens: full-vocab softmax, best first, ties to the lower id", () => {
    const row = [0, 3, 1, 3, 2];
    const probs = softmax(row);
    const top = topTokens(row, 3);
    assert.deepEqual(top.map((t) => t.id), [1, 3, 4]);
    top.forEach((t) => close(t.score, probs[t.id]));
    // Candidates keep the full-softmax probabilities (not renormalised), and k is capped.
    const only = topTokens(row, 5, [0, 2]);
    assert.deepEqual(only.map((t) => t.id), [2, 0]);
    close(only[0].score, probs[2]);
    // A k past the 256 insertion limit sorts everything and agrees.
    const big = Array.from({ length: 1000 }, (_, i) => Math.sin(i));
    assert.deepEqual(
      topTokens(big, 300).map((t) => t.id).slice(0, 20),
      topTokens(big, 20).map((t) => t.id),
    );
  });

  test("one mask: top_k predictions with sequence, token and token_str", async () => {
    // "[CLS] the capital of france is [MASK] . [SEP]": mask at 6.
    const paris = id("paris");
    const lyon = id("lyon");
    const { model, batches } = fakeMlm({ 0: { 6: { [paris]: 10, [lyon]: 9 } } });
    const out = (await fillMask.run(model, "The capital of France is [MASK].", { top_k: 3 })) as FillMaskPrediction[];
    assert.equal(out.length, 3);
    const z = Math.exp(10) + Math.exp(9) + (V - 2);
    const { score, ...rest } = out[0];
    assert.deepEqual(rest, { token: paris, token_str: "paris", sequence: "the capital of france is paris." });
    close(score, Math.exp(10) / z, 1e-12);
    assert.equal(out[1].token_str, "lyon");
    close(out[1].score, Math.exp(9) / z);
    // Ties at logit 0 go to the lowest id: [PAD] (0), then removed from the sequence as padding.
    assert.equal(out[2].token, 0);
    assert.equal(out[2].sequence, "the capital of france is.");
    assert.deepEqual(batches[0].dims, [1, 9]);
  });

  test("default top_k is 5", async () => {
    const { model } = fakeMlm();
    const out = (await fillMask.run(model, "Hello [MASK]!", {})) as FillMaskPrediction[];
    assert.equal(out.length, 5);
  });

  test("targets: scores read at the targets, top_k capped, unknown words tokenized to their first id", async () => {
    const paris = id("paris");
    const lyon = id("lyon");
    const { model } = fakeMlm({ 0: { 6: { [paris]: 2, [lyon]: 5 } } });
    const z = Math.exp(2) + Math.exp(5) + (V - 2);
    const out = (await fillMask.run(model, "The capital of France is [MASK].", {
      targets: ["Paris", "lyon", "lyon"],
      top_k: 10,
    })) as FillMaskPrediction[];
    // "Paris" is not a vocab entry (uncased vocab): tokenized to "paris". Duplicates collapse.
    assert.deepEqual(out.map((o) => o.token_str), ["lyon", "paris"]);
    close(out[0].score, Math.exp(5) / z);
    close(out[1].score, Math.exp(2) / z);
    // A word split into pieces maps to its first piece.
    const [first] = tokenizer.encode("unaffable", undefined, { addSpecialTokens: false })[0].ids;
    assert.deepEqual(targetIds(tokenizer, "unaffable"), [first]);
    // A single string target is accepted.
    const one = (await fillMask.run(model, "The capital of France is [MASK].", { targets: "paris" })) as FillMaskPrediction[];
    assert.deepEqual(one.map((o) => o.token), [paris]);
  });

  test("targets that tokenize to nothing are an error", async () => {
    const { model } = fakeMlm();
    await assert.rejects(
      () => fillMask.run(model, "Hello [MASK]!", { targets: [" ", "  "] }),
      (e: unknown) => e instanceof ServiceError && e.status === 422,
    );
  });

  test("several masks: one list per mask, in order, special tokens kept in the sequence", async () => {
    // "[CLS] i went to the [MASK] to buy some [MASK] . [SEP]": masks at 5 and 9.
    const store = id("store");
    const milk = id("milk");
    const { model } = fakeMlm({ 0: { 5: { [store]: 8 }, 9: { [milk]: 7 } } });
    const out = (await fillMask.run(model, "I went to the [MASK] to buy some [MASK].", { top_k: 2 })) as FillMaskPrediction[][];
    assert.equal(out.length, 2);
    assert.equal(out[0].length, 2);
    assert.equal(out[0][0].token_str, "store");
    assert.equal(out[0][0].sequence, "[CLS] i went to the store to buy some [MASK]. [SEP]");
    assert.equal(out[1][0].token_str, "milk");
    assert.equal(out[1][0].sequence, "[CLS] i went to the [MASK] to buy some milk. [SEP]");
    close(out[1][0].score, Math.exp(7) / (Math.exp(7) + V - 1));
  });

  test("a list of inputs: one answer per input, batched in one run with padding", async () => {
    const paris = id("paris");
    const { model, batches } = fakeMlm({ 1: { 2: { [paris]: 4 } } });
    const out = (await fillMask.run(model, ["The capital of France is [MASK].", "Hello [MASK]!"], { top_k: 1 })) as FillMaskPrediction[][];
    assert.equal(batches.length, 1);
    assert.deepEqual(batches[0].dims, [2, 9]);
    assert.equal(out.length, 2);
    assert.equal(out[1][0].sequence, "hello paris!");
    // A list of one keeps the list.
    const listOfOne = (await fillMask.run(model, ["Hello [MASK]!"], { top_k: 1 })) as FillMaskPrediction[][];
    assert.equal(listOfOne.length, 1);
    assert.ok(Array.isArray(listOfOne[0]));
  });

  test("an input without a mask token is a 422 naming the mask token", async () => {
    const { model, batches } = fakeMlm();
    await assert.rejects(
      () => fillMask.run(model, "No mask here.", {}),
      (e: unknown) => e instanceof ServiceError && e.status === 422 && /\[MASK\]/.test(e.message) && /^inputs:/.test(e.message),
    );
    await assert.rejects(
      () => fillMask.run(model, ["Hello [MASK]!", "none"], {}),
      (e: unknown) => e instanceof ServiceError && e.status === 422 && /inputs\.1/.test(e.message),
    );
    assert.equal(batches.length, 0);
  });

  test("only the mask rows of the logits are read", async () => {
    // NaN everywhere but the mask row: any read outside it would poison the softmax.
    const model: LoadedModel = {
      ...fakeMlm().model,
      async run(batch) {
        const [b, s] = batch.dims;
        const data = new Float32Array(b * s * V).fill(Number.NaN);
        data.fill(0, 2 * V, 3 * V);
        data[2 * V + 7] = 1;
        return { logits: { data, dims: [b, s, V] } };
      },
    };
    const out = (await fillMask.run(model, "Hello [MASK]!", { top_k: 1 })) as FillMaskPrediction[];
    assert.equal(out[0].token, 7);
    close(out[0].score, Math.E / (Math.E + V - 1));
  });
});

describe("fill-mask on tiny-bert-mlm", { skip: !hasFixture("tiny-bert-mlm") && "fixture tiny-bert-mlm not generated" }, () => {
  test("top-5 at every mask matches PyTorch (fp32), two masks give two lists", async () => {
    const model = await loadFixture("tiny-bert-mlm");
    for (const c of readReference("tiny-bert-mlm")) {
      const expected = c.outputs.top_k as unknown as { position: number; token_id: number; score: number }[][];
      const out = (await fillMask.run(model, c.text!, {})) as FillMaskPrediction[] | FillMaskPrediction[][];
      const perMask = expected.length === 1 ? [out as FillMaskPrediction[]] : (out as FillMaskPrediction[][]);
      assert.equal(perMask.length, expected.length, c.text);
      perMask.forEach((predictions, m) => {
        assert.deepEqual(predictions.map((p) => p.token), expected[m].map((e) => e.token_id), c.text);
        predictions.forEach((p, k) => close(p.score, expected[m][k].score, 1e-5));
      });
    }
    const two = readReference("tiny-bert-mlm").find((c) => c.text === "I went to the [MASK] to buy some [MASK].");
    assert.ok(two, "reference has the two-mask case");
    const out = (await fillMask.run(model, two.text!, { top_k: 2 })) as FillMaskPrediction[][];
    assert.equal(out.length, 2);
    assert.ok(out.every((list) => list.length === 2 && list[0].score >= list[1].score));
    assert.match(out[0][0].sequence, /^\[CLS\] i went to the \S+ to buy some \[MASK\]\. \[SEP\]$/);
  });
});
