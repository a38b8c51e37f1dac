import assert from "node:assert/strict";
import { describe, test } from "node:test";
import type { Batch } from "../src/engine/backend.ts";
import type { LoadedModel } from "../src/engine/model.ts";
import { type ChoiceScore, multipleChoice, rankChoices } from "../src/tasks/multiple-choice.ts";
import { softmax } from "../src/tasks/math.ts";
import { maxAbsDiff, readReference } from "./support/fixtures.ts";
import { hasFixture, loadFixture } from "./support/load-model.ts";

const close = (a: number, b: number, eps = 1e-12) => assert.ok(Math.abs(a - b) < eps, `${a} != ${b}`);

function checkRanking(out: ChoiceScore[], choices: string[]) {
  assert.equal(out.length, choices.length);
  close(out.reduce((s, o) => s + o.score, 0), 1, 1e-9);
  for (let i = 1; i < out.length; i++) assert.ok(out[i - 1].score >= out[i].score, "sorted best first");
  assert.deepEqual(out.map((o) => o.index).sort((a, b) => a - b), choices.map((_, i) => i));
  for (const o of out) assert.equal(o.choice, choices[o.index]);
}

describe("multiple-choice decoding", () => {
  test("softmax over the choices, best first, index and logit kept", () => {
    const out = rankChoices([1, 3, 2], ["a", "b", "c"]);
    const p = softmax([1, 3, 2]);
    assert.deepEqual(out, [
      { index: 1, choice: "b", score: p[1], logit: 3 },
      { index: 2, choice: "c", score: p[2], logit: 2 },
      { index: 0, choice: "a", score: p[0], logit: 1 },
    ]);
  });

  test("ties keep request order", () => {
    assert.deepEqual(rankChoices([0, 0], ["x", "y"]).map((o) => o.index), [0, 1]);
  });

  test("the schema takes 2 to 16 choices, one item or a list", () => {
    const ok = (v: unknown) => multipleChoice.inputs.safeParse(v).success;
    assert.ok(ok({ prompt: "p", choices: ["a", "b"] }));
    assert.ok(ok([{ prompt: "p", choices: ["a", "b"] }, { prompt: "q", choices: ["a", "b", "c"] }]));
    assert.ok(!ok({ prompt: "p", choices: ["a"] }));
    assert.ok(!ok({ prompt: "p", choices: Array.from({ length: 17 }, (_, i) => `c${i}`) }));
    assert.ok(!ok({ prompt: "p", choices: ["a", "b"], extra: 1 }));
  });
});

describe("multiple-choice on tiny-bert-swag", { skip: !hasFixture("tiny-bert-swag") && "fixture tiny-bert-swag not generated" }, () => {
  test("2 and 5 choices: scores sum to 1, sorted, index/choice consistent", async () => {
    const model = await loadFixture("tiny-bert-swag", "native", true);
    const two = { prompt: "The man put on his running shoes.", choices: ["He went out for a jog.", "He ate the shoes."] };
    const five = {
      prompt: "The students walked into the exam hall and sat down.",
      choices: ["The teacher handed out the papers.", "They started swimming.", "The hall turned into a forest.",
        "Everyone began to write their names at the top of the page.", "A dog read the questions aloud."],
    };
    checkRanking((await multipleChoice.run(model, two, {})) as ChoiceScore[], two.choices);
    checkRanking((await multipleChoice.run(model, five, {})) as ChoiceScore[], five.choices);
  });

  test("a list: one run per choice count, [group, choices, seq] batches, answers in input order", async () => {
    const real = await loadFixture("tiny-bert-swag");
    const batches: Batch[] = [];
    const model: LoadedModel = { ...real, run: (b) => (batches.push(b), real.run(b)) };
    const cases = readReference("tiny-bert-swag");
    const items = cases.map((c) => ({ prompt: c.prompt!, choices: c.choices! }));
    const out = (await multipleChoice.run(model, items, {})) as ChoiceScore[][];
    const counts = [...new Set(items.map((i) => i.choices.length))];
    assert.equal(batches.length, counts.length);
    for (const b of batches) {
      assert.equal(b.dims.length, 3);
      const [group, choices] = b.dims;
      assert.equal(group, items.filter((i) => i.choices.length === choices).length);
    }
    out.forEach((answer, i) => checkRanking(answer, items[i].choices));
    // Batched with padding, every logit still matches PyTorch's (fp32 graph).
    cases.forEach((c, i) => {
      const logits = [...out[i]].sort((a, b) => a.index - b.index).map((o) => o.logit);
      assert.ok(maxAbsDiff(logits, c.outputs.logits.data) < 1e-4, `case ${i}`);
    });
  });

  test("logits equal PyTorch's for every reference case, served fp32 (1e-4)", async () => {
    const model = await loadFixture("tiny-bert-swag", "native", false);
    for (const c of readReference("tiny-bert-swag")) {
      const out = (await multipleChoice.run(model, { prompt: c.prompt!, choices: c.choices! }, {})) as ChoiceScore[];
      const logits = [...out].sort((a, b) => a.index - b.index).map((o) => o.logit);
      assert.ok(maxAbsDiff(logits, c.outputs.logits.data) < 1e-4, `${c.prompt}: ${logits} vs ${c.outputs.logits.data}`);
      const expected = softmax(c.outputs.logits.data);
      for (const o of out) close(o.score, expected[o.index], 1e-4);
    }
  });

  test("the wasm backend agrees with the reference too", async () => {
    const model = await loadFixture("tiny-bert-swag", "wasm", false);
    const [c] = readReference("tiny-bert-swag");
    const out = (await multipleChoice.run(model, { prompt: c.prompt!, choices: c.choices! }, {})) as ChoiceScore[];
    const logits = [...out].sort((a, b) => a.index - b.index).map((o) => o.logit);
    assert.ok(maxAbsDiff(logits, c.outputs.logits.data) < 1e-4);
  });

  test("over-long pairs are truncated to the model's length", async () => {
    const model = await loadFixture("tiny-bert-swag");
    const long = Array.from({ length: 600 }, () => "word").join(" "); // the prompt alone is too long: longest_first
    const out = (await multipleChoice.run(model, { prompt: long, choices: [long, "short"] }, {})) as ChoiceScore[];
    checkRanking(out, [long, "short"]);
  });
});
