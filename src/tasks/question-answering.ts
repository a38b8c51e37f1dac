import { z } from "@hono/zod-openapi";
import type { LoadedModel } from "../engine/model.ts";
import type { Encoding } from "../engine/tokenizer.ts";
import { invalidInput, tooLarge } from "../errors.ts";
import { softmax } from "./math.ts";
import { asBatch, runRows, type Task } from "./task.ts";

/*
 * question-answering, after transformers' QuestionAnsweringPipeline (fast tokenizer path):
 * - [CLS] question [SEP] context [SEP] windows: truncation "only_second", max_seq_len tokens each,
 *   consecutive windows sharing doc_stride context tokens (the tokenizer's `stride`);
 * - only context tokens (and [CLS]) may be in an answer; the others get -10000 before a softmax over
 *   each window's start and end logits; the [CLS] probability product is the null score, then [CLS] is
 *   zeroed; spans are the outer product start·end with start ≤ end < start + max_answer_len;
 * - each window yields its top `top_k` spans (top_k·2 + 10 with align_to_words, since aligning can merge
 *   spans); a span whose text equals (case-insensitively) an answer found before adds its score to it;
 * - handle_impossible_answer adds {"", 0, 0} scored with the smallest null score over the windows;
 * - answers sorted by score (stable), cut to top_k; one answer → an object, else a list.
 * Differences, on purpose:
 * - max_seq_len is capped at the model's maximum length;
 * - the pipeline's fast path ignores max_question_len and fails when the question leaves no room for
 *   the context (or for doc_stride); we then cut the question to max_question_len tokens (as its slow
 *   path does) and answer 422 only if that is still not enough;
 * - a list of inputs always gets a list of results, a list of one included;
 * - ties between equal span scores go to the lower (start, end); numpy leaves that order unspecified;
 * - zero-probability spans are never answers (see decodeSpans), so an answer list may be shorter
 *   than top_k, or empty;
 * - offsets are UTF-16, so `answer === context.slice(start, end)` in JavaScript.
 */

/** Most windows one request may need; past it the caller gets 413. */
export const MAX_WINDOWS = 256;
/** Windows per model.run call, to bound the padded batch's memory. */
/** The logit given to tokens that cannot be part of an answer. */
const MASKED = -10000;

const text = z.string().min(1);
const item = z.object({ question: text, context: text }).strict();

const inputs = z.union([item, z.array(item).min(1)]).openapi("QuestionAnsweringInputs", {
  description: 'A `{"question", "context"}` pair or a list of them. Long contexts are split into overlapping windows.',
  example: { question: "Where do I live?", context: "My name is Wolfgang and I live in Berlin" },
});

const parameters = z
  .object({
    top_k: z.number().int().min(1).optional(),
    doc_stride: z.number().int().min(0).optional(),
    max_answer_len: z.number().int().min(1).optional(),
    max_seq_len: z.number().int().min(1).optional(),
    max_question_len: z.number().int().min(1).optional(),
    handle_impossible_answer: z.boolean().optional(),
    align_to_words: z.boolean().optional(),
  })
  .openapi("QuestionAnsweringParameters", {
    description:
      "As the transformers pipeline: top_k (1), doc_stride (min(128, max_seq_len / 2)), max_answer_len (15), " +
      "max_seq_len (384, capped by the model), max_question_len (64), handle_impossible_answer (false), " +
      "align_to_words (true).",
  });

type Parameters = z.infer<typeof parameters>;

export interface Answer {
  score: number;
  start: number;
  end: number;
  answer: string;
}

export interface Span {
  start: number;
  end: number;
  score: number;
}

/**
 * The pipeline's `decode_spans`: the `topK` best (start, end) token spans by start[s]·end[e] with
 * s ≤ e < s + maxAnswerLen, best first, then those whose ends are not both allowed are dropped.
 * Spans of probability zero are never candidates: when fewer than topK spans score above zero the
 * pipeline fills up with zero cells of its start×end matrix (in an order numpy leaves unspecified,
 * some with end < start), which only adds score-0 noise.
 */
