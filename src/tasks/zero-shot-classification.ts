import { z } from "@hono/zod-openapi";
import type { LoadedModel } from "../engine/model.ts";
import { invalidInput, tooLarge } from "../errors.ts";
import { softmax } from "./math.ts";
import { asBatch, MAX_BATCH_INPUTS, runRows, type Task } from "./task.ts";

/*
 * zero-shot-classification, after transformers' ZeroShotClassificationPipeline (NLI models):
 * - each (sequence, candidate label) becomes the NLI pair (premise = sequence, hypothesis =
 *   hypothesis_template with the label in place of `{}`), truncated only_first so that the
 *   hypothesis stays whole (longest_first when the hypothesis alone is too long);
 * - the entailment class is the first config label whose name starts with "entail" (any case),
 *   the contradiction class is index 0, or the last index when entailment is 0;
 * - multi_label (or a single candidate label): each label's score is the softmax of its
 *   [contradiction, entailment] logits, read at entailment; otherwise the scores are the softmax of
 *   the entailment logits over the candidate labels;
 * - the answer is `{sequence, labels, scores}` with the labels best first (ties: later label first, as
 *   the pipeline's reversed argsort), one object per input, a list of them for a list of inputs.
 */

const text = z.string().min(1);

const inputs = z.union([text, z.array(text).min(1)]).openapi("ZeroShotClassificationInputs", {
  description: "A text to classify, or a list of texts.",
  example: "I have a problem with my iphone that needs to be resolved asap!!",
});

const parameters = z
  .object({
    candidate_labels: z.union([z.string(), z.array(z.string()).min(1)]),
    hypothesis_template: z.string().optional(),
    multi_label: z.boolean().optional(),
    /** Deprecated name of multi_label, still accepted by the pipeline. */
    multi_class: z.boolean().optional(),
  })
  .openapi("ZeroShotClassificationParameters", {
    description:
      'candidate_labels (required): a list, or one comma-separated string. hypothesis_template (default "This ' +
      'example is {}."): the hypothesis each label is put in. multi_label (default false): score labels ' +
      "independently instead of normalising over them.",
    example: { candidate_labels: ["urgent", "not urgent", "phone"], multi_label: false },
  });

type Parameters = z.infer<typeof parameters>;

export const DEFAULT_HYPOTHESIS_TEMPLATE = "This example is {}.";
/** Most (sequence, label) pairs one request may score. */
export const MAX_PAIRS = MAX_BATCH_INPUTS * 16;

export interface ZeroShotResult {
  sequence: string;
  labels: string[];
  scores: number[];
}

/** candidate_labels as the pipeline reads them: a string is split on commas, trimmed, empties dropped. */
export function parseLabels(labels: string | string[]): string[] {
  return typeof labels === "string" ? labels.split(",").map((l) => l.trim()).filter((l) => l.length > 0) : labels;
}

/** The template's `{}` (or `{0}`) replaced by the label, `{{`/`}}` read as braces, as Python's str.format. */
export function formatHypothesis(template: string, label: string): string {
  return template.replace(/\{\{|\}\}|\{0?\}/g, (m) => (m === "{{" ? "{" : m === "}}" ? "}" : label));
}

/** Index of the entailment class: the first label starting with "entail"; -1 when there is none. */
export function entailmentId(model: Pick<LoadedModel, "config" | "labels">): number {
  const label2id = model.config.label2id;
  const entries: [string, number][] =
    label2id && typeof label2id === "object"
      ? Object.entries(label2id as Record<string, number>).map(([l, i]) => [l, Number(i)])
      : model.labels.map((l, i) => [l, i]);
  return entries.find(([label]) => label.toLowerCase().startsWith("entail"))?.[1] ?? -1;
}

/**
 * Scores of `labels` from their NLI logits (`rows[j]` is the logit row of label j), in the pipeline's
 * order and shape. `entailment` is the entailment class; -1 reads the last class, as numpy would.
 */
export function zeroShotScores(
  sequence: string,
  labels: readonly string[],
  rows: readonly ArrayLike<number>[],
  entailment: number,
  multiLabel: boolean,
): ZeroShotResult {
  const at = (row: ArrayLike<number>, i: number) => row[i < 0 ? row.length + i : i];
  const contradiction = entailment === 0 ? -1 : 0;
  const scores =
    multiLabel || labels.length === 1
      ? rows.map((row) => softmax([at(row, contradiction), at(row, entailment)])[1])
      : softmax(rows.map((row) => at(row, entailment)));
  const order = labels.map((_, i) => i).sort((a, b) => scores[b] - scores[a] || b - a);
  return { sequence, labels: order.map((i) => labels[i]), scores: order.map((i) => scores[i]) };
}

export const zeroShotClassification: Task<z.infer<typeof inputs>, Parameters> = {
  name: "zero-shot-classification",
  inputs,
  parameters,
  async run(model, raw, params) {
    const { items, single } = asBatch(raw);
    const labels = parseLabels(params.candidate_labels);
    if (labels.length === 0) throw invalidInput("parameters.candidate_labels: give at least one label");
    const template = params.hypothesis_template ?? DEFAULT_HYPOTHESIS_TEMPLATE;
    if (formatHypothesis(template, labels[0]) === template) {
      throw invalidInput(
        `parameters.hypothesis_template: "${template}" has no {} for the label to go in (e.g. "This example is {}.")`,
      );
    }
    if (items.length * labels.length > MAX_PAIRS) {
      throw tooLarge(`${items.length} inputs × ${labels.length} labels = ${items.length * labels.length} pairs; at most ${MAX_PAIRS}`);
    }
    const multiLabel = params.multi_label ?? params.multi_class ?? false;
    const hypotheses = labels.map((l) => formatHypothesis(template, l));
    const { tokenizer, maxLength } = model;
    const encodings = items.flatMap((sequence) =>
      hypotheses.map((h) => {
        try {
          return tokenizer.encode(sequence, h, { maxLength, truncation: "only_first" })[0];
        } catch {
          return tokenizer.encode(sequence, h, { maxLength, truncation: "longest_first" })[0];
        }
      }),
    );

    // Row r is the pair (items[r / n], labels[r % n]).
    const rows = (await runRows(model, encodings, ["logits"])).map((r) => r.logits.data);
    const entailment = entailmentId(model);
    const results = items.map((sequence, i) =>
      zeroShotScores(sequence, labels, rows.slice(i * labels.length, (i + 1) * labels.length), entailment, multiLabel),
    );
    return single ? results[0] : results;
  },
};
