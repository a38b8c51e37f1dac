import { z } from "@hono/zod-openapi";
import { padBatch } from "../engine/batch.ts";
import type { LoadedModel } from "../engine/model.ts";
import type { Encoding } from "../engine/tokenizer.ts";
import { invalidInput } from "../errors.ts";
import { softmax } from "./math.ts";
import { asBatch, type Task } from "./task.ts";

/**
 * multiple-choice: picks the likeliest continuation of a prompt (SWAG, HellaSwag, ARC, ...) with a
 * `*ForMultipleChoice` model. transformers has no pipeline for this head; bert-edge defines the API:
 *
 * Request:
 * ```json
 * {"inputs": {"prompt": "She opened the fridge and took out the milk.",
 *             "choices": ["She poured it into a glass.", "She drove the fridge to work."]}}
 * ```
 * `inputs` may also be a list of such objects. Each input has 2 to 16 choices; there are no parameters.
 *
 * Answer, per input, every choice best first (a list of such lists for a list of inputs):
 * ```json
 * [{"index": 0, "choice": "She poured it into a glass.", "score": 0.93, "logit": 2.1},
 *  {"index": 1, "choice": "She drove the fridge to work.", "score": 0.07, "logit": -0.5}]
 * ```
 * `index` is the choice's position in the request, `logit` the model's raw output and `score` the
 * softmax of the logits over the input's choices (the scores of one input sum to 1).
 *
 * As in SWAG fine-tuning, each choice is encoded as the pair (prompt, choice), `[CLS] prompt [SEP]
 * choice [SEP]`, and the pairs of one input form one row of a [batch, choices, seq] batch. Pairs
 * longer than the model takes lose tokens from the choice (only_second), or from both texts
 * (longest_first) when the prompt alone is too long for that. Inputs with the same number of choices
 * share one run; each other count gets a run of its own.
 */
const text = z.string().min(1);

export const MIN_CHOICES = 2;
export const MAX_CHOICES = 16;

const item = z
  .object({ prompt: text, choices: z.array(text).min(MIN_CHOICES).max(MAX_CHOICES) })
  .strict()
  .openapi("MultipleChoiceInput", {
    example: {
      prompt: "She opened the fridge and took out the milk.",
      choices: ["She poured it into a glass.", "She drove the fridge to work."],
    },
  });

const inputs = z.union([item, z.array(item).min(1)]).openapi("MultipleChoiceInputs", {
  description: `A prompt and its ${MIN_CHOICES} to ${MAX_CHOICES} candidate continuations, or a list of them.`,
});

const parameters = z.object({}).openapi("MultipleChoiceParameters", { description: "No parameters." });

type Item = z.infer<typeof item>;

export interface ChoiceScore {
  index: number;
  choice: string;
  score: number;
  logit: number;
}

/** Every choice with its softmax score and raw logit, best first (ties keep request order). */
export function rankChoices(logits: ArrayLike<number>, choices: readonly string[]): ChoiceScore[] {
  const scores = softmax(logits);
  const ranked = choices.map((choice, index) => ({ index, choice, score: scores[index], logit: logits[index] }));
  return ranked.sort((a, b) => b.score - a.score || a.index - b.index);
}

/** (prompt, choice) as one sequence: cut the choice first, both texts when the prompt alone is too long. */
export function encodeChoice(model: Pick<LoadedModel, "tokenizer" | "maxLength">, prompt: string, choice: string): Encoding {
  const { tokenizer, maxLength } = model;
  try {
    return tokenizer.encode(prompt, choice, { maxLength, truncation: "only_second" })[0];
  } catch {
    return tokenizer.encode(prompt, choice, { maxLength, truncation: "longest_first" })[0];
  }
}

export const multipleChoice: Task<z.infer<typeof inputs>, z.infer<typeof parameters>> = {
  name: "multiple-choice",
  inputs,
  parameters,
  async run(model, raw) {
    const { items, single } = asBatch<Item>(raw);
    // One run per choice count: a [group, choices, seq] batch needs the same count in every row.
    const groups = new Map<number, number[]>();
    items.forEach((it, i) => {
      if (it.choices.length < MIN_CHOICES || it.choices.length > MAX_CHOICES) {
        throw invalidInput(`inputs: ${it.choices.length} choices; ${MIN_CHOICES} to ${MAX_CHOICES} are accepted`);
      }
      const group = groups.get(it.choices.length) ?? [];
      group.push(i);
      groups.set(it.choices.length, group);
    });

    const answers: ChoiceScore[][] = new Array(items.length);
    for (const [count, members] of groups) {
      const encodings = members.flatMap((i) => items[i].choices.map((c) => encodeChoice(model, items[i].prompt, c)));
      const outputs = await model.run(padBatch(encodings, model.tokenizer.padTokenId, count));
      const logits = outputs.logits ?? Object.values(outputs)[0];
      members.forEach((i, row) => {
        answers[i] = rankChoices(logits.data.subarray(row * count, (row + 1) * count), items[i].choices);
      });
    }
    return single ? answers[0] : answers;
  },
};