export function decodeSpans(
  start: ArrayLike<number>,
  end: ArrayLike<number>,
  topK: number,
  maxAnswerLen: number,
  allowed: ArrayLike<boolean | number>,
): Span[] {
  const n = start.length;
  const candidates: Span[] = [];
  for (let s = 0; s < n; s++) {
    for (let e = s; e < Math.min(n, s + maxAnswerLen); e++) {
      const score = start[s] * end[e];
      if (score > 0) candidates.push({ start: s, end: e, score });
    }
  }
  // Built in (start, end) order and Array.prototype.sort is stable: ties keep that order.
  candidates.sort((a, b) => b.score - a.score);
  return candidates.slice(0, topK).filter((span) => allowed[span.start] && allowed[span.end]);
}

/** One window's scores, after the pipeline's `select_starts_ends`. */
export interface WindowSpans {
  spans: Span[];
  /** start[0]·end[0] after the softmax: how likely "no answer" is in this window. */
  nullScore: number;
}

/**
 * Masks the tokens that cannot be in an answer, softmaxes start and end logits, records the [CLS]
 * null score, zeroes [CLS] and decodes the spans.
 */
export function selectStartsEnds(
  startLogits: ArrayLike<number>,
  endLogits: ArrayLike<number>,
  allowed: readonly boolean[],
  topK: number,
  maxAnswerLen: number,
): WindowSpans {
  const start = softmax(Array.from(startLogits, (x, i) => (allowed[i] ? x : MASKED)));
  const end = softmax(Array.from(endLogits, (x, i) => (allowed[i] ? x : MASKED)));
  const nullScore = start[0] * end[0];
  start[0] = end[0] = 0;
  return { spans: decodeSpans(start, end, topK, maxAnswerLen, allowed), nullScore };
}

/** Tokens that may be in an answer: the context's, and any [CLS] (models use it for "no answer"). */
export function allowedTokens(encoding: Pick<Encoding, "ids" | "sequenceIds">, clsTokenId: number): boolean[] {
  return encoding.ids.map((id, i) => encoding.sequenceIds[i] === 1 || id === clsTokenId);
}

/**
 * Character span of token span [s, e] in the context. With alignToWords it widens to the whole
 * words (within this window) that s and e belong to; tokens without a word keep their offsets.
 */
export function charSpan(
  encoding: Pick<Encoding, "offsets" | "wordIds" | "sequenceIds">,
  s: number,
  e: number,
  alignToWords: boolean,
): [number, number] {
  const startWord = encoding.wordIds[s];
  const endWord = encoding.wordIds[e];
  if (alignToWords && startWord != null && endWord != null) {
    const inWord = (t: number, word: number) => encoding.sequenceIds[t] === 1 && encoding.wordIds[t] === word;
    let first = 0;
    while (first < encoding.wordIds.length && !inWord(first, startWord)) first++;
    let last = encoding.wordIds.length - 1;
    while (last >= 0 && !inWord(last, endWord)) last--;
    if (first < encoding.wordIds.length && last >= 0) return [encoding.offsets[first][0], encoding.offsets[last][1]];
  }
  return [encoding.offsets[s][0], encoding.offsets[e][1]];
}

export interface PostprocessOptions {
  topK: number;
  maxAnswerLen: number;
  handleImpossibleAnswer: boolean;
  alignToWords: boolean;
}

/** Answers for one question from its windows' logits, best first (the pipeline's `postprocess`). */
export function postprocess(
  context: string,
  windows: { encoding: Encoding; start: ArrayLike<number>; end: ArrayLike<number> }[],
  clsTokenId: number,
  options: PostprocessOptions,
): Answer[] {
  const { topK, maxAnswerLen, handleImpossibleAnswer, alignToWords } = options;
  // Aligning to words can merge spans, so look at more of them.
  const preTopK = alignToWords ? topK * 2 + 10 : topK;
  let minNullScore = 1_000_000;
  const answers: Answer[] = [];
  for (const { encoding, start, end } of windows) {
    const allowed = allowedTokens(encoding, clsTokenId);
    const { spans, nullScore } = selectStartsEnds(start, end, allowed, preTopK, maxAnswerLen);
    if (handleImpossibleAnswer) minNullScore = Math.min(minNullScore, nullScore);
    for (const span of spans) {
      const [a, b] = charSpan(encoding, span.start, span.end, alignToWords);
      const answer = context.slice(a, b);
      const same = answers.find((x) => x.answer.toLowerCase() === answer.toLowerCase());
      if (same) same.score += span.score;
      else answers.push({ score: span.score, start: a, end: b, answer });
    }
  }
  if (handleImpossibleAnswer) answers.push({ score: minNullScore, start: 0, end: 0, answer: "" });
  return answers.sort((x, y) => y.score - x.score).slice(0, topK);
}

