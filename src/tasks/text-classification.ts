import { z } from "@hono/zod-openapi";
import { padBatch, rowOf } from "../engine/batch.ts";
import type { LoadedModel } from "../engine/model.ts";
import { sigmoid, softmax } from "./math.ts";
import { asBatch, type Task } from "./task.ts";

const text = z.string().min(1);
const pair = z.object({ text, text_pair: text.optional() }).strict();
const item = z.union([text, pair]);

const inputs = z.union([item, z.array(item).min(1)]).openapi("TextClassificationInputs", {
  description: 'A text, a pair `{"text", "text_pair"}` (e.g. MRPC paraphrase), or a list of either.',
  example: { text: "The company posted a profit.", text_pair: "The firm was profitable." },
});

const parameters = z
  .object({
    function_to_apply: z.enum(["sigmoid", "softmax", "none"]).optional(),
    top_k: z.number().int().min(1).nullable().optional(),
  })
  .openapi("TextClassificationParameters", {
    description:
      "function_to_apply defaults as in the transformers pipeline: none for regression, sigmoid for one label or " +
      "multi-label models, softmax otherwise. top_k defaults to every label (the Inference API's answer).",
  });

type Parameters = z.infer<typeof parameters>;
type FunctionToApply = NonNullable<Parameters["function_to_apply"]>;

/** The transformers pipeline's default scoring function for a model's config. */
export function defaultFunction(model: Pick<LoadedModel, "config" | "labels">): FunctionToApply {
  const { problem_type } = model.config;
  if (problem_type === "regression") return "none";
  if (problem_type === "multi_label_classification" || model.labels.length === 1) return "sigmoid";
  return "softmax";
}

/** Scores of one row of logits, sorted best first and cut to top_k, as `[{label, score}]`. */
export function scoreLabels(logits: ArrayLike<number>, labels: string[], fn: FunctionToApply, topK?: number | null) {
  const scores = fn === "softmax" ? softmax(logits) : Array.from(logits, fn === "sigmoid" ? sigmoid : (x) => x);
  const ranked = scores.map((score, i) => ({ label: labels[i] ?? `LABEL_${i}`, score }));
  ranked.sort((a, b) => b.score - a.score);
  return topK ? ranked.slice(0, topK) : ranked;
}

export const textClassification: Task<z.infer<typeof inputs>, Parameters> = {
  name: "text-classification",
  inputs,
  parameters,
  async run(model, raw, params) {
    const { items } = asBatch(raw);
    const encodings = items.map((item) => {
      const [first, second] = typeof item === "string" ? [item] : [item.text, item.text_pair];
      return model.tokenizer.encode(first, second, { maxLength: model.maxLength, truncation: "longest_first" })[0];
    });
    const { logits } = await model.run(padBatch(encodings, model.tokenizer.padTokenId));
    const fn = params.function_to_apply ?? defaultFunction(model);
    // The Inference API answers one list per input, even for a single input.
    return items.map((_, row) => scoreLabels(rowOf(logits.data, logits.dims, row), model.labels, fn, params.top_k));
  },
};
