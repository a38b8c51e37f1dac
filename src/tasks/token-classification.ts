import { z } from "@hono/zod-openapi";
import type { Encoding } from "../engine/tokenizer.ts";
import { invalidInput, tooLarge } from "../errors.ts";
import { softmax } from "./math.ts";
import { asBatch, runRows, type Task } from "./task.ts";

/*
 * token-classification (NER), after transformers' TokenClassificationPipeline (fast tokenizer path):
 * - per-token softmax (max subtracted), special tokens skipped, argmax ties go to the lowest label id;
 * - a token is a subword when its WordPiece string ("##mp") and the text it covers ("mp") differ in
 *   length (the pipeline's rule for tokenizers with a continuing-subword prefix, which BERT's has);
 *   [UNK] is never a subword;
 * - first/average/max force one label per word, then B-/I- grouping as `group_entities`;
 * - `ignore_labels` is applied to each window's entities before windows are merged, as the pipeline does.
 * Differences, on purpose:
 * - `word` is the original text at [start, end), not the decoded tokens (so it keeps case and accents);
 * - a text longer than the model takes is never truncated: it is split into overlapping windows
 *   (`stride` tokens of overlap, default min(64, room / 4) where room = tokens per window less the
 *   special tokens) and merged like the pipeline's `stride` mode (`aggregate_overlapping_entities`),
 *   for every strategy, "none" included (the pipeline refuses stride with "none"). With "none", `index`
 *   counts tokens of the whole text as if it were encoded in one piece ([CLS] at 0).
 */

export const STRATEGIES = ["none", "simple", "first", "average", "max"] as const;
export type AggregationStrategy = (typeof STRATEGIES)[number];

/** Most windows one request may need; past it the caller gets 413. */
export const MAX_WINDOWS = 256;
/** Windows per model.run call, to bound the padded batch's memory. */

const text = z.string().min(1);

const inputs = z.union([text, z.array(text).min(1)]).openapi("TokenClassificationInputs", {
  description: "A text or a list of texts. Long texts are split into overlapping windows, never truncated.",
  example: "My name is Sarah and I live in London",
});

const parameters = z
  .object({
    aggregation_strategy: z.enum(STRATEGIES).optional(),
    ignore_labels: z.array(z.string()).optional(),
    stride: z.number().int().min(0).optional(),
  })
  .openapi("TokenClassificationParameters", {
    description:
      'aggregation_strategy (default "simple", as the Inference API): none | simple | first | average | max. ' +
      'ignore_labels (default ["O"]). stride: tokens of overlap between the windows of a long text ' +
      "(default min(64, a quarter of a window)).",
  });

type Parameters = z.infer<typeof parameters>;

/** One non-special token, ready for aggregation (the pipeline's "pre-entity"). */
export interface PreEntity {
  /** Probabilities over the labels. */
  scores: ArrayLike<number>;
  start: number;
  end: number;
  /** Position of the token in the (whole-text) encoding. */
  index: number;
  isSubword: boolean;
}

export interface TokenEntity {
  entity: string;
  score: number;
  index: number;
  word: string;
  start: number;
  end: number;
}

export interface EntityGroup {
  entity_group: string;
  score: number;
  word: string;
  start: number;
  end: number;
}

/** A word-level entity before B-/I- grouping (first/average/max). */
interface WordEntity {
  entity: string;
  score: number;
  start: number;
  end: number;
}

const codePoints = (s: string) => {
  let n = 0;
  for (const _ of s) n++;
  return n;
};

/** First index of the largest value (numpy argmax). */
export function argmax(values: ArrayLike<number>): number {
  let best = 0;
  for (let i = 1; i < values.length; i++) if (values[i] > values[best]) best = i;
  return best;
}

const labelOf = (labels: readonly string[], id: number) => labels[id] ?? `LABEL_${id}`;

/**
 * Pre-entities of one window. `scores[i]` are token i's label probabilities; `indexOffset` is added to
 * token positions so that windows after the first report positions in the whole text.
 */
export function gatherPreEntities(
  text: string,
  encoding: Pick<Encoding, "ids" | "tokens" | "offsets" | "specialTokensMask">,
  scores: readonly ArrayLike<number>[],
  unkTokenId: number,
  indexOffset = 0,
): PreEntity[] {
  const out: PreEntity[] = [];
  for (let idx = 0; idx < encoding.ids.length; idx++) {
    if (encoding.specialTokensMask[idx]) continue;
    const [start, end] = encoding.offsets[idx];
    // The pipeline compares lengths in code points (Python len), not UTF-16 units.
    const isSubword =
      encoding.ids[idx] !== unkTokenId && codePoints(encoding.tokens[idx]) !== codePoints(text.slice(start, end));
    out.push({ scores: scores[idx], start, end, index: idx + indexOffset, isSubword });
  }
  return out;
}

