import assert from "node:assert/strict";
import { existsSync, readFileSync } from "node:fs";
import { describe, test } from "node:test";
import { fileURLToPath } from "node:url";
import { BertTokenizer, type Encoding, UnsupportedTokenizerError } from "../src/engine/tokenizer.ts";

// distilbert-base-uncased tokenizer (same file as ../shared/data/vocab/...).
function loadJson(name: string, sharedName: string): any {
  const local = fileURLToPath(new URL(`../tools/fixtures/tokenizer/${name}`, import.meta.url));
  const shared = fileURLToPath(new URL(`../../shared/data/vocab/${sharedName}`, import.meta.url));
  return JSON.parse(readFileSync(existsSync(local) ? local : shared, "utf8"));
}
const TOKENIZER_JSON = loadJson("tokenizer.json", "distilbert-base-uncased-tokenizer.json");
const TOKENIZER_CONFIG = loadJson("tokenizer_config.json", "distilbert-base-uncased-tokenizer_config.json");
const tok = BertTokenizer.fromJSON(TOKENIZER_JSON, TOKENIZER_CONFIG);

const clone = <T>(x: T): T => JSON.parse(JSON.stringify(x));

function one(text: string, pair?: string): Encoding {
  const encs = tok.encode(text, pair);
  assert.equal(encs.length, 1);
  return encs[0];
}

/** Source text of every non-special token. */
function slices(text: string, e: Encoding): string[] {
  return e.offsets.map(([s, t]) => text.slice(s, t));
}

/** A tiny hand-written WordPiece tokenizer.json for behaviour that the real vocab cannot show. */
function tinyJson(overrides: Record<string, unknown> = {}): any {
  const vocab: Record<string, number> = {};
  const words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "i", "##\u0307", "##x", "x", "<m>", "hello", "world", "!"];
  words.forEach((w, i) => (vocab[w] = i));
  return {
    version: "1.0",
    truncation: null,
    padding: null,
    added_tokens: [0, 1, 2, 3, 4].map((id) => ({
      id,
      content: words[id],
      single_word: false,
      lstrip: false,
      rstrip: false,
      normalized: false,
      special: true,
    })),
    normalizer: { type: "BertNormalizer", clean_text: true, handle_chinese_chars: true, strip_accents: null, lowercase: true },
    pre_tokenizer: { type: "BertPreTokenizer" },
    post_processor: { type: "BertProcessing", sep: ["[SEP]", 3], cls: ["[CLS]", 2] },
    decoder: { type: "WordPiece", prefix: "##", cleanup: true },
    model: { type: "WordPiece", unk_token: "[UNK]", continuing_subword_prefix: "##", max_input_chars_per_word: 100, vocab },
    ...overrides,
  };
}

