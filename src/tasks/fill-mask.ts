import { z } from "@hono/zod-openapi";
import { padBatch } from "../engine/batch.ts";
import type { OutputTensor } from "../engine/backend.ts";
import type { LoadedModel } from "../engine/model.ts";
import type { BertTokenizer, Encoding } from "../engine/tokenizer.ts";
import { invalidInput, ServiceError } from "../errors.ts";
import { asBatch, type Task } from "./task.ts";

/*
 * fill-mask, after transformers' FillMaskPipeline:
 * - the scores are a softmax over the whole vocabulary at each mask position (one row of the
 *   [batch, seq, vocab] logits); with `targets` the scores are those probabilities read at the
 *   target ids (not renormalised) and top_k is capped at the number of targets;
 * - a target that is not a vocabulary entry is tokenized (no special tokens) and its first id is
 *   used; one that tokenizes to nothing is ignored; no usable target at all is an error;
 * - `sequence` is the input's ids with the mask replaced and padding removed, decoded skipping
 *   special tokens when the input has one mask. With several masks the pipeline keeps special
 *   tokens (so that the other masks stay visible), "[CLS]" and "[SEP]" included, and so do we;
 * - one mask → `[{score, token, token_str, sequence}]` (best first); several masks → one such list
 *   per mask, in text order. A list of inputs → one answer per input, even for a list of one (the
 *   pipeline unwraps a list of one; we keep the shape predictable).
 * Inputs longer than the model takes are truncated; a mask cut off that way counts as missing.
 */

const text = z.string().min(1);

const inputs = z.union([text, z.array(text).min(1)]).openapi("FillMaskInputs", {
  description: "A text with one or more mask tokens (`[MASK]` for BERT), or a list of them.",
  example: "The capital of France is [MASK].",
});

const target = z.string().min(1);

const parameters = z
  .object({
    top_k: z.number().int().min(1).optional(),
    targets: z.union([target, z.array(target).min(1)]).optional(),
  })
  .openapi("FillMaskParameters", {
    description:
      "top_k (default 5): predictions per mask. targets: restrict the predictions to these words; a word that is " +
      "not in the vocabulary is tokenized and its first token used.",
  });

type Parameters = z.infer<typeof parameters>;

export const DEFAULT_TOP_K = 5;

export interface FillMaskPrediction {
  score: number;
  token: number;
  token_str: string;
  sequence: string;
}

/** A candidate token and its probability. */
export interface TokenScore {
  id: number;
  score: number;
}

/**
 * The `k` most probable tokens of one row of logits (softmax over the whole row), best first; with
 * `candidates`, only those ids compete (their probabilities still come from the full softmax).
 * Ties go to the lower id. Reads the row once for the softmax normaliser and once for the ranking.
 */
export function topTokens(row: ArrayLike<number>, k: number, candidates?: readonly number[]): TokenScore[] {
  let max = -Infinity;
  for (let i = 0; i < row.length; i++) if (row[i] > max) max = row[i];
  let sum = 0;
  for (let i = 0; i < row.length; i++) sum += Math.exp(row[i] - max);

  const n = candidates ? candidates.length : row.length;
  const idAt = candidates ? (j: number) => candidates[j] : (j: number) => j;
  k = Math.min(k, n);
  const better = (a: number, b: number) => row[a] > row[b] || (row[a] === row[b] && a < b);

  let best: number[];
  if (k > 256) {
    best = Array.from({ length: n }, (_, j) => idAt(j));
    best.sort((a, b) => (better(a, b) ? -1 : better(b, a) ? 1 : 0));
    best.length = k;
  } else {
    // Insertion into a sorted list of k: one comparison per token once the list is full.
    best = [];
    for (let j = 0; j < n; j++) {
      const id = idAt(j);
      if (best.length === k && !better(id, best[k - 1])) continue;
      let at = best.length === k ? k - 1 : best.length;
      while (at > 0 && better(id, best[at - 1])) {
        best[at] = best[at - 1];
        at--;
      }
      best[at] = id;
    }
  }
  return best.map((id) => ({ id, score: Math.exp(row[id] - max) / sum }));
}

/** The ids `targets` stand for, as the pipeline resolves them (unique; order does not matter). */
export function targetIds(tokenizer: BertTokenizer, targets: string | string[]): number[] {
  const ids = new Set<number>();
  for (const t of typeof targets === "string" ? [targets] : targets) {
    const id = tokenizer.tokenToId(t) ?? tokenizer.encode(t, undefined, { addSpecialTokens: false })[0].ids[0];
    if (id !== undefined) ids.add(id);
  }
  if (ids.size === 0) throw invalidInput("parameters.targets: none of the targets maps to a token of the vocabulary");
  return [...ids];
}

/** Positions of the mask token in an encoding. */
function maskPositions(encoding: Encoding, maskId: number): number[] {
  const positions: number[] = [];
  encoding.ids.forEach((id, i) => id === maskId && positions.push(i));
  return positions;
}

function logitsOf(outputs: Record<string, OutputTensor>): OutputTensor {
  const tensor = outputs.logits ?? Object.values(outputs)[0];
  if (!tensor || tensor.dims.length !== 3) throw new ServiceError(500, "bad_model_output", "expected logits [batch, seq, vocab]");
  return tensor;
}

export const fillMask: Task<z.infer<typeof inputs>, Parameters> = {
  name: "fill-mask",
  inputs,
  parameters,
  async run(model: LoadedModel, raw, params) {
    const { tokenizer } = model;
    const maskId = tokenizer.maskTokenId;
    if (maskId === undefined) {
      throw new ServiceError(500, "model_unsupported", `model "${model.id}": the tokenizer defines no mask token`);
    }
    const mask = tokenizer.maskToken ?? tokenizer.idToToken(maskId);
    const { items, single } = asBatch(raw);
    const encodings = items.map((t) => tokenizer.encode(t, undefined, { maxLength: model.maxLength, truncation: "longest_first" })[0]);
    const positions = encodings.map((e, i) => {
      const found = maskPositions(e, maskId);
      if (found.length === 0) {
        const where = single ? "inputs" : `inputs.${i}`;
        const cut = e.ids.length >= model.maxLength ? ` within the first ${model.maxLength} tokens` : "";
        throw invalidInput(`${where}: no mask token ${mask}${cut}; put ${mask} where the word to predict goes`);
      }
      return found;
    });
    const candidates = params.targets === undefined ? undefined : targetIds(tokenizer, params.targets);
    const topK = params.top_k ?? DEFAULT_TOP_K;

    const logits = logitsOf(await model.run(padBatch(encodings, tokenizer.padTokenId)));
    const [, seq, vocab] = logits.dims;

    const answers = encodings.map((encoding, row) => {
      const masks = positions[row];
      const singleMask = masks.length === 1;
      const perMask = masks.map((position) => {
        // Only the mask's row of the [batch, seq, vocab] tensor is read, as a view.
        const start = (row * seq + position) * vocab;
        const scores = topTokens(logits.data.subarray(start, start + vocab), topK, candidates);
        return scores.map(({ id, score }): FillMaskPrediction => {
          const ids = encoding.ids.slice();
          ids[position] = id;
          return {
            score,
            token: id,
            token_str: tokenizer.decode([id]),
            sequence: tokenizer.decode(
              ids.filter((t) => t !== tokenizer.padTokenId),
              { skipSpecialTokens: singleMask },
            ),
          };
        });
      });
      return singleMask ? perMask[0] : perMask;
    });
    return single ? answers[0] : answers;
  },
};
