import assert from "node:assert/strict";
import { before, describe, test } from "node:test";
import type { LoadedModel } from "../src/engine/model.ts";
import type { Encoding } from "../src/engine/tokenizer.ts";
import { ServiceError } from "../src/errors.ts";
import {
  type Answer,
  allowedTokens,
  charSpan,
  decodeSpans,
  postprocess,
  prepare,
  questionAnswering,
  selectStartsEnds,
} from "../src/tasks/question-answering.ts";
import { hasFixture, loadFixture } from "./support/load-model.ts";

const CLS = 101;
const SEP = 102;

const close = (actual: number, expected: number, eps = 1e-12) =>
  assert.ok(Math.abs(actual - expected) < eps, `${actual} != ${expected}`);

/**
 * A hand-made window: [CLS] q [SEP] context tokens [SEP]. Each context token is
 * [start, end, wordId] in the context string.
 */
function window(context: [number, number, number][]): Encoding {
  const n = context.length + 4;
  const enc: Encoding = {
    ids: [CLS, 2000, SEP, ...context.map((_, i) => 3000 + i), SEP],
    tokens: ["[CLS]", "q", "[SEP]", ...context.map((_, i) => `t${i}`), "[SEP]"],
    typeIds: [0, 0, 0, ...context.map(() => 1), 1],
    attentionMask: Array(n).fill(1),
    offsets: [[0, 0], [0, 1], [0, 0], ...context.map(([s, e]): [number, number] => [s, e]), [0, 0]],
    sequenceIds: [null, 0, null, ...context.map((): 1 => 1), null],
    wordIds: [null, 0, null, ...context.map(([, , w]) => w), null],
    specialTokensMask: [1, 0, 1, ...context.map(() => 0), 1],
  };
  return enc;
}

/** Logits that are `low` everywhere except `high` at the given positions. */
const peaks = (n: number, at: Record<number, number>, low = 0) =>
  Array.from({ length: n }, (_, i) => at[i] ?? low);

describe("decode_spans", () => {
  const start = [0.1, 0.5, 0.2, 0.2];
  const end = [0.1, 0.1, 0.6, 0.2];
  const all = [1, 1, 1, 1];
  const spans = (k: number, maxLen: number, allowed = all) =>
    decodeSpans(start, end, k, maxLen, allowed).map((s) => [s.start, s.end, s.score]);

  test("best spans by start·end, end ≥ start, best first", () => {
    assert.deepEqual(spans(3, 2), [
      [1, 2, 0.5 * 0.6],
      [2, 2, 0.2 * 0.6],
      [1, 1, 0.5 * 0.1],
    ]);
  });

  test("max_answer_len bounds end − start + 1", () => {
    // (1, 3) = 0.1 becomes possible with 3 tokens; (0, 2) = 0.06 too.
    assert.deepEqual(spans(4, 3), [
      [1, 2, 0.5 * 0.6],
      [2, 2, 0.2 * 0.6],
      [1, 3, 0.5 * 0.2],
      [0, 2, 0.1 * 0.6],
    ]);
    assert.deepEqual(spans(1, 1), [[2, 2, 0.2 * 0.6]]);
  });

  test("ties keep the lower (start, end) first", () => {
    const out = decodeSpans([0.5, 0.5], [0.5, 0.5], 3, 2, [1, 1]);
    assert.deepEqual(
      out.map((s) => [s.start, s.end]),
      [
        [0, 0],
        [0, 1],
        [1, 1],
      ],
    );
  });

  test("top-k is taken first and spans touching disallowed tokens dropped after", () => {
    assert.deepEqual(spans(2, 2, [1, 1, 0, 1]), []);
    assert.deepEqual(spans(3, 2, [1, 1, 0, 1]), [[1, 1, 0.5 * 0.1]]);
  });

  test("zero-probability spans are never candidates", () => {
    const out = decodeSpans([0, 1, 0], [0, 1, 0], 3, 15, [1, 1, 1]);
    assert.deepEqual(
      out.map((s) => [s.start, s.end, s.score]),
      [[1, 1, 1]],
    );
  });
});

