import assert from "node:assert/strict";
import { before, describe, test } from "node:test";
import type { LoadedModel } from "../src/engine/model.ts";
import { ServiceError } from "../src/errors.ts";
import {
  aggregate,
  aggregateOverlappingEntities,
  type EntityGroup,
  filterIgnored,
  gatherPreEntities,
  isSubwordHeuristic,
  type PreEntity,
  type TokenEntity,
  tokenClassification,
} from "../src/tasks/token-classification.ts";
import { hasFixture, loadFixture } from "./support/load-model.ts";

const LABELS = ["O", "B-MISC", "I-MISC", "B-PER", "I-PER", "B-ORG", "I-ORG", "B-LOC", "I-LOC"];

/** Probabilities with `p` at `label` and 0 elsewhere (the pipeline tests' crafted scores). */
const one = (label: string, p: number) => LABELS.map((l) => (l === label ? p : 0));
const pre = (scores: number[], start: number, end: number, index: number, isSubword = false): PreEntity => ({
  scores,
  start,
  end,
  index,
  isSubword,
});

const close = (actual: number, expected: number, eps = 1e-12) =>
  assert.ok(Math.abs(actual - expected) < eps, `${actual} != ${expected}`);

describe("token-classification decoding (pipeline test examples)", () => {
  // transformers' test_aggregation_strategy: "En" "##zo" (I-PER) ... "UN" (B-ORG).
  const text = "Enzo works at the UN";
  const enzo = [
    pre(one("I-PER", 0.9968166351318359), 0, 2, 1),
    pre(one("I-PER", 0.9957635998725891), 2, 4, 2, true),
    pre(one("B-ORG", 0.9986497163772583), 18, 20, 7),
  ];

  test("none: one entity per token; word is the original text", () => {
    assert.deepEqual(aggregate(enzo, "none", LABELS, text), [
      { entity: "I-PER", score: 0.9968166351318359, index: 1, word: "En", start: 0, end: 2 },
      // The pipeline says "##zo" (the token); we give the text it covers.
      { entity: "I-PER", score: 0.9957635998725891, index: 2, word: "zo", start: 2, end: 4 },
      { entity: "B-ORG", score: 0.9986497163772583, index: 7, word: "UN", start: 18, end: 20 },
    ]);
  });

  test("simple: I- tokens of a tag merge and their scores are averaged", () => {
    assert.deepEqual(aggregate(enzo, "simple", LABELS, text), [
      { entity_group: "PER", score: (0.9968166351318359 + 0.9957635998725891) / 2, word: "Enzo", start: 0, end: 4 },
      { entity_group: "ORG", score: 0.9986497163772583, word: "UN", start: 18, end: 20 },
    ]);
  });

  test("first / max / average on whole words", () => {
    const org = { entity_group: "ORG", score: 0.9986497163772583, word: "UN", start: 18, end: 20 };
    assert.deepEqual(aggregate(enzo, "first", LABELS, text), [
      { entity_group: "PER", score: 0.9968166351318359, word: "Enzo", start: 0, end: 4 },
      org,
    ]);
    assert.deepEqual(aggregate(enzo, "max", LABELS, text), [
      { entity_group: "PER", score: 0.9968166351318359, word: "Enzo", start: 0, end: 4 },
      org,
    ]);
    const average = aggregate(enzo, "average", LABELS, text) as EntityGroup[];
    assert.equal(average.length, 2);
    close(average[0].score, (0.9968166351318359 + 0.9957635998725891) / 2);
    assert.deepEqual({ ...average[0], score: 0 }, { entity_group: "PER", score: 0, word: "Enzo", start: 0, end: 4 });
    assert.deepEqual(average[1], org);
  });

  // transformers' test_aggregation_strategy_example2: "Ra" "##ma" "##zotti", one word, three opinions.
  const ramazotti = "Ramazotti";
  const rama = [
    pre([0, 0.55, 0, 0.45, 0, 0, 0, 0, 0], 0, 2, 1),
    pre([0, 0, 0, 0.2, 0, 0, 0, 0.8, 0], 2, 4, 2, true),
    pre([0, 0, 0, 0.4, 0, 0, 0.6, 0, 0], 4, 9, 3, true),
  ];

  test("example 2: none and simple split the word", () => {
    assert.deepEqual(aggregate(rama, "none", LABELS, ramazotti), [
      { entity: "B-MISC", score: 0.55, index: 1, word: "Ra", start: 0, end: 2 },
      { entity: "B-LOC", score: 0.8, index: 2, word: "ma", start: 2, end: 4 },
      { entity: "I-ORG", score: 0.6, index: 3, word: "zotti", start: 4, end: 9 },
    ]);
    // The AggregationStrategy docs' "Micro|soft" problem: simple keeps the disagreeing pieces apart.
    assert.deepEqual(aggregate(rama, "simple", LABELS, ramazotti), [
      { entity_group: "MISC", score: 0.55, word: "Ra", start: 0, end: 2 },
      { entity_group: "LOC", score: 0.8, word: "ma", start: 2, end: 4 },
      { entity_group: "ORG", score: 0.6, word: "zotti", start: 4, end: 9 },
    ]);
  });

  test("example 2: first takes the first token, max the most confident, average the mean", () => {
    assert.deepEqual(aggregate(rama, "first", LABELS, ramazotti), [
      { entity_group: "MISC", score: 0.55, word: "Ramazotti", start: 0, end: 9 },
    ]);
    assert.deepEqual(aggregate(rama, "max", LABELS, ramazotti), [
      { entity_group: "LOC", score: 0.8, word: "Ramazotti", start: 0, end: 9 },
    ]);
    // B-PER has the highest mean (0.35) though no token chose it.
    const [avg] = aggregate(rama, "average", LABELS, ramazotti) as EntityGroup[];
    assert.equal(avg.entity_group, "PER");
    close(avg.score, 0.35);
    assert.deepEqual([avg.word, avg.start, avg.end], ["Ramazotti", 0, 9]);
  });
});

