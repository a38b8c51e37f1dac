import { z } from "@hono/zod-openapi";
import type { OutputTensor } from "../engine/backend.ts";
import { padBatch, rowOf } from "../engine/batch.ts";
import type { LoadedModel, ModelConfig } from "../engine/model.ts";
import type { Encoding } from "../engine/tokenizer.ts";
import { ServiceError, tooLarge } from "../errors.ts";
import { asBatch, type Task } from "./task.ts";

/*
 * feature-extraction: the model's last hidden state, raw or pooled into one vector per text.
 *
 * - pooling "none" is what transformers' FeatureExtractionPipeline returns and what the Inference
 *   API gives for a plain BertModel: per input a [1][seq][hidden] list of token vectors, [CLS] and
 *   [SEP] included (for a list of inputs, a list of those: [n][1][seq][hidden]).
 * - "mean" (the average of the token vectors, weighted by the attention mask, as sentence-transformers'
 *   Pooling) and "cls" (the [CLS] vector) give what the Inference API returns for sentence-transformers
 *   models: a number[] for one text, a number[][] for a list.
 * - The default is the model's own pooling when its config.json says (see `poolingOf`), else "none".
 * - normalize: L2-normalise each vector (token vectors too with "none"), as sentence-transformers'
 *   Normalize (norm clamped to 1e-12). truncate (default true): cut texts to the model's maximum
 *   length; false makes an over-long text a 413 instead, as text-embeddings-inference does.
 */

export type Pooling = "mean" | "cls" | "none";

const text = z.string();

const inputs = z.union([text, z.array(text).min(1)]).openapi("FeatureExtractionInputs", {
  description: "A text or a list of texts.",
  example: "A man is playing a guitar.",
});

const parameters = z
  .object({
    pooling: z.enum(["mean", "cls", "none"]).optional(),
    normalize: z.boolean().optional(),
    truncate: z.boolean().optional(),
  })
  .openapi("FeatureExtractionParameters", {
    description:
      'pooling: "none" (token vectors, as the transformers pipeline), "mean" or "cls" (one vector per text); default ' +
      "the model's configured pooling, else none. normalize (default false): L2-normalise. truncate (default true).",
  });

type Parameters = z.infer<typeof parameters>;

/**
 * The pooling a model's config.json asks for, if it says: `"pooling": "mean" | "cls"` (or
 * `pooling_mode`), or a sentence-transformers `1_Pooling/config.json` object copied in as
 * `pooling_config` / `sentence_transformers.pooling` (`pooling_mode_cls_token`, `pooling_mode_mean_tokens`).
 */
export function poolingOf(config: ModelConfig): "mean" | "cls" | undefined {
  for (const key of ["pooling", "pooling_mode"]) {
    const value = config[key];
    if (value === "mean" || value === "cls") return value;
  }
  const st = config.sentence_transformers as Record<string, unknown> | undefined;
  for (const candidate of [config.pooling_config, st?.pooling, config.pooling]) {
    if (candidate && typeof candidate === "object") {
      const p = candidate as Record<string, unknown>;
      if (p.pooling_mode_cls_token === true) return "cls";
      if (p.pooling_mode_mean_tokens === true) return "mean";
    }
  }
  return undefined;
}

/** Mean of the `hidden`-wide vectors of `tokens` ([seq * hidden], row-major) where `mask` is 1. */
export function meanPool(tokens: ArrayLike<number>, mask: ArrayLike<number>, hidden: number): number[] {
  const out = new Array<number>(hidden).fill(0);
  let count = 0;
  for (let t = 0; t < mask.length; t++) {
    if (!mask[t]) continue;
    count++;
    const base = t * hidden;
    for (let d = 0; d < hidden; d++) out[d] += tokens[base + d];
  }
  const n = Math.max(count, 1e-9);
  return out.map((x) => x / n);
}

/** The first ([CLS]) vector. */
export function clsPool(tokens: ArrayLike<number>, hidden: number): number[] {
  return Array.from({ length: hidden }, (_, d) => tokens[d]);
}

/** `v / max(‖v‖₂, 1e-12)`. */
export function l2Normalize(v: readonly number[]): number[] {
  const norm = Math.max(Math.sqrt(v.reduce((s, x) => s + x * x, 0)), 1e-12);
  return v.map((x) => x / norm);
}

export interface HiddenStates {
  encodings: Encoding[];
  /** last_hidden_state, [batch, seq, hidden]. */
  hidden: OutputTensor;
}

/** Encodes `texts` (truncated, or 413 when one is too long and `truncate` is false) and runs them as one batch. */
export async function hiddenStates(model: LoadedModel, texts: readonly string[], truncate = true): Promise<HiddenStates> {
  const { tokenizer, maxLength } = model;
  const encodings = texts.map((t, i) => {
    const e = tokenizer.encode(t, undefined, truncate ? { maxLength, truncation: "longest_first" } : {})[0];
    if (e.ids.length > maxLength) {
      throw tooLarge(`input ${i} is ${e.ids.length} tokens; the model takes ${maxLength} (set truncate to cut it)`);
    }
    return e;
  });
  const outputs = await model.run(padBatch(encodings, tokenizer.padTokenId));
  const hidden = outputs.last_hidden_state ?? Object.values(outputs)[0];
  if (!hidden || hidden.dims.length !== 3) {
    throw new ServiceError(500, "bad_model_output", `model "${model.id}" gave no [batch, seq, hidden] output`);
  }
  return { encodings, hidden };
}

/** One vector per text from hidden states, pooled and optionally normalised. */
export function pooled({ encodings, hidden }: HiddenStates, pooling: "mean" | "cls", normalize: boolean): number[][] {
  const width = hidden.dims[2];
  return encodings.map((e, row) => {
    const tokens = rowOf(hidden.data, hidden.dims, row);
    const v = pooling === "cls" ? clsPool(tokens, width) : meanPool(tokens, e.attentionMask, width);
    return normalize ? l2Normalize(v) : v;
  });
}

/** Per text its unpadded token vectors, [seq][hidden]. */
export function tokenVectors({ encodings, hidden }: HiddenStates, normalize: boolean): number[][][] {
  const width = hidden.dims[2];
  return encodings.map((e, row) => {
    const tokens = rowOf(hidden.data, hidden.dims, row);
    return Array.from({ length: e.ids.length }, (_, t) => {
      const v = Array.from(tokens.subarray(t * width, (t + 1) * width));
      return normalize ? l2Normalize(v) : v;
    });
  });
}

export const featureExtraction: Task<z.infer<typeof inputs>, Parameters> = {
  name: "feature-extraction",
  inputs,
  parameters,
  async run(model, raw, params) {
    const { items, single } = asBatch(raw);
    const pooling: Pooling = params.pooling ?? poolingOf(model.config) ?? "none";
    const states = await hiddenStates(model, items, params.truncate ?? true);
    const normalize = params.normalize ?? false;
    if (pooling === "none") {
      const perText = tokenVectors(states, normalize).map((vectors) => [vectors]);
      return single ? perText[0] : perText;
    }
    const vectors = pooled(states, pooling, normalize);
    return single ? vectors[0] : vectors;
  },
};