describe("select_starts_ends", () => {
  // [CLS] q [SEP] c0 c1 [SEP]
  const enc = window([
    [0, 2, 0],
    [3, 5, 1],
  ]);
  const allowed = allowedTokens(enc, CLS);

  test("only context tokens and [CLS] are allowed", () => {
    assert.deepEqual(allowed, [true, false, false, true, true, false]);
  });

  test("masked tokens get no probability; [CLS] gives the null score, then is zeroed", () => {
    const startLogits = [3, 9, 9, 1, 0, 9];
    const endLogits = [2, 9, 9, 0, 1, 9];
    const { spans, nullScore } = selectStartsEnds(startLogits, endLogits, allowed, 10, 15);
    const zs = Math.exp(3) + Math.exp(1) + Math.exp(0);
    const ze = Math.exp(2) + Math.exp(0) + Math.exp(1);
    close(nullScore, (Math.exp(3) / zs) * (Math.exp(2) / ze));
    assert.deepEqual(
      spans.filter((s) => s.score > 0).map((s) => [s.start, s.end]),
      [
        [3, 4],
        [3, 3],
        [4, 4],
      ],
    );
    close(spans[0].score, (Math.exp(1) / zs) * (Math.exp(1) / ze));
  });
});

describe("question-answering postprocess", () => {
  const options = { topK: 1, maxAnswerLen: 15, handleImpossibleAnswer: false, alignToWords: true };
  // "Bradfield designed it" as brad ##field designed it (word ids 0 0 1 2)
  const bradfield = () =>
    window([
      [0, 4, 0],
      [4, 9, 0],
      [10, 18, 1],
      [19, 21, 2],
    ]);

  test("align_to_words widens to whole words; off, it keeps token offsets", () => {
    const context = "Bradfield designed it";
    const enc = bradfield();
    const start = peaks(8, { 4: 8 });
    const end = peaks(8, { 4: 8 });
    const on = postprocess(context, [{ encoding: enc, start, end }], CLS, options);
    assert.deepEqual(
      on.map((a) => [a.answer, a.start, a.end]),
      [["Bradfield", 0, 9]],
    );
    const off = postprocess(context, [{ encoding: enc, start, end }], CLS, { ...options, alignToWords: false });
    assert.deepEqual(
      off.map((a) => [a.answer, a.start, a.end]),
      [["field", 4, 9]],
    );
    assert.deepEqual(charSpan(enc, 4, 5, true), [0, 18]);
    assert.deepEqual(charSpan(enc, 4, 5, false), [4, 18]);
  });

  test("spans that align to the same text add up their scores", () => {
    const context = "Bradfield designed it";
    const enc = bradfield();
    // Mass on brad and ##field alike: (3,3) (3,4) (4,4) all become "Bradfield".
    const start = peaks(8, { 3: 5, 4: 5 });
    const end = peaks(8, { 3: 5, 4: 5 });
    const [top] = postprocess(context, [{ encoding: enc, start, end }], CLS, options);
    const raw = selectStartsEnds(start, end, allowedTokens(enc, CLS), 12, 15).spans;
    const merged = raw.filter((s) => s.start >= 3 && s.end <= 4).reduce((a, s) => a + s.score, 0);
    assert.equal(top.answer, "Bradfield");
    close(top.score, merged);
  });

  test("windows are merged: the best-scoring window wins, answers sorted, top_k cut", () => {
    const context = "a b c d e f";
    const words = [0, 1, 2, 3, 4, 5].map((i): [number, number, number] => [2 * i, 2 * i + 1, i]);
    const w1 = window(words.slice(0, 4)); // a b c d
    const w2 = window(words.slice(2)); // c d e f
    const n = 8;
    const windows = [
      { encoding: w1, start: peaks(n, { 4: 4 }), end: peaks(n, { 4: 4 }) }, // "b", moderately sure
      { encoding: w2, start: peaks(n, { 5: 7 }), end: peaks(n, { 5: 7 }) }, // "e", very sure
    ];
    const answers = postprocess(context, windows, CLS, { ...options, topK: 3, alignToWords: false });
    assert.equal(answers[0].answer, "e");
    assert.deepEqual([answers[0].start, answers[0].end], [8, 9]);
    const single = (i: number) => postprocess(context, [windows[i]], CLS, { ...options, alignToWords: false })[0];
    assert.equal(answers[0].score, single(1).score);
    assert.ok(single(0).score < single(1).score);
    assert.equal(answers.length, 3);
    for (let i = 1; i < answers.length; i++) assert.ok(answers[i - 1].score >= answers[i].score);
    for (const a of answers) assert.equal(a.answer, context.slice(a.start, a.end));
  });

  test("handle_impossible_answer: the smallest null score over windows, as an empty answer", () => {
    const context = "a b";
    const enc = window([
      [0, 1, 0],
      [2, 3, 1],
    ]);
    const sure = { encoding: enc, start: peaks(6, { 0: 6 }), end: peaks(6, { 0: 6 }) };
    const lessSure = { encoding: enc, start: peaks(6, { 0: 3 }), end: peaks(6, { 0: 3 }) };
    const opts = { ...options, handleImpossibleAnswer: true };
    const [top] = postprocess(context, [sure, lessSure], CLS, opts);
    // Per window: p(CLS) = e^x / (e^x + 2) over [CLS] and the two context tokens.
    const p3 = Math.exp(3) / (Math.exp(3) + 2);
    assert.deepEqual({ ...top, score: 0 }, { score: 0, start: 0, end: 0, answer: "" });
    close(top.score, p3 * p3);
    // Without it the null answer never shows, whatever [CLS] says.
    const [plain] = postprocess(context, [sure], CLS, options);
    assert.notEqual(plain.answer, "");
  });
});