describe("BertTokenizer: loading", () => {
  test("exposes vocabulary metadata from tokenizer.json + tokenizer_config.json", () => {
    assert.equal(tok.vocabSize, 30522);
    assert.equal(tok.modelMaxLength, 512);
    assert.equal(tok.padTokenId, 0);
    assert.equal(tok.unkTokenId, 100);
    assert.equal(tok.clsTokenId, 101);
    assert.equal(tok.sepTokenId, 102);
    assert.equal(tok.maskToken, "[MASK]");
    assert.equal(tok.maskTokenId, 103);
    assert.equal(tok.tokenToId("hello"), 7592);
    assert.equal(tok.tokenToId("##ing"), 2075);
    assert.equal(tok.tokenToId("definitely-not-a-token"), undefined);
    assert.equal(tok.idToToken(7592), "hello");
    assert.equal(tok.idToToken(1e9), undefined);
    assert.equal(tok.isSpecialId(101), true);
    assert.equal(tok.isSpecialId(0), true);
    assert.equal(tok.isSpecialId(103), true);
    assert.equal(tok.isSpecialId(7592), false);
  });

  test("rejects a BPE model with UnsupportedTokenizerError", () => {
    const bpe = clone(TOKENIZER_JSON);
    bpe.model = { type: "BPE", vocab: { a: 0 }, merges: [], unk_token: null };
    assert.throws(() => BertTokenizer.fromJSON(bpe), (err: unknown) => {
      assert.ok(err instanceof UnsupportedTokenizerError);
      assert.match((err as Error).message, /model type "BPE"/);
      return true;
    });
  });

  test("rejects other unsupported components, naming them", () => {
    const cases: [string, unknown, RegExp][] = [
      ["normalizer", { type: "NFKC" }, /normalizer type "NFKC"/],
      ["normalizer", { type: "Sequence", normalizers: [{ type: "NFD" }, { type: "Replace", pattern: { String: "a" }, content: "b" }] }, /normalizer type "Replace"/],
      ["pre_tokenizer", { type: "ByteLevel", add_prefix_space: false, trim_offsets: true, use_regex: true }, /pre_tokenizer "ByteLevel"/],
      ["pre_tokenizer", null, /pre_tokenizer null/],
      ["post_processor", { type: "RobertaProcessing", sep: ["</s>", 2], cls: ["<s>", 0] }, /post_processor type "RobertaProcessing"/],
      ["decoder", { type: "ByteLevel" }, /decoder type "ByteLevel"/],
    ];
    for (const [key, value, re] of cases) {
      const j = clone(TOKENIZER_JSON);
      j[key] = value;
      assert.throws(() => BertTokenizer.fromJSON(j), (err: unknown) => err instanceof UnsupportedTokenizerError && re.test((err as Error).message), `${key}: ${JSON.stringify(value)}`);
    }
    const unigram = clone(TOKENIZER_JSON);
    unigram.model = { type: "Unigram", vocab: [["a", 0]], unk_id: 0 };
    assert.throws(() => BertTokenizer.fromJSON(unigram), UnsupportedTokenizerError);
  });

  test("accepts a Sequence of trivial normalizers equivalent to BertNormalizer(lowercase)", () => {
    const j = clone(TOKENIZER_JSON);
    j.normalizer = { type: "Sequence", normalizers: [{ type: "NFD" }, { type: "Lowercase" }, { type: "StripAccents" }] };
    const t = BertTokenizer.fromJSON(j);
    assert.deepEqual(t.tokenize("Café Naïve"), ["cafe", "naive"]);
  });

  test("tokenizer_config do_lower_case=false overrides the normalizer (cased)", () => {
    const cased = BertTokenizer.fromJSON(TOKENIZER_JSON, { ...TOKENIZER_CONFIG, do_lower_case: false });
    assert.deepEqual(cased.tokenize("Hello hello"), ["[UNK]", "hello"]);
  });

  test("TemplateProcessing equivalent to BertProcessing gives identical encodings", () => {
    const j = clone(TOKENIZER_JSON);
    j.post_processor = {
      type: "TemplateProcessing",
      single: [{ SpecialToken: { id: "[CLS]", type_id: 0 } }, { Sequence: { id: "A", type_id: 0 } }, { SpecialToken: { id: "[SEP]", type_id: 0 } }],
      pair: [
        { SpecialToken: { id: "[CLS]", type_id: 0 } },
        { Sequence: { id: "A", type_id: 0 } },
        { SpecialToken: { id: "[SEP]", type_id: 0 } },
        { Sequence: { id: "B", type_id: 1 } },
        { SpecialToken: { id: "[SEP]", type_id: 1 } },
      ],
      special_tokens: {
        "[CLS]": { id: "[CLS]", ids: [101], tokens: ["[CLS]"] },
        "[SEP]": { id: "[SEP]", ids: [102], tokens: ["[SEP]"] },
      },
    };
    const t = BertTokenizer.fromJSON(j, TOKENIZER_CONFIG);
    const opts = { maxLength: 12, truncation: "only_second" as const, stride: 2, returnOverflowing: true };
    const q = "Who wrote Hamlet?";
    const c = "Hamlet is a tragedy written by William Shakespeare around 1600.";
    assert.deepEqual(t.encode(q, c, opts), tok.encode(q, c, opts));
    assert.deepEqual(t.encode(q), tok.encode(q));
    assert.equal(t.clsTokenId, 101);
    assert.equal(t.sepTokenId, 102);
  });
});