/**
 * The pipeline's fallback for tokenizers without a continuing-subword prefix (not used for BERT):
 * a token is a subword when neither it nor the character before it starts with a space.
 */
export function isSubwordHeuristic(text: string, start: number): boolean {
  return start > 0 && !text.slice(start - 1, start + 1).includes(" ");
}

/** One label per word (the pipeline's `aggregate_word`). */
function aggregateWord(tokens: PreEntity[], strategy: "first" | "average" | "max", labels: readonly string[]): WordEntity {
  let scores: ArrayLike<number>;
  if (strategy === "first") {
    scores = tokens[0].scores;
  } else if (strategy === "max") {
    // The token whose best label score is highest; the first one on ties.
    let best = tokens[0];
    let bestMax = best.scores[argmax(best.scores)];
    for (const t of tokens.slice(1)) {
      const m = t.scores[argmax(t.scores)];
      if (m > bestMax) [best, bestMax] = [t, m];
    }
    scores = best.scores;
  } else {
    scores = nanMeanColumns(tokens.map((t) => t.scores));
  }
  const id = argmax(scores);
  return { entity: labelOf(labels, id), score: scores[id], start: tokens[0].start, end: tokens[tokens.length - 1].end };
}

/** np.nanmean(rows, axis=0). */
function nanMeanColumns(rows: ArrayLike<number>[]): number[] {
  return Array.from({ length: rows[0].length }, (_, j) => nanMean(rows.map((r) => r[j])));
}

function nanMean(values: number[]): number {
  const kept = values.filter((v) => !Number.isNaN(v));
  return kept.length ? kept.reduce((a, b) => a + b, 0) / kept.length : NaN;
}

/** Words from pre-entities: a word is a non-subword token and the subwords after it. */
export function aggregateWords(
  preEntities: PreEntity[],
  strategy: "first" | "average" | "max",
  labels: readonly string[],
): WordEntity[] {
  const words: WordEntity[] = [];
  let group: PreEntity[] = [];
  for (const p of preEntities) {
    if (group.length > 0 && !p.isSubword) {
      words.push(aggregateWord(group, strategy, labels));
      group = [];
    }
    group.push(p);
  }
  if (group.length > 0) words.push(aggregateWord(group, strategy, labels));
  return words;
}

/** "B-PER" → ["B", "PER"], "I-PER" → ["I", "PER"], anything else continues: "PER" → ["I", "PER"]. */
export function getTag(entity: string): ["B" | "I", string] {
  if (entity.startsWith("B-")) return ["B", entity.slice(2)];
  if (entity.startsWith("I-")) return ["I", entity.slice(2)];
  return ["I", entity];
}

/** The pipeline's `group_sub_entities`: label after the first "-", mean score, span first..last. */
function groupSubEntities(entities: WordEntity[], text: string): EntityGroup {
  const first = entities[0].entity;
  const dash = first.indexOf("-");
  const start = entities[0].start;
  const end = entities[entities.length - 1].end;
  return {
    entity_group: dash >= 0 ? first.slice(dash + 1) : first,
    score: nanMean(entities.map((e) => e.score)),
    word: text.slice(start, end),
    start,
    end,
  };
}

/** Adjacent entities with the same tag merge unless the later one is a B-. */
export function groupEntities(entities: WordEntity[], text: string): EntityGroup[] {
  const groups: EntityGroup[] = [];
  let current: WordEntity[] = [];
  for (const entity of entities) {
    if (current.length > 0) {
      const [bi, tag] = getTag(entity.entity);
      const [, lastTag] = getTag(current[current.length - 1].entity);
      if (tag !== lastTag || bi === "B") {
        groups.push(groupSubEntities(current, text));
        current = [];
      }
    }
    current.push(entity);
  }
  if (current.length > 0) groups.push(groupSubEntities(current, text));
  return groups;
}