describe("question-answering parameters", () => {
  const fake = { maxLength: 512 } as LoadedModel;

  test("doc_stride larger than max_seq_len: 422 (as the pipeline raises)", async () => {
    await assert.rejects(
      () => questionAnswering.run(fake, { question: "q", context: "c" }, { max_seq_len: 64, doc_stride: 65 }),
      (err: ServiceError) => err.status === 422 && /doc_stride/.test(err.message),
    );
  });
});

describe("question-answering on tiny-bert-qa", { skip: !hasFixture("tiny-bert-qa") && "fixture tiny-bert-qa not generated" }, () => {
  let model: LoadedModel;
  before(async () => {
    model = await loadFixture("tiny-bert-qa");
  });

  const question = "Who designed the bridge?";
  const context =
    "The Harbor Bridge was built between 1923 and 1932 in Sydney, Australia. It was designed by the engineer " +
    "John Bradfield, who oversaw the project for the New South Wales government. At the time of its opening it " +
    "was the widest long-span bridge in the world. The bridge carries rail, vehicular, bicycle and pedestrian " +
    "traffic between the central business district and the North Shore. Locals call it the Coathanger. Café " +
    "owners near the pylons say 🚲 riders cross it every morning.";

  test("single input, top_k 1 → one object; top_k 3 → a list; a list → one result per input", async () => {
    const one = (await questionAnswering.run(model, { question, context }, {})) as Answer;
    assert.deepEqual(Object.keys(one).sort(), ["answer", "end", "score", "start"]);
    assert.equal(one.answer, context.slice(one.start, one.end));
    const three = (await questionAnswering.run(model, { question, context }, { top_k: 3 })) as Answer[];
    assert.equal(three.length, 3);
    assert.deepEqual(three[0], one);
    const list = (await questionAnswering.run(model, [{ question, context }], {})) as Answer[];
    assert.deepEqual(list, [one]);
  });

  test("a long context: several windows in one run, answers from the best window", async () => {
    const params = { max_seq_len: 48, doc_stride: 16, top_k: 5 };
    const { encodings } = prepare(model, question, context, 48, 16, 64);
    assert.ok(encodings.length >= 4, `${encodings.length} windows`);
    for (const e of encodings) assert.ok(e.ids.length <= 48);

    let runs = 0;
    const counting = { ...model, run: (b: Parameters<LoadedModel["run"]>[0]) => (runs++, model.run(b)) };
    const answers = (await questionAnswering.run(counting, { question, context }, params)) as Answer[];
    assert.equal(runs, 1);
    assert.equal(answers.length, 5);
    for (let i = 0; i < answers.length; i++) {
      assert.equal(answers[i].answer, context.slice(answers[i].start, answers[i].end));
      if (i > 0) assert.ok(answers[i - 1].score >= answers[i].score);
    }

    // Each window alone: the merged best is at least the best window's best (equal unless texts merged).
    const perWindow: Answer[] = [];
    for (const e of encodings) {
      const { start_logits, end_logits } = await model.run({
        dims: [1, e.ids.length],
        inputIds: BigInt64Array.from(e.ids.map(BigInt)),
        attentionMask: BigInt64Array.from(e.attentionMask.map(BigInt)),
        tokenTypeIds: BigInt64Array.from(e.typeIds.map(BigInt)),
      });
      perWindow.push(
        postprocess(context, [{ encoding: e, start: start_logits.data, end: end_logits.data }], model.tokenizer.clsTokenId, {
          topK: 1,
          maxAnswerLen: 15,
          handleImpossibleAnswer: false,
          alignToWords: true,
        })[0],
      );
    }
    const best = perWindow.reduce((a, b) => (b.score > a.score ? b : a));
    assert.ok(answers[0].score >= best.score - 1e-6, `${answers[0].score} < ${best.score}`);
    if (new Set(perWindow.map((a) => a.answer.toLowerCase())).size === perWindow.length) {
      assert.ok(perWindow.some((a) => a.answer === answers[0].answer));
    }
  });

  test("answers keep UTF-16 offsets past astral characters", async () => {
    const tail = "Riders 🚲🚲 cross the Harbor Bridge daily.";
    const answers = (await questionAnswering.run(model, { question, context: tail }, { top_k: 10 })) as Answer[];
    for (const a of answers) assert.equal(a.answer, tail.slice(a.start, a.end));
  });

  test("handle_impossible_answer adds the empty answer as a candidate", async () => {
    const answers = (await questionAnswering.run(
      model,
      { question, context },
      { handle_impossible_answer: true, top_k: 1000, max_seq_len: 48, doc_stride: 16 },
    )) as Answer[];
    const empty = answers.filter((a) => a.answer === "");
    assert.equal(empty.length, 1);
    assert.deepEqual([empty[0].start, empty[0].end], [0, 0]);
    assert.ok(empty[0].score > 0 && empty[0].score < 1);
  });

  test("align_to_words off returns token spans, on returns whole words", async () => {
    const params = { top_k: 20, max_answer_len: 4 };
    const on = (await questionAnswering.run(model, { question, context }, params)) as Answer[];
    const off = (await questionAnswering.run(model, { question, context }, { ...params, align_to_words: false })) as Answer[];
    const alnum = (c: string) => /[\p{L}\p{N}]/u.test(c);
    const isWordEdge = (i: number) => i === 0 || i === context.length || !(alnum(context[i - 1]) && alnum(context[i]));
    for (const a of on) assert.ok(isWordEdge(a.start) && isWordEdge(a.end), JSON.stringify(a));
    for (const a of off) assert.equal(a.answer, context.slice(a.start, a.end));
  });

  test("doc_stride that leaves a window no room to move: 422", async () => {
    await assert.rejects(
      () => questionAnswering.run(model, { question, context }, { max_seq_len: 32, doc_stride: 30 }),
      (err: ServiceError) => err.status === 422 && /doc_stride/.test(err.message),
    );
  });

  test("a question too long for the window is cut to max_question_len tokens", async () => {
    const long = "Which engineer, working for which government, designed and oversaw the building of the bridge?";
    // 17 question tokens + 3 specials leave 12 context tokens: doc_stride 12 cannot fit, 8 tokens of question can.
    const { encodings } = prepare(model, long, context, 32, 12, 8);
    for (const e of encodings) assert.equal(e.sequenceIds.filter((s) => s === 0).length, 8);
    const a = (await questionAnswering.run(model, { question: long, context }, {
      max_seq_len: 32,
      doc_stride: 12,
      max_question_len: 8,
    })) as Answer;
    assert.equal(a.answer, context.slice(a.start, a.end));
  });
});