describe("token-classification grouping", () => {
  test("B-/I- schema of the pipeline docs: (A,B-TAG)(B,I-TAG)(C,I-TAG)(D,B-TAG2)(E,B-TAG2)", () => {
    const text = "A B C D E";
    const labels = ["O", "B-TAG", "I-TAG", "B-TAG2", "I-TAG2"];
    const at = (id: number, i: number) => pre(labels.map((_, j) => (j === id ? 0.9 : 0.025)), 2 * i, 2 * i + 1, i + 1);
    const groups = aggregate([at(1, 0), at(2, 1), at(2, 2), at(3, 3), at(3, 4)], "simple", labels, text);
    assert.deepEqual(
      groups.map((g) => [(g as EntityGroup).entity_group, g.word, g.start, g.end]),
      [
        ["TAG", "A B C", 0, 5],
        ["TAG2", "D", 6, 7],
        ["TAG2", "E", 8, 9],
      ],
    );
  });

  test("an I- after another tag starts a group; a bare label continues like I-", () => {
    const text = "x y z w";
    const labels = ["O", "B-PER", "I-PER", "I-LOC", "PER"];
    const at = (id: number, i: number) => pre(labels.map((_, j) => (j === id ? 1 : 0)), 2 * i, 2 * i + 1, i + 1);
    const groups = aggregate([at(1, 0), at(4, 1), at(3, 2), at(2, 3)], "simple", labels, text) as EntityGroup[];
    assert.deepEqual(
      groups.map((g) => [g.entity_group, g.word]),
      [
        ["PER", "x y"],
        ["LOC", "z"],
        ["PER", "w"],
      ],
    );
  });

  test("the group label is what follows the first dash; ties go to the lowest label id", () => {
    const labels = ["B-A-B", "I-A-B"];
    const [g] = aggregate([pre([0.5, 0.5], 0, 1, 1)], "simple", labels, "q") as EntityGroup[];
    assert.equal(g.entity_group, "A-B");
  });

  test("ignore_labels filters entity (none) and entity_group (grouped) labels", () => {
    const text = "Sarah lives in London";
    const p = [
      pre(one("B-PER", 0.9), 0, 5, 1),
      pre(one("O", 0.8), 6, 11, 2),
      pre(one("O", 0.7), 12, 14, 3),
      pre(one("B-LOC", 0.95), 15, 21, 4),
    ];
    const simple = aggregate(p, "simple", LABELS, text);
    assert.deepEqual(
      filterIgnored(simple, ["O"]).map((g) => (g as EntityGroup).entity_group),
      ["PER", "LOC"],
    );
    assert.deepEqual(
      filterIgnored(simple, []).map((g) => (g as EntityGroup).entity_group),
      ["PER", "O", "LOC"],
    );
    assert.deepEqual(
      filterIgnored(simple, ["O", "PER"]).map((g) => g.word),
      ["London"],
    );
    // For "none" the full label is compared, as in the pipeline: "PER" does not hide "B-PER".
    const none = aggregate(p, "none", LABELS, text);
    assert.deepEqual(
      filterIgnored<TokenEntity>(none, ["O", "PER"]).map((e) => e.entity),
      ["B-PER", "B-LOC"],
    );
  });
});