interface Prepared {
  context: string;
  encodings: Encoding[];
}

/** Tokenizes one question/context into windows, checking that the windows can be built. */
export function prepare(
  model: Pick<LoadedModel, "tokenizer">,
  question: string,
  context: string,
  maxSeqLen: number,
  docStride: number,
  maxQuestionLen: number,
): Prepared {
  const { tokenizer } = model;
  const full = tokenizer.encode(question, context)[0];
  const count = (seq: 0 | 1) => full.sequenceIds.filter((x) => x === seq).length;
  let questionLen = count(0);
  const contextLen = count(1);
  const specials = full.ids.length - questionLen - contextLen;
  if (maxSeqLen <= specials) {
    throw invalidInput(`max_seq_len (${maxSeqLen}) must be larger than the ${specials} special tokens of a window`);
  }
  const overflows = () => questionLen + contextLen + specials > maxSeqLen;
  const room = () => maxSeqLen - specials - questionLen;
  // Where the pipeline's tokenizer would fail, cut the question as its slow path does.
  if (overflows() && (room() <= 0 || docStride >= room()) && questionLen > maxQuestionLen) {
    const cut = full.offsets[full.sequenceIds.indexOf(0) + maxQuestionLen - 1][1];
    question = question.slice(0, cut);
    questionLen = maxQuestionLen;
  }
  if (overflows() && room() <= 0) {
    throw invalidInput(`the question (${questionLen} tokens) leaves no room for the context in max_seq_len ${maxSeqLen}`);
  }
  if (overflows() && docStride >= room()) {
    throw invalidInput(
      `doc_stride (${docStride}) must be smaller than the ${room()} context tokens a window of max_seq_len ${maxSeqLen} holds`,
    );
  }
  const encodings = tokenizer.encode(question, context, {
    maxLength: maxSeqLen,
    truncation: "only_second",
    stride: docStride,
    returnOverflowing: true,
  });
  return { context, encodings };
}

export const questionAnswering: Task<z.infer<typeof inputs>, Parameters> = {
  name: "question-answering",
  inputs,
  parameters,
  async run(model, raw, params) {
    const { items, single } = asBatch(raw);
    const maxSeqLen = Math.min(params.max_seq_len ?? 384, model.maxLength);
    const docStride = params.doc_stride ?? Math.min(Math.floor(maxSeqLen / 2), 128);
    if (docStride > maxSeqLen) {
      throw invalidInput(`\`doc_stride\` (${docStride}) is larger than \`max_seq_len\` (${maxSeqLen})`);
    }
    const options: PostprocessOptions = {
      topK: params.top_k ?? 1,
      maxAnswerLen: params.max_answer_len ?? 15,
      handleImpossibleAnswer: params.handle_impossible_answer ?? false,
      alignToWords: params.align_to_words ?? true,
    };
    const prepared = items.map((x) =>
      prepare(model, x.question, x.context, maxSeqLen, docStride, params.max_question_len ?? 64),
    );
    const total = prepared.reduce((n, p) => n + p.encodings.length, 0);
    if (total > MAX_WINDOWS) {
      throw tooLarge(`the contexts need ${total} windows of ${maxSeqLen} tokens; at most ${MAX_WINDOWS} are accepted`);
    }
    const rows = await runRows(model, prepared.flatMap((p) => p.encodings), ["start_logits", "end_logits"]);
    let w = 0;
    const results = prepared.map(({ context, encodings }) => {
      const windows = encodings.map((encoding) => {
        // Padding is dropped: its probability would be exactly 0 after masking anyway.
        const { start_logits, end_logits } = rows[w++];
        const n = encoding.ids.length;
        return { encoding, start: start_logits.data.subarray(0, n), end: end_logits.data.subarray(0, n) };
      });
      const answers = postprocess(context, windows, model.tokenizer.clsTokenId, options);
      return answers.length === 1 ? answers[0] : answers;
    });
    return single ? results[0] : results;
  },
};