describe("BertTokenizer: normalization and offsets", () => {
  test("accents: lowercased, stripped, offsets slice back to the accented originals", () => {
    const text = "Café naïve résumé";
    const e = one(text);
    assert.deepEqual(e.tokens, ["[CLS]", "cafe", "naive", "resume", "[SEP]"]);
    assert.deepEqual(e.ids, [101, 7668, 15743, 13746, 102]);
    assert.deepEqual(e.offsets, [[0, 0], [0, 4], [5, 10], [11, 17], [0, 0]]);
    assert.deepEqual(slices(text, e).slice(1, -1), ["Café", "naïve", "résumé"]);
    assert.deepEqual(e.typeIds, [0, 0, 0, 0, 0]);
    assert.deepEqual(e.attentionMask, [1, 1, 1, 1, 1]);
    assert.deepEqual(e.specialTokensMask, [1, 0, 0, 0, 1]);
    assert.deepEqual(e.sequenceIds, [null, 0, 0, 0, null]);
    assert.deepEqual(e.wordIds, [null, 0, 1, 2, null]);
  });

  test("decomposed accents (NFD input) and sub-word offsets", () => {
    const text = "Re\u0301sume\u0301s playing";
    const e = one(text);
    assert.deepEqual(e.tokens, ["[CLS]", "resume", "##s", "playing", "[SEP]"]);
    // removed combining marks belong to no token (as in HF): the second U+0301 (index 7) is between "resume" and "##s"
    assert.deepEqual(e.offsets, [[0, 0], [0, 7], [8, 9], [10, 17], [0, 0]]);
    assert.deepEqual(slices(text, e).slice(1, -1), ["Re\u0301sume", "s", "playing"]);
  });

  test("'##' pieces slice to the piece without the prefix", () => {
    const text = "unaffable tokenizers";
    const e = one(text);
    assert.deepEqual(e.tokens, ["[CLS]", "una", "##ffa", "##ble", "token", "##izer", "##s", "[SEP]"]);
    assert.deepEqual(e.ids, [101, 14477, 20961, 3468, 19204, 17629, 2015, 102]);
    assert.deepEqual(slices(text, e).slice(1, -1), ["una", "ffa", "ble", "token", "izer", "s"]);
    assert.deepEqual(e.wordIds, [null, 0, 0, 0, 1, 1, 1, null]);
  });

  test("CJK characters are split one per token", () => {
    const text = "我爱北京";
    const e = one(text);
    assert.deepEqual(e.tokens, ["[CLS]", "我", "[UNK]", "北", "京", "[SEP]"]);
    assert.deepEqual(e.ids, [101, 1855, 100, 1781, 1755, 102]);
    assert.deepEqual(e.offsets, [[0, 0], [0, 1], [1, 2], [2, 3], [3, 4], [0, 0]]);
    assert.deepEqual(e.wordIds, [null, 0, 1, 2, 3, null]);
    // CJK Extension B (astral, 2 UTF-16 units) is isolated too
    const astral = one("\u{20000}x");
    assert.deepEqual(astral.tokens, ["[CLS]", "[UNK]", "x", "[SEP]"]);
    assert.deepEqual(astral.offsets, [[0, 0], [0, 2], [2, 3], [0, 0]]);
  });

  test("emoji: unknown, with UTF-16 offsets", () => {
    const text = "I love 🤗 tokenizers 👍🏽!";
    const e = one(text);
    assert.deepEqual(e.tokens, ["[CLS]", "i", "love", "[UNK]", "token", "##izer", "##s", "[UNK]", "!", "[SEP]"]);
    assert.deepEqual(e.ids, [101, 1045, 2293, 100, 19204, 17629, 2015, 100, 999, 102]);
    assert.deepEqual(e.offsets, [[0, 0], [0, 1], [2, 6], [7, 9], [10, 15], [15, 19], [19, 20], [21, 25], [25, 26], [0, 0]]);
    assert.deepEqual(slices(text, e).slice(1, -1), ["I", "love", "🤗", "token", "izer", "s", "👍🏽", "!"]);
  });

  test("control characters, \\u0000 and \\ufffd are removed; words join across them", () => {
    const text = "a\u0000b\ufffd c\u200bd\u00a0e";
    const e = one(text);
    assert.deepEqual(e.tokens, ["[CLS]", "ab", "cd", "e", "[SEP]"]);
    assert.deepEqual(e.ids, [101, 11113, 3729, 1041, 102]);
    assert.deepEqual(e.offsets, [[0, 0], [0, 3], [5, 8], [9, 10], [0, 0]]);
    assert.deepEqual(slices(text, e).slice(1, -1), ["a\u0000b", "c\u200bd", "e"]);

    // \v, \f, U+001F, DEL and NEL are control characters (removed), not whitespace
    const text2 = "a\u0007b\u000bc\u001fd\u007fe\u0085f";
    const e2 = one(text2);
    assert.deepEqual(e2.tokens, ["[CLS]", "abc", "##de", "##f", "[SEP]"]);
    assert.deepEqual(e2.offsets, [[0, 0], [0, 5], [6, 9], [10, 11], [0, 0]]);

    // nothing left → only the special tokens
    assert.deepEqual(one("\u0000\u200b\ufffd").tokens, ["[CLS]", "[SEP]"]);
    assert.deepEqual(one("").ids, [101, 102]);
  });

  test("zero-width characters and odd whitespace", () => {
    const text = "\u3000hello\u2003world\t\n\ufeffBOM\u200b";
    const e = one(text);
    assert.deepEqual(e.tokens, ["[CLS]", "hello", "world", "bo", "##m", "[SEP]"]);
    assert.deepEqual(e.ids, [101, 7592, 2088, 8945, 2213, 102]);
    assert.deepEqual(e.offsets, [[0, 0], [1, 6], [7, 12], [15, 17], [17, 18], [0, 0]]);
    const e2 = one("x\r\ny\u2028z\u202fw");
    assert.deepEqual(e2.tokens, ["[CLS]", "x", "y", "z", "w", "[SEP]"]);
    assert.deepEqual(e2.offsets, [[0, 0], [0, 1], [3, 4], [5, 6], [7, 8], [0, 0]]);
  });

  test("a 200-character word becomes one [UNK] covering the whole word", () => {
    const text = `x${"a".repeat(199)} ok`;
    const e = one(text);
    assert.deepEqual(e.tokens, ["[CLS]", "[UNK]", "ok", "[SEP]"]);
    assert.deepEqual(e.ids, [101, 100, 7929, 102]);
    assert.deepEqual(e.offsets, [[0, 0], [0, 200], [201, 203], [0, 0]]);
    assert.deepEqual(e.wordIds, [null, 0, 1, null]);
  });

  test("punctuation: ASCII and Unicode P* are isolated", () => {
    const text = "Hello, world... (really?) ¿Qué? — «quote» 1,000.5%";
    const e = one(text);
    assert.deepEqual(e.tokens, [
      "[CLS]", "hello", ",", "world", ".", ".", ".", "(", "really", "?", ")", "¿", "que", "?", "—", "«", "quote", "»",
      "1", ",", "000", ".", "5", "%", "[SEP]",
    ]);
    assert.deepEqual(e.ids, [
      101, 7592, 1010, 2088, 1012, 1012, 1012, 1006, 2428, 1029, 1007, 1094, 10861, 1029, 1517, 1077, 14686, 1090, 1015,
      1010, 2199, 1012, 1019, 1003, 102,
    ]);
    assert.deepEqual(e.offsets, [
      [0, 0], [0, 5], [5, 6], [7, 12], [12, 13], [13, 14], [14, 15], [16, 17], [17, 23], [23, 24], [24, 25], [26, 27],
      [27, 30], [30, 31], [32, 33], [34, 35], [35, 40], [40, 41], [42, 43], [43, 44], [44, 47], [47, 48], [48, 49],
      [49, 50], [0, 0],
    ]);
  });

  test("lowercase is per code point (no final sigma), ß is kept", () => {
    const e = one("ΣΑΣ Straße");
    assert.deepEqual(e.tokens, ["[CLS]", "σ", "##α", "##σ", "st", "##raße", "[SEP]"]);
    assert.deepEqual(e.offsets, [[0, 0], [0, 1], [1, 2], [2, 3], [4, 6], [6, 10], [0, 0]]);
  });

  test("lowercase that changes length (İ → i + U+0307) keeps offsets on the original char", () => {
    const t = BertTokenizer.fromJSON(tinyJson(), { strip_accents: false });
    const text = "İx";
    const e = t.encode(text)[0];
    assert.deepEqual(e.tokens, ["[CLS]", "i", "##\u0307", "##x", "[SEP]"]);
    assert.deepEqual(e.offsets, [[0, 0], [0, 1], [0, 1], [1, 2], [0, 0]]);
    // with accent stripping (default for uncased) the dot disappears
    assert.deepEqual(BertTokenizer.fromJSON(tinyJson()).tokenize(text), ["i", "##x"]);
  });
});