describe("token-classification subwords", () => {
  const scores = (n: number) => Array.from({ length: n }, () => one("O", 1));

  test("a WordPiece continuation starting mid-word is a subword; [UNK] never is", () => {
    const text = "Stampede at 😀 Corp";
    const enc = {
      ids: [101, 1, 2, 3, 4, 100, 5, 102],
      tokens: ["[CLS]", "st", "##amp", "##ede", "at", "[UNK]", "corp", "[SEP]"],
      offsets: [[0, 0], [0, 2], [2, 5], [5, 8], [9, 11], [12, 14], [15, 19], [0, 0]] as [number, number][],
      specialTokensMask: [1, 0, 0, 0, 0, 0, 0, 1],
    };
    const p = gatherPreEntities(text, enc, scores(8), 100);
    assert.deepEqual(
      p.map((x) => [x.index, x.start, x.end, x.isSubword]),
      [
        [1, 0, 2, false],
        [2, 2, 5, true],
        [3, 5, 8, true],
        [4, 9, 11, false],
        [5, 12, 14, false],
        [6, 15, 19, false],
      ],
    );
    // With disagreeing pieces, first/average/max still keep "Stampede" one word.
    const labelled = gatherPreEntities(
      text,
      enc,
      ["O", "B-PER", "B-LOC", "B-LOC", "O", "B-MISC", "B-ORG", "O"].map((l) => one(l, 0.9)),
      100,
    );
    for (const strategy of ["first", "average", "max"] as const) {
      assert.deepEqual(
        (aggregate(labelled, strategy, LABELS, text) as EntityGroup[]).map((g) => [g.entity_group, g.word]),
        [
          [strategy === "first" ? "PER" : strategy === "max" ? "PER" : "LOC", "Stampede"],
          ["O", "at"],
          ["MISC", "😀"],
          ["ORG", "Corp"],
        ],
        strategy,
      );
    }
    assert.deepEqual(
      gatherPreEntities(text, enc, scores(8), 100, 40).map((x) => x.index),
      [41, 42, 43, 44, 45, 46],
    );
  });

  test("word grouping by subwords: each non-subword token starts a word", () => {
    const text = "Microsoft company";
    const p = [
      pre(one("B-ORG", 0.9), 0, 5, 1),
      pre(one("I-PER", 0.95), 5, 9, 2, true),
      pre(one("I-ORG", 0.7), 10, 13, 3),
      pre(one("I-ORG", 0.6), 13, 17, 4, true),
    ];
    // micro|soft| com|pany| B-ENT I-NAME I-ENT I-ENT → microsoft| company| B-ENT I-ENT (pipeline docstring).
    const first = aggregate(p, "first", LABELS, text) as EntityGroup[];
    assert.deepEqual(first, [{ entity_group: "ORG", score: (0.9 + 0.7) / 2, word: "Microsoft company", start: 0, end: 17 }]);
    const simple = aggregate(p, "simple", LABELS, text) as EntityGroup[];
    assert.deepEqual(
      simple.map((g) => [g.entity_group, g.word]),
      [
        ["ORG", "Micro"],
        ["PER", "soft"],
        ["ORG", "company"],
      ],
    );
  });

  test("the pipeline's fallback heuristic for tokenizers without a subword prefix", () => {
    assert.equal(isSubwordHeuristic("ab cd", 0), false);
    assert.equal(isSubwordHeuristic("ab cd", 3), false);
    assert.equal(isSubwordHeuristic("abcd", 2), true);
    assert.equal(isSubwordHeuristic("ab cd", 2), false); // the token itself starts with the space
  });
});

