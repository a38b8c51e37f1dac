import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { defaultFunction, scoreLabels } from "../src/tasks/text-classification.ts";

const close = (actual: number, expected: number, eps = 1e-12) =>
  assert.ok(Math.abs(actual - expected) < eps, `${actual} != ${expected}`);

describe("text-classification decoding", () => {
  test("softmax over labels, sorted best first", () => {
    // softmax([1, 2, 3]) = [0.09003057, 0.24472847, 0.66524096]
    const out = scoreLabels([1, 2, 3], ["neg", "neu", "pos"], "softmax");
    assert.deepEqual(out.map((o) => o.label), ["pos", "neu", "neg"]);
    close(out[0].score, 0.6652409557748219);
    close(out[1].score, 0.24472847105479767);
    close(out[2].score, 0.09003057317038046);
  });

  test("top_k cuts after sorting; null keeps all", () => {
    assert.deepEqual(scoreLabels([0, 5, 1], ["a", "b", "c"], "none", 2), [
      { label: "b", score: 5 },
      { label: "c", score: 1 },
    ]);
    assert.equal(scoreLabels([0, 5, 1], ["a", "b", "c"], "none", null).length, 3);
  });

  test("sigmoid scores labels independently (multi-label)", () => {
    const out = scoreLabels([0, 2, -2], ["x", "y", "z"], "sigmoid");
    close(out[0].score, 0.8807970779778823);
    close(out[1].score, 0.5);
    close(out[2].score, 0.11920292202211755);
    assert.equal(out[0].label, "y");
  });

  test("softmax is stable for large logits", () => {
    const out = scoreLabels([1000, 1001], ["a", "b"], "softmax");
    close(out[0].score, 0.7310585786300049);
  });

  test("default function follows the transformers pipeline", () => {
    const model = (problem_type: string | undefined, n: number) => ({
      config: { problem_type } as never,
      labels: Array.from({ length: n }, (_, i) => `L${i}`),
    });
    assert.equal(defaultFunction(model("regression", 1)), "none");
    assert.equal(defaultFunction(model(undefined, 1)), "sigmoid");
    assert.equal(defaultFunction(model("multi_label_classification", 4)), "sigmoid");
    assert.equal(defaultFunction(model("single_label_classification", 3)), "softmax");
    assert.equal(defaultFunction(model(undefined, 2)), "softmax");
  });

  test("missing id2label entries fall back to LABEL_i", () => {
    assert.equal(scoreLabels([3, 1], ["only"], "none")[0].label, "only");
    assert.equal(scoreLabels([1, 3], ["only"], "none")[0].label, "LABEL_1");
  });
});
