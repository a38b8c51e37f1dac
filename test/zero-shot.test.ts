import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { describe, test } from "node:test";
import type { Batch, Outputs } from "../src/engine/backend.ts";
import { BertTokenizer } from "../src/engine/tokenizer.ts";
import { ServiceError } from "../src/errors.ts";
import { softmax } from "../src/tasks/math.ts";
import {
  entailmentId,
  formatHypothesis,
  parseLabels,
  type ZeroShotResult,
  zeroShotClassification,
  zeroShotScores,
} from "../src/tasks/zero-shot-classification.ts";
import { readReference } from "./support/fixtures.ts";
import { hasFixture, loadFixture } from "./support/load-model.ts";
import { fakeModel } from "./support/fake-model.ts";

const close = (a: number, b: number, eps = 1e-12) => assert.ok(Math.abs(a - b) < eps, `${a} != ${b}`);
const closeAll = (a: number[], b: number[], eps = 1e-12) => {
  assert.equal(a.length, b.length);
  a.forEach((x, i) => close(x, b[i], eps));
};

// NLI logits [contradiction, neutral, entailment] of three candidate labels.
const ROWS = [
  [1, 0, 2],
  [0, 0, 1],
  [3, 0, 0.5],
];

describe("zero-shot scoring (pipeline rules)", () => {
  test("single-label: softmax of the entailment logits over the labels", () => {
    const out = zeroShotScores("s", ["a", "b", "c"], ROWS, 2, false);
    // numpy: exp(e) / exp(e).sum() for e = [2, 1, 0.5]
    assert.deepEqual(out.labels, ["a", "b", "c"]);
    closeAll(out.scores, [0.6285317192117625, 0.23122389762214907, 0.1402443831660885]);
    assert.equal(out.sequence, "s");
  });

  test("multi_label: softmax of [contradiction, entailment] per label; ties put the later label first", () => {
    const out = zeroShotScores("s", ["a", "b", "c"], ROWS, 2, true);
    // a: softmax([1, 2])[1], b: softmax([0, 1])[1] (equal), c: softmax([3, 0.5])[1]
    assert.deepEqual(out.labels, ["b", "a", "c"]);
    closeAll(out.scores, [0.7310585786300049, 0.7310585786300049, 0.07585818002124355]);
  });

  test("one candidate label is scored as multi_label", () => {
    const out = zeroShotScores("s", ["only"], [ROWS[2]], 2, false);
    closeAll(out.scores, [0.07585818002124355]);
  });

  test("entailment at index 0 makes the last class the contradiction", () => {
    const out = zeroShotScores("s", ["x", "y"], [[2, 0, 1], [0.5, 0, 3]], 0, true);
    // x: softmax([1, 2])[1], y: softmax([3, 0.5])[1]
    assert.deepEqual(out.labels, ["x", "y"]);
    closeAll(out.scores, [0.7310585786300049, 0.07585818002124355]);
  });

  test("no entailment label: -1 reads the last class, as numpy indexing", () => {
    const out = zeroShotScores("s", ["a", "b", "c"], ROWS, -1, false);
    closeAll(out.scores, [0.6285317192117625, 0.23122389762214907, 0.1402443831660885]);
  });

  test("entailment id from label2id, else id2label; any case", () => {
    const labels = ["contradiction", "neutral", "entailment"];
    assert.equal(entailmentId({ config: {}, labels }), 2);
    assert.equal(entailmentId({ config: { label2id: { ENTAILMENT: 0, NEUTRAL: 1, CONTRADICTION: 2 } }, labels }), 0);
    assert.equal(entailmentId({ config: {}, labels: ["LABEL_0", "LABEL_1"] }), -1);
  });

  test("labels and template parsing", () => {
    assert.deepEqual(parseLabels(" urgent, not urgent ,,phone "), ["urgent", "not urgent", "phone"]);
    assert.deepEqual(parseLabels(["a, b", "c"]), ["a, b", "c"]);
    assert.equal(formatHypothesis("This example is {}.", "sports"), "This example is sports.");
    assert.equal(formatHypothesis("{{{0}}}", "x"), "{x}");
    assert.equal(formatHypothesis("no slot", "x"), "no slot");
  });
});

const TOKENIZER_DIR = new URL("../tools/fixtures/tokenizer/", import.meta.url);
const tokenizer = BertTokenizer.fromJSON(
  JSON.parse(readFileSync(new URL("tokenizer.json", TOKENIZER_DIR), "utf8")),
  JSON.parse(readFileSync(new URL("tokenizer_config.json", TOKENIZER_DIR), "utf8")),
);