describe("token-classification window merging", () => {
  test("overlapping entities: the longer wins, then the strictly more confident, else the earlier", () => {
    const e = (start: number, end: number, score: number, tag = "") => ({ start, end, score, tag });
    const merged = aggregateOverlappingEntities([
      // window 1
      e(0, 5, 0.9),
      e(20, 30, 0.8, "cut at the window edge"),
      e(40, 45, 0.5, "first"),
      // window 2
      e(20, 34, 0.7, "whole"),
      e(40, 45, 0.5, "second, same score"),
      e(50, 55, 0.6, "first of two"),
      e(50, 55, 0.61, "more confident"),
      e(60, 62, 0.3),
    ]);
    assert.deepEqual(
      merged.map((x) => [x.start, x.end, x.tag]),
      [
        [0, 5, ""],
        [20, 34, "whole"],
        [40, 45, "first"],
        [50, 55, "more confident"],
        [60, 62, ""],
      ],
    );
    assert.deepEqual(aggregateOverlappingEntities([]), []);
  });
});

describe("token-classification on tiny-bert-ner", { skip: !hasFixture("tiny-bert-ner") && "fixture tiny-bert-ner not generated" }, () => {
  let model: LoadedModel;
  before(async () => {
    model = await loadFixture("tiny-bert-ner");
  });

  const sentence = "Angela Merkel met Emmanuel Macron in Paris on Tuesday to discuss the European Union budget. ";
  const long = sentence.repeat(6).trim();

  test("a single text gives a list, a list gives one list per text", async () => {
    const one = (await tokenClassification.run(model, sentence, {})) as EntityGroup[];
    assert.ok(Array.isArray(one));
    for (const g of one) assert.deepEqual(Object.keys(g), ["entity_group", "score", "word", "start", "end"]);
    const two = (await tokenClassification.run(model, [sentence, "Paris"], {})) as EntityGroup[][];
    assert.equal(two.length, 2);
    assert.deepEqual(two[0], one);
  });

  test("a long text is split into windows and merged, never truncated (none: every token once)", async () => {
    const small = { ...model, maxLength: 24 };
    const full = model.tokenizer.encode(long)[0];
    assert.ok(full.ids.length > 100);
    const tokens = (await tokenClassification.run(small, long, {
      aggregation_strategy: "none",
      ignore_labels: [],
      stride: 5,
    })) as TokenEntity[];
    // Each token of the whole text exactly once, with its whole-text index and offsets.
    assert.deepEqual(
      tokens.map((t) => t.index),
      full.ids.map((_, i) => i).slice(1, -1),
    );
    for (const t of tokens) {
      assert.deepEqual([t.start, t.end], full.offsets[t.index]);
      assert.equal(t.word, long.slice(t.start, t.end));
    }
    assert.equal(tokens.at(-1)!.end, long.length);
  });

  test("grouped entities from windows are ordered, disjoint and reach past the first window", async () => {
    const small = { ...model, maxLength: 24 };
    const firstWindow = small.tokenizer.encode(long, undefined, { maxLength: 24 })[0];
    const firstWindowEnd = firstWindow.offsets[firstWindow.offsets.length - 2][1];
    for (const strategy of ["simple", "first", "average", "max"] as const) {
      const groups = (await tokenClassification.run(small, long, {
        aggregation_strategy: strategy,
        ignore_labels: [],
      })) as EntityGroup[];
      for (let i = 0; i < groups.length; i++) {
        assert.equal(groups[i].word, long.slice(groups[i].start, groups[i].end));
        if (i > 0) assert.ok(groups[i].start >= groups[i - 1].end, `${strategy}: overlap at ${i}`);
      }
      assert.ok(groups.at(-1)!.end > firstWindowEnd, strategy);
    }
  });

  test("a text that fits one window is not merged (same as the model with room to spare)", async () => {
    const a = await tokenClassification.run(model, sentence, { aggregation_strategy: "none", ignore_labels: [] });
    const b = await tokenClassification.run({ ...model, maxLength: 64 }, sentence, {
      aggregation_strategy: "none",
      ignore_labels: [],
    });
    assert.deepEqual(b, a);
  });

  test("stride must leave the window room to move: 422", async () => {
    await assert.rejects(
      () => tokenClassification.run({ ...model, maxLength: 24 }, long, { stride: 22 }),
      (err: ServiceError) => err.status === 422 && /stride/.test(err.message),
    );
  });
});