describe("BertTokenizer: added tokens", () => {
  test("[MASK] inside text is kept as one token, matched before normalization", () => {
    const text = "Paris is the [MASK] of France.";
    const e = one(text);
    assert.deepEqual(e.tokens, ["[CLS]", "paris", "is", "the", "[MASK]", "of", "france", ".", "[SEP]"]);
    assert.deepEqual(e.ids, [101, 3000, 2003, 1996, 103, 1997, 2605, 1012, 102]);
    assert.deepEqual(e.offsets, [[0, 0], [0, 5], [6, 8], [9, 12], [13, 19], [20, 22], [23, 29], [29, 30], [0, 0]]);
    assert.deepEqual(e.wordIds, [null, 0, 1, 2, 3, 4, 5, 6, null]);
    assert.deepEqual(e.specialTokensMask, [1, 0, 0, 0, 0, 0, 0, 0, 1]);
    // normalized:false → case sensitive; adjacent matches; glued to a word
    const e2 = one("[mask] [MASK][MASK]x");
    assert.deepEqual(e2.tokens, ["[CLS]", "[", "mask", "]", "[MASK]", "[MASK]", "x", "[SEP]"]);
    assert.deepEqual(e2.offsets, [[0, 0], [0, 1], [1, 5], [5, 6], [7, 13], [13, 19], [19, 20], [0, 0]]);
  });

  test("lstrip / rstrip / single_word / normalized added tokens", () => {
    const j = tinyJson();
    j.added_tokens.push({ id: 9, content: "<m>", single_word: true, lstrip: true, rstrip: true, normalized: false, special: true });
    const t = BertTokenizer.fromJSON(j);
    const text = "hello <m> world x<m> <m>!";
    const e = t.encode(text, undefined, { addSpecialTokens: false })[0];
    // "x<m>" is not a single word → not matched; its pieces "<", "m", ">" are unknown in the tiny vocab
    assert.deepEqual(e.tokens, ["hello", "<m>", "world", "x", "[UNK]", "[UNK]", "[UNK]", "<m>", "!"]);
    // the stripped whitespace is part of the added token's span (as in HF)
    assert.deepEqual(e.offsets, [[0, 5], [5, 10], [10, 15], [16, 17], [17, 18], [18, 19], [19, 20], [20, 24], [24, 25]]);

    const k = tinyJson();
    k.added_tokens.push({ id: 13, content: "HELLO", single_word: false, lstrip: false, rstrip: false, normalized: true, special: false });
    const t2 = BertTokenizer.fromJSON(k);
    // normalized:true → matched against the normalized (lowercased) text
    const e2 = t2.encode("xHeLLo!", undefined, { addSpecialTokens: false })[0];
    assert.deepEqual(e2.tokens, ["x", "HELLO", "!"]);
    assert.deepEqual(e2.ids, [8, 13, 12]);
    assert.deepEqual(e2.offsets, [[0, 1], [1, 6], [6, 7]]);
  });
});