/** The pipeline's `aggregate`: token entities for "none", entity groups otherwise. */
export function aggregate(preEntities: PreEntity[], strategy: "none", labels: readonly string[], text: string): TokenEntity[];
export function aggregate(
  preEntities: PreEntity[],
  strategy: Exclude<AggregationStrategy, "none">,
  labels: readonly string[],
  text: string,
): EntityGroup[];
export function aggregate(
  preEntities: PreEntity[],
  strategy: AggregationStrategy,
  labels: readonly string[],
  text: string,
): TokenEntity[] | EntityGroup[];
export function aggregate(
  preEntities: PreEntity[],
  strategy: AggregationStrategy,
  labels: readonly string[],
  text: string,
): TokenEntity[] | EntityGroup[] {
  if (strategy === "none" || strategy === "simple") {
    const entities = preEntities.map((p): TokenEntity => {
      const id = argmax(p.scores);
      return {
        entity: labelOf(labels, id),
        score: p.scores[id],
        index: p.index,
        word: text.slice(p.start, p.end),
        start: p.start,
        end: p.end,
      };
    });
    return strategy === "none" ? entities : groupEntities(entities, text);
  }
  return groupEntities(aggregateWords(preEntities, strategy, labels), text);
}

/** Drops entities whose label (or group label) is ignored. */
export function filterIgnored<T extends TokenEntity | EntityGroup>(entities: T[], ignoreLabels: readonly string[]): T[] {
  return entities.filter((e) => !ignoreLabels.includes("entity" in e ? e.entity : e.entity_group));
}

/**
 * The pipeline's `aggregate_overlapping_entities`, for entities from overlapping windows: sorted by
 * start (stably), an entity starting inside the previous kept one replaces it when it is longer, or as
 * long and strictly more confident; otherwise it is dropped.
 */
export function aggregateOverlappingEntities<T extends { start: number; end: number; score: number }>(entities: T[]): T[] {
  if (entities.length === 0) return entities;
  const sorted = [...entities].sort((a, b) => a.start - b.start);
  const kept: T[] = [];
  let previous = sorted[0];
  for (const entity of sorted) {
    if (previous.start <= entity.start && entity.start < previous.end) {
      const length = entity.end - entity.start;
      const previousLength = previous.end - previous.start;
      if (length > previousLength || (length === previousLength && entity.score > previous.score)) previous = entity;
    } else {
      kept.push(previous);
      previous = entity;
    }
  }
  kept.push(previous);
  return kept;
}

/** Default overlap between windows: 64 tokens, or a quarter of the window for short models. */
export function defaultStride(room: number): number {
  return Math.max(0, Math.min(64, Math.floor(room / 4)));
}

export const tokenClassification: Task<z.infer<typeof inputs>, Parameters> = {
  name: "token-classification",
  inputs,
  parameters,
  async run(model, raw, params) {
    const { items, single } = asBatch(raw);
    const strategy = params.aggregation_strategy ?? "simple";
    const ignoreLabels = params.ignore_labels ?? ["O"];
    const { tokenizer, maxLength } = model;
    // Tokens a window holds besides its special tokens.
    const room = maxLength - tokenizer.encode("")[0].ids.length;
    const stride = params.stride ?? defaultStride(room);
    if (stride >= room) {
      throw invalidInput(`parameters.stride (${stride}) must be smaller than the ${room} text tokens a window holds`);
    }

    const windows = items.map((item) =>
      tokenizer.encode(item, undefined, { maxLength, truncation: "longest_first", stride, returnOverflowing: true }),
    );
    const total = windows.reduce((n, w) => n + w.length, 0);
    if (total > MAX_WINDOWS) {
      throw tooLarge(`the texts need ${total} windows of ${maxLength} tokens; at most ${MAX_WINDOWS} are accepted`);
    }
    const rows = await runRows(model, windows.flat(), ["logits"]);

    let w = 0;
    const results = items.map((item, i) => {
      const entities: (TokenEntity | EntityGroup)[] = [];
      windows[i].forEach((enc, k) => {
        const { data, dims } = rows[w++].logits;
        const width = dims[1];
        const scores = enc.ids.map((_, t) => softmax(data.subarray(t * width, (t + 1) * width)));
        // Window k starts k·(room − stride) text tokens into the whole text.
        const pre = gatherPreEntities(item, enc, scores, tokenizer.unkTokenId, k * (room - stride));
        entities.push(...filterIgnored<TokenEntity | EntityGroup>(aggregate(pre, strategy, model.labels, item), ignoreLabels));
      });
      return windows[i].length > 1 ? aggregateOverlappingEntities(entities) : entities;
    });
    return single ? results[0] : results;
  },
};
