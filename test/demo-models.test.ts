/**
 * The trained demo models in models/demo (tools/train): each loads and answers through the HTTP app
 * with the right shapes, and gets a few obvious examples right. Accuracy on the held-out sets is
 * measured by eval/evaluate.ts, not here.
 */
import assert from "node:assert/strict";
import { existsSync } from "node:fs";
import { after, before, describe, test } from "node:test";
import { fileURLToPath } from "node:url";
import { startServer } from "../src/runtimes/node.ts";

const DEMO = fileURLToPath(new URL("../models/demo", import.meta.url));

describe("demo models over HTTP (native backend)", () => {
  let server: Awaited<ReturnType<typeof startServer>>;
  let base: string;
  const post = async (model: string, body: unknown) => {
    const res = await fetch(`${base}/models/${model}`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify(body),
    });
    assert.equal(res.status, 200, `${model}: HTTP ${res.status} ${await res.clone().text()}`);
    return (await res.json()) as any;
  };
  const near1 = (xs: number[]) => assert.ok(Math.abs(xs.reduce((a, b) => a + b, 0) - 1) < 1e-4, `${xs} sum to 1`);

  before(async () => {
    assert.ok(existsSync(DEMO), "models/demo exists");
    server = await startServer({ models: DEMO, port: 0, backend: "native" });
    base = `http://127.0.0.1:${server.port}`;
  });
  after(() => server?.close());

  test("GET /models lists the six demo models, int8 files served", async () => {
    const models = (await (await fetch(`${base}/models`)).json()) as { id: string; task: string; file: string }[];
    const tasks = Object.fromEntries(models.map((m) => [m.id, m.task]));
    assert.deepEqual(tasks, {
      "bert-edge-codah": "multiple-choice",
      "bert-edge-conll03": "token-classification",
      "bert-edge-mlm": "fill-mask",
      "bert-edge-mrpc": "text-classification",
      "bert-edge-squad": "question-answering",
      "bert-edge-sst2": "text-classification",
    });
    for (const m of models) assert.equal(m.file, "onnx/model_quantized.onnx");
  });

  test("SST-2: obvious sentiment, one ranked list per input", async () => {
    const out = await post("bert-edge-sst2", { inputs: ["a wonderful , moving film", "a dull , tedious mess", "it is a masterpiece"] });
    assert.equal(out.length, 3);
    for (const scores of out) {
      assert.deepEqual(scores.map((s: any) => s.label).sort(), ["NEGATIVE", "POSITIVE"]);
      assert.ok(scores[0].score >= scores[1].score);
      near1(scores.map((s: any) => s.score));
    }
    assert.deepEqual(out.map((s: any) => s[0].label), ["POSITIVE", "NEGATIVE", "POSITIVE"]);
  });

  test("MRPC: a sentence pair gets both labels", async () => {
    const [scores] = await post("bert-edge-mrpc", {
      inputs: [{ text: "The company said profits rose 10 percent.", text_pair: "Profits rose 10 percent, the company said." }],
    });
    assert.deepEqual(scores.map((s: any) => s.label).sort(), ["equivalent", "not_equivalent"]);
    near1(scores.map((s: any) => s.score));
  });

  test("CoNLL-2003 NER: entity groups with offsets into the text", async () => {
    const text = "Germany beat France 2-1 in Berlin on Sunday .";
    const ents = await post("bert-edge-conll03", { inputs: text, parameters: { aggregation_strategy: "first" } });
    assert.ok(Array.isArray(ents) && ents.length > 0);
    for (const e of ents) {
      assert.ok(["PER", "ORG", "LOC", "MISC"].includes(e.entity_group), e.entity_group);
      assert.equal(e.word, text.slice(e.start, e.end));
    }
    const berlin = ents.find((e: any) => e.word === "Berlin");
    assert.equal(berlin?.entity_group, "LOC");
  });

  test("SQuAD: the answer is a slice of the context", async () => {
    const context = "The Eiffel Tower was completed in 1889 in Paris. It was designed by the engineer Gustave Eiffel.";
    const a = await post("bert-edge-squad", { inputs: { question: "When was the Eiffel Tower completed?", context } });
    assert.equal(typeof a.score, "number");
    assert.equal(a.answer, context.slice(a.start, a.end));
    assert.ok(a.answer.length > 0);
  });

  test("CODAH: four choices ranked, softmax scores", async () => {
    const choices = ["ate a sandwich.", "flew to the moon on a spoon.", "turned into a cloud.", "sang to the toaster."];
    const ranked = await post("bert-edge-codah", { inputs: { prompt: "The man was hungry, so he", choices } });
    assert.equal(ranked.length, 4);
    assert.deepEqual(ranked.map((r: any) => r.index).sort(), [0, 1, 2, 3]);
    for (const r of ranked) assert.equal(r.choice, choices[r.index]);
    near1(ranked.map((r: any) => r.score));
  });

  test("fill-mask: five ranked tokens, each a filled-in sequence", async () => {
    const text = "the film is one of the best [MASK] of the year .";
    const out = await post("bert-edge-mlm", { inputs: text });
    assert.equal(out.length, 5);
    for (let i = 0; i < out.length; i++) {
      const p = out[i];
      assert.equal(typeof p.token, "number");
      assert.equal(typeof p.token_str, "string");
      assert.ok(p.sequence.includes(p.token_str), `${p.sequence} / ${p.token_str}`);
      if (i) assert.ok(out[i - 1].score >= p.score);
    }
  });
});