describe("BertTokenizer: pairs, truncation, overflow", () => {
  test("pair encoding: type ids, sequence ids, per-sequence offsets", () => {
    const e = one("Who wrote it?", "It was written by Shakespeare.");
    assert.deepEqual(e.tokens, ["[CLS]", "who", "wrote", "it", "?", "[SEP]", "it", "was", "written", "by", "shakespeare", ".", "[SEP]"]);
    assert.deepEqual(e.ids, [101, 2040, 2626, 2009, 1029, 102, 2009, 2001, 2517, 2011, 8101, 1012, 102]);
    assert.deepEqual(e.typeIds, [0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1]);
    assert.deepEqual(e.sequenceIds, [null, 0, 0, 0, 0, null, 1, 1, 1, 1, 1, 1, null]);
    assert.deepEqual(e.offsets, [[0, 0], [0, 3], [4, 9], [10, 12], [12, 13], [0, 0], [0, 2], [3, 6], [7, 14], [15, 17], [18, 29], [29, 30], [0, 0]]);
    assert.deepEqual(e.wordIds, [null, 0, 1, 2, 3, null, 0, 1, 2, 3, 4, 5, null]);
    assert.deepEqual(e.specialTokensMask, [1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 1]);
    assert.deepEqual(tok.encode("", "")[0].tokens, ["[CLS]", "[SEP]", "[SEP]"]);
    const raw = tok.encode("a b", "c", { addSpecialTokens: false })[0];
    assert.deepEqual(raw.tokens, ["a", "b", "c"]);
    assert.deepEqual(raw.typeIds, [0, 0, 1]);
    assert.deepEqual(raw.sequenceIds, [0, 0, 1]);
  });

  test("single sequence truncation counts the special tokens", () => {
    const encs = tok.encode("one two three four five six seven", undefined, { maxLength: 5 });
    assert.equal(encs.length, 1);
    assert.deepEqual(encs[0].tokens, ["[CLS]", "one", "two", "three", "[SEP]"]);
    assert.deepEqual(encs[0].offsets, [[0, 0], [0, 3], [4, 7], [8, 13], [0, 0]]);
    // maxLength larger than the input → untouched
    assert.equal(tok.encode("one two", undefined, { maxLength: 512 })[0].ids.length, 4);
    // without special tokens the whole budget goes to the text
    assert.deepEqual(tok.encode("one two three four", undefined, { maxLength: 3, addSpecialTokens: false })[0].tokens, ["one", "two", "three"]);
  });

  test("longest_first (default) truncates the longer sequence first, then both", () => {
    // A = 4 tokens, B = 6 tokens, budget 9 - 3 = 6 → 3 + 3
    const e = tok.encode("a b c d", "e f g h i j", { maxLength: 9 })[0];
    assert.deepEqual(e.tokens, ["[CLS]", "a", "b", "c", "[SEP]", "e", "f", "g", "[SEP]"]);
    // budget 10 - 3 = 7: n1 = 4, n2 = max(4, 7 - 4) = 4 → 8 > 7 → n1 = 7 / 2 = 3, n2 = 3 + 7 % 2 = 4
    const e2 = tok.encode("a b c d", "e f g h i j", { maxLength: 10 })[0];
    assert.deepEqual(e2.tokens, ["[CLS]", "a", "b", "c", "[SEP]", "e", "f", "g", "h", "[SEP]"]);
    // budget 11 - 3 = 8 → A short enough: 4 + 4
    const e3 = tok.encode("a b", "e f g h i j k l m", { maxLength: 11 })[0];
    assert.deepEqual(e3.tokens, ["[CLS]", "a", "b", "[SEP]", "e", "f", "g", "h", "i", "j", "[SEP]"]);
  });

  test("only_first and only_second", () => {
    const f = tok.encode("a b c d", "e f g h i j", { maxLength: 11, truncation: "only_first" })[0];
    assert.deepEqual(f.tokens, ["[CLS]", "a", "b", "[SEP]", "e", "f", "g", "h", "i", "j", "[SEP]"]);
    assert.deepEqual(f.typeIds, [0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1]);
    const s = tok.encode("a b c d", "e f g h i j", { maxLength: 9, truncation: "only_second" })[0];
    assert.deepEqual(s.tokens, ["[CLS]", "a", "b", "c", "d", "[SEP]", "e", "f", "[SEP]"]);
    assert.deepEqual(s.offsets, [[0, 0], [0, 1], [2, 3], [4, 5], [6, 7], [0, 0], [0, 1], [2, 3], [0, 0]]);
  });

  test("strategies that cannot fit throw clear errors", () => {
    // the question alone (6 tokens + 3 specials) exceeds maxLength 8
    assert.throws(() => tok.encode("a b c d e f", "x y", { maxLength: 8, truncation: "only_second" }), /only_second.*second sequence has 2 tokens but 3 must be removed/);
    assert.throws(() => tok.encode("a b c d", "e f g h i j", { maxLength: 9, truncation: "only_first" }), /only_first/);
    assert.throws(() => tok.encode("a b c", undefined, { maxLength: 3, truncation: "only_second" }), /requires a second sequence/);
    assert.throws(() => tok.encode("a b c d e", undefined, { maxLength: 4, stride: 2, returnOverflowing: true }), /stride \(2\) must be smaller/);
    assert.throws(() => tok.encode("a b", undefined, { maxLength: 2 }), /greater than the 2 special tokens/);
  });

  test("overflowing windows of a single sequence overlap by `stride`", () => {
    const text = "one two three four five six seven";
    const encs = tok.encode(text, undefined, { maxLength: 5, stride: 1, returnOverflowing: true });
    assert.deepEqual(encs.map((e) => e.tokens), [
      ["[CLS]", "one", "two", "three", "[SEP]"],
      ["[CLS]", "three", "four", "five", "[SEP]"],
      ["[CLS]", "five", "six", "seven", "[SEP]"],
    ]);
    assert.deepEqual(encs[1].offsets, [[0, 0], [8, 13], [14, 18], [19, 23], [0, 0]]);
    assert.deepEqual(encs[2].wordIds, [null, 4, 5, 6, null]);
    // without returnOverflowing only the first window comes back
    assert.equal(tok.encode(text, undefined, { maxLength: 5, stride: 1 }).length, 1);
  });

  test("QA windows: full question + context window, stride overlap, offsets into the context", () => {
    const question = "Who wrote Hamlet?";
    const context = "Hamlet is a tragedy written by William Shakespeare around 1600.";
    // budget 12 - 3 specials - 4 question tokens = 5 context tokens per window; step 5 - 2 = 3
    const encs = tok.encode(question, context, { maxLength: 12, truncation: "only_second", stride: 2, returnOverflowing: true });
    assert.equal(encs.length, 3);
    const q = ["[CLS]", "who", "wrote", "hamlet", "?", "[SEP]"];
    assert.deepEqual(encs[0].tokens, [...q, "hamlet", "is", "a", "tragedy", "written", "[SEP]"]);
    assert.deepEqual(encs[1].tokens, [...q, "tragedy", "written", "by", "william", "shakespeare", "[SEP]"]);
    assert.deepEqual(encs[2].tokens, [...q, "william", "shakespeare", "around", "1600", ".", "[SEP]"]);
    for (const e of encs) {
      assert.equal(e.ids.length, 12);
      assert.deepEqual(e.typeIds, [0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1]);
      assert.deepEqual(e.sequenceIds, [null, 0, 0, 0, 0, null, 1, 1, 1, 1, 1, null]);
      assert.deepEqual(e.offsets.slice(0, 6), [[0, 0], [0, 3], [4, 9], [10, 16], [16, 17], [0, 0]]);
    }
    assert.deepEqual(encs[1].offsets.slice(6), [[12, 19], [20, 27], [28, 30], [31, 38], [39, 50], [0, 0]]);
    assert.deepEqual(encs[2].offsets.slice(6), [[31, 38], [39, 50], [51, 57], [58, 62], [62, 63], [0, 0]]);
    assert.deepEqual(encs[2].wordIds.slice(6), [6, 7, 8, 9, 10, null]);
    assert.equal(context.slice(...encs[2].offsets[7]), "Shakespeare");
  });

  test("both sequences overflowing: window order follows HF Encoding::merge_with", () => {
    // A windows (max 3, stride 1): [a b c] [c d]; B windows: [e f g] [g h i] [i j]
    const encs = tok.encode("a b c d", "e f g h i j", { maxLength: 9, stride: 1, returnOverflowing: true });
    assert.deepEqual(encs.map((e) => e.tokens.join(" ")), [
      "[CLS] a b c [SEP] e f g [SEP]",
      "[CLS] c d [SEP] e f g [SEP]",
      "[CLS] c d [SEP] g h i [SEP]",
      "[CLS] c d [SEP] i j [SEP]",
      "[CLS] a b c [SEP] g h i [SEP]",
      "[CLS] a b c [SEP] i j [SEP]",
    ]);
  });
});

describe("BertTokenizer: tokenize and decode", () => {
  test("tokenize returns word pieces without special tokens", () => {
    assert.deepEqual(tok.tokenize("don't go, it is great!"), ["don", "'", "t", "go", ",", "it", "is", "great", "!"]);
  });

  test("decode glues '##' pieces and cleans up tokenization spaces", () => {
    const ids = [101, 19204, 17629, 2015, 2024, 4569, 1012, 102];
    assert.equal(tok.decode(ids), "[CLS] tokenizers are fun. [SEP]");
    assert.equal(tok.decode(ids, { skipSpecialTokens: true }), "tokenizers are fun.");
    const ids2 = [2123, 1005, 1056, 2175, 1010, 2009, 2003, 2307, 999];
    assert.equal(tok.decode(ids2), "don't go, it is great!");
    assert.equal(tok.decode(ids2, { cleanUpTokenizationSpaces: false }), "don ' t go , it is great !");
    // a leading "##" piece keeps its prefix (nothing to glue to); unknown ids are skipped
    assert.equal(tok.decode([2015, 19204, 1e9, 2015]), "##s tokens");
    assert.equal(tok.decode([]), "");
  });
});