/** An NLI model answering ROWS[label] for every pair whose hypothesis holds that label's word. */
function fakeNli() {
  const batches: Batch[] = [];
  const words = ["alpha", "beta", "gamma"].map((w) => tokenizer.tokenToId(w)!);
  const model = fakeModel({
    id: "fake-nli",
    task: "zero-shot-classification",
    labels: ["contradiction", "neutral", "entailment"],
    tokenizer,
    async run(batch): Promise<Outputs> {
      batches.push(batch);
      const [b, s] = batch.dims;
      const data = new Float32Array(b * 3);
      for (let r = 0; r < b; r++) {
        const ids = Array.from(batch.inputIds.subarray(r * s, (r + 1) * s), Number);
        const which = words.findIndex((w) => ids.includes(w));
        data.set(ROWS[which], r * 3);
      }
      return { logits: { data, dims: [b, 3] } };
    },
  });
  return { model, batches };
}

describe("zero-shot-classification head", () => {
  test("one input: {sequence, labels, scores} in both modes", async () => {
    const { model, batches } = fakeNli();
    const params = { candidate_labels: "alpha, beta, gamma" };
    const one = (await zeroShotClassification.run(model, "Some text.", params)) as ZeroShotResult;
    assert.deepEqual(one.labels, ["alpha", "beta", "gamma"]);
    assert.equal(one.sequence, "Some text.");
    closeAll(one.scores, [0.6285317192117625, 0.23122389762214907, 0.1402443831660885], 1e-7);
    assert.deepEqual(batches[0].dims.slice(0, 1), [3]);
    // Premise first, hypothesis second: the label's word sits in segment 1.
    const multi = (await zeroShotClassification.run(model, "Some text.", { ...params, multi_label: true })) as ZeroShotResult;
    assert.deepEqual(multi.labels, ["beta", "alpha", "gamma"]);
    closeAll(multi.scores, [0.7310585786300049, 0.7310585786300049, 0.07585818002124355], 1e-7);
  });

  test("a list of inputs gives a list of results, all pairs in one run", async () => {
    const { model, batches } = fakeNli();
    const out = (await zeroShotClassification.run(model, ["One.", "Two."], {
      candidate_labels: ["gamma", "alpha"],
      hypothesis_template: "It is about {}.",
    })) as ZeroShotResult[];
    assert.equal(out.length, 2);
    assert.equal(batches.length, 1);
    assert.equal(batches[0].dims[0], 4);
    const p = softmax([0.5, 2]);
    for (const [i, r] of out.entries()) {
      assert.equal(r.sequence, ["One.", "Two."][i]);
      assert.deepEqual(r.labels, ["alpha", "gamma"]);
      closeAll(r.scores, [p[1], p[0]], 1e-7);
    }
  });

  test("bad parameters are 422", async () => {
    const { model } = fakeNli();
    const is422 = (e: unknown) => e instanceof ServiceError && e.status === 422;
    await assert.rejects(() => zeroShotClassification.run(model, "x", { candidate_labels: " , " }), is422);
    await assert.rejects(
      () => zeroShotClassification.run(model, "x", { candidate_labels: ["a"], hypothesis_template: "no slot" }),
      is422,
    );
    assert.ok(!zeroShotClassification.parameters.safeParse({}).success, "candidate_labels is required");
  });
});

describe("zero-shot on tiny-bert-nli", { skip: !hasFixture("tiny-bert-nli") && "fixture tiny-bert-nli not generated" }, () => {
  test("scores come from the model's entailment logits (fp32, PyTorch reference)", async () => {
    const model = await loadFixture("tiny-bert-nli");
    const cases = readReference("tiny-bert-nli").filter((c) => c.text_pair?.startsWith("This example is about "));
    assert.equal(cases.length, 2);
    const labels = cases.map((c) => c.text_pair!.slice("This example is about ".length, -1));
    const params = { candidate_labels: labels, hypothesis_template: "This example is about {}." };
    const out = (await zeroShotClassification.run(model, cases[0].text!, params)) as ZeroShotResult;
    const expected = softmax(cases.map((c) => c.outputs.logits.data[2]));
    for (const [i, label] of out.labels.entries()) close(out.scores[i], expected[labels.indexOf(label)], 1e-4);
    const multi = (await zeroShotClassification.run(model, cases[0].text!, { ...params, multi_label: true })) as ZeroShotResult;
    for (const [i, label] of multi.labels.entries()) {
      const logits = cases[labels.indexOf(label)].outputs.logits.data;
      close(multi.scores[i], softmax([logits[0], logits[2]])[1], 1e-4);
    }
  });
});
