/**
 * BERT WordPiece tokenizer driven by a Hugging Face `tokenizer.json`.
 *
 * A dependency-free TypeScript port of the parts of huggingface/tokenizers
 * (Rust) that BERT-family checkpoints use:
 *
 *   added tokens → BertNormalizer → BertPreTokenizer → WordPiece
 *   → truncation (+ overflow windows) → BertProcessing / TemplateProcessing
 *   and the WordPiece decoder.
 *
 * It imports nothing platform specific, so it runs unchanged on Node,
 * Cloudflare Workers, Deno and browsers.
 *
 * OFFSETS: every offset is a pair of JavaScript string (UTF-16 code unit)
 * indices into the ORIGINAL input, so `text.slice(start, end)` is the
 * token's source text. Hugging Face Python reports code-point offsets (and
 * Rust byte offsets); for text made only of BMP characters (everything but
 * astral characters such as most emoji) UTF-16 and code-point offsets are
 * identical. This difference is intentional. Special tokens added by the
 * post-processor get (0, 0).
 *
 * Known, deliberate deviations from the Rust implementation:
 * - Unicode tables are the JavaScript engine's (usually newer than the Rust
 *   crates'), which only matters for code points assigned recently.
 * - NFD (accent stripping) is applied character by character; canonical
 *   reordering of combining marks across characters is not performed (it is
 *   irrelevant here since non-spacing marks are removed afterwards).
 * - `maxLength` smaller than or equal to the number of special tokens the
 *   post-processor adds throws instead of producing degenerate windows.
 * - An added token's `tokens[]` entry is its content, even when lstrip/rstrip
 *   made its offsets cover the stripped whitespace (as HF offsets do).
 * - The `truncation` / `padding` sections of tokenizer.json are ignored:
 *   truncation is requested per call through `EncodeOptions`, padding is the
 *   batching layer's job.
 */

export class UnsupportedTokenizerError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "UnsupportedTokenizerError";
  }
}

export type TruncationStrategy = "longest_first" | "only_first" | "only_second";

export interface EncodeOptions {
  /** Add the post-processor's special tokens ([CLS], [SEP], ...). Default true. */
  addSpecialTokens?: boolean;
  /** Total length including special tokens; undefined = no truncation. */
  maxLength?: number;
  /** Default "longest_first" when maxLength is set. */
  truncation?: TruncationStrategy;
  /** Overlap, in tokens, between consecutive overflow windows (HF `stride`). */
  stride?: number;
  /** Return the overflowing windows after the first one. Default false. */
  returnOverflowing?: boolean;
}

export interface Encoding {
  ids: number[];
  tokens: string[];
  typeIds: number[];
  attentionMask: number[];
  /** UTF-16 offsets into the original text of the token's own sequence. */
  offsets: [number, number][];
  /** Which input each token came from (null for post-processor special tokens). */
  sequenceIds: (0 | 1 | null)[];
  /** Index of the pre-tokenized word within its sequence. */
  wordIds: (number | null)[];
  specialTokensMask: number[];
}

// ---------------------------------------------------------------------------
// Character classes (mirroring the Rust definitions)
// ---------------------------------------------------------------------------

/** Rust `char::is_whitespace` (Unicode White_Space). Note: JS `\s` differs (it includes U+FEFF). */
function isUnicodeWhitespace(cp: number): boolean {
  if (cp < 0x80) return cp === 0x20 || (cp >= 0x09 && cp <= 0x0d);
  return (
    cp === 0x85 ||
    cp === 0xa0 ||
    cp === 0x1680 ||
    (cp >= 0x2000 && cp <= 0x200a) ||
    cp === 0x2028 ||
    cp === 0x2029 ||
    cp === 0x202f ||
    cp === 0x205f ||
    cp === 0x3000
  );
}

/** normalizers/bert.rs `is_whitespace`: \t \n \r or Unicode whitespace. */
function isBertWhitespace(cp: number): boolean {
  return cp === 0x09 || cp === 0x0a || cp === 0x0d || isUnicodeWhitespace(cp);
}

const OTHER_RE = /^[\p{Cc}\p{Cf}\p{Cn}\p{Co}\p{Cs}]$/u;
/** normalizers/bert.rs `is_control`: general category C* except \t \n \r. */
function isBertControl(cp: number, ch: string): boolean {
  if (cp === 0x09 || cp === 0x0a || cp === 0x0d) return false;
  if (cp < 0x80) return cp < 0x20 || cp === 0x7f;
  return OTHER_RE.test(ch);
}

/** normalizers/bert.rs `is_chinese_char` (ranges copied verbatim, incl. 0x2B920). */
function isChineseChar(cp: number): boolean {
  return (
    (cp >= 0x4e00 && cp <= 0x9fff) ||
    (cp >= 0x3400 && cp <= 0x4dbf) ||
    (cp >= 0x20000 && cp <= 0x2a6df) ||
    (cp >= 0x2a700 && cp <= 0x2b73f) ||
    (cp >= 0x2b740 && cp <= 0x2b81f) ||
    (cp >= 0x2b920 && cp <= 0x2ceaf) ||
    (cp >= 0xf900 && cp <= 0xfaff) ||
    (cp >= 0x2f800 && cp <= 0x2fa1f)
  );
}

const PUNCT_RE = /^\p{P}$/u;
/** pre_tokenizers/bert.rs `is_bert_punc`: ASCII punctuation or Unicode P*. */
function isBertPunctuation(cp: number, ch: string): boolean {
  if (cp < 0x80) {
    return (cp >= 0x21 && cp <= 0x2f) || (cp >= 0x3a && cp <= 0x40) || (cp >= 0x5b && cp <= 0x60) || (cp >= 0x7b && cp <= 0x7e);
  }
  return PUNCT_RE.test(ch);
}

const MN_RE = /\p{Mn}/gu;
/** Rust regex `\w` (Unicode word character), used for added tokens' single_word. */
const WORD_CHAR_RE = /^[\p{Alphabetic}\p{M}\p{Nd}\p{Pc}\p{Join_Control}]$/u;

function isWordCharAt(text: string, index: number): boolean {
  const cp = text.codePointAt(index)!;
  return WORD_CHAR_RE.test(String.fromCodePoint(cp));
}
function isWordCharBefore(text: string, index: number): boolean {
  let i = index - 1;
  const c = text.charCodeAt(i);
  if (c >= 0xdc00 && c <= 0xdfff && i > 0) {
    const h = text.charCodeAt(i - 1);
    if (h >= 0xd800 && h <= 0xdbff) i -= 1;
  }
  return isWordCharAt(text, i);
}

// ---------------------------------------------------------------------------
// Normalization: every supported normalizer is character-local, so the whole
// pipeline is a function from one input code point to an output string. This
// is what makes offset alignment exact: every output character maps back to
// the input character it came from.
// ---------------------------------------------------------------------------

type CharStep = (ch: string, cp: number) => string;

const lowercaseStep: CharStep = (ch, cp) => {
  if (cp < 0x80) return cp >= 0x41 && cp <= 0x5a ? String.fromCharCode(cp + 32) : ch;
  // Per code point (Rust char::to_lowercase), never context-sensitive (no final sigma).
  let out = "";
  for (const c of ch) out += c.toLowerCase();
  return out;
};
const nfdStep: CharStep = (ch, cp) => (cp < 0x80 ? ch : ch.normalize("NFD"));
const nfkdStep: CharStep = (ch, cp) => (cp < 0x80 ? ch : ch.normalize("NFKD"));
const stripMarksStep: CharStep = (ch, cp) => (cp < 0x300 ? ch : ch.replace(MN_RE, ""));
const cleanTextStep: CharStep = (ch) => {
  let out = "";
  for (const c of ch) {
    const cp = c.codePointAt(0)!;
    if (cp === 0 || cp === 0xfffd || isBertControl(cp, c)) continue;
    out += isBertWhitespace(cp) ? " " : c;
  }
  return out;
};
const chineseStep: CharStep = (ch) => {
  let out = "";
  for (const c of ch) out += isChineseChar(c.codePointAt(0)!) ? ` ${c} ` : c;
  return out;
};

function asRecord(value: unknown, what: string): Record<string, unknown> {
  if (value === null || typeof value !== "object" || Array.isArray(value)) {
    throw new UnsupportedTokenizerError(`${what} must be a JSON object`);
  }
  return value as Record<string, unknown>;
}

interface BertNormalizerFlags {
  clean_text: boolean;
  handle_chinese_chars: boolean;
  strip_accents: boolean | null;
  lowercase: boolean;
}

function bertNormalizerSteps(flags: BertNormalizerFlags): CharStep[] {
  const steps: CharStep[] = [];
  if (flags.clean_text) steps.push(cleanTextStep);
  if (flags.handle_chinese_chars) steps.push(chineseStep);
  // Rust: strip_accents.unwrap_or(lowercase); strip = NFD then drop Mn.
  if (flags.strip_accents ?? flags.lowercase) steps.push(nfdStep, stripMarksStep);
  if (flags.lowercase) steps.push(lowercaseStep);
  return steps;
}

function readBertNormalizerFlags(cfg: Record<string, unknown>): BertNormalizerFlags {
  const bool = (v: unknown, d: boolean) => (typeof v === "boolean" ? v : d);
  const sa = cfg.strip_accents;
  return {
    clean_text: bool(cfg.clean_text, true),
    handle_chinese_chars: bool(cfg.handle_chinese_chars, true),
    strip_accents: typeof sa === "boolean" ? sa : null,
    lowercase: bool(cfg.lowercase, true),
  };
}

function normalizerSteps(cfg: unknown, overrides: Partial<BertNormalizerFlags>): CharStep[] {
  if (cfg === null || cfg === undefined) return [];
  const n = asRecord(cfg, "normalizer");
  switch (n.type) {
    case "BertNormalizer":
      return bertNormalizerSteps({ ...readBertNormalizerFlags(n), ...overrides });
    case "Lowercase":
      return [lowercaseStep];
    case "StripAccents":
      return [stripMarksStep];
    case "NFD":
      return [nfdStep];
    case "NFKD":
      return [nfkdStep];
    case "Sequence": {
      const list = n.normalizers;
      if (!Array.isArray(list)) throw new UnsupportedTokenizerError("normalizer Sequence without a `normalizers` array");
      return list.flatMap((x) => normalizerSteps(x, overrides));
    }
    default:
      throw new UnsupportedTokenizerError(
        `Unsupported normalizer type ${JSON.stringify(n.type)} (supported: BertNormalizer, or a Sequence of BertNormalizer/Lowercase/StripAccents/NFD/NFKD)`,
      );
  }
}

// ---------------------------------------------------------------------------
// Post-processors
// ---------------------------------------------------------------------------

type Piece =
  | { kind: "seq"; seq: 0 | 1; typeId: number }
  | { kind: "special"; ids: number[]; tokens: string[]; typeId: number };

interface PostProcessor {
  single: Piece[];
  pair: Piece[];
  /** BertProcessing keeps the natural type ids (0/1) when special tokens are off. */
  templateTypeIdsWithoutSpecials: boolean;
}

function countAdded(pieces: Piece[]): number {
  let n = 0;
  for (const p of pieces) if (p.kind === "special") n += p.ids.length;
  return n;
}

function parsePostProcessor(cfg: unknown): PostProcessor {
  const plain: PostProcessor = {
    single: [{ kind: "seq", seq: 0, typeId: 0 }],
    pair: [
      { kind: "seq", seq: 0, typeId: 0 },
      { kind: "seq", seq: 1, typeId: 1 },
    ],
    templateTypeIdsWithoutSpecials: false,
  };
  if (cfg === null || cfg === undefined) return plain;
  const p = asRecord(cfg, "post_processor");
  if (p.type === "BertProcessing") {
    const tok = (v: unknown, name: string): { ids: number[]; tokens: string[] } => {
      if (!Array.isArray(v) || typeof v[0] !== "string" || typeof v[1] !== "number") {
        throw new UnsupportedTokenizerError(`BertProcessing.${name} must be [token, id]`);
      }
      return { ids: [v[1]], tokens: [v[0]] };
    };
    const cls = tok(p.cls, "cls");
    const sep = tok(p.sep, "sep");
    return {
      single: [{ kind: "special", ...cls, typeId: 0 }, { kind: "seq", seq: 0, typeId: 0 }, { kind: "special", ...sep, typeId: 0 }],
      pair: [
        { kind: "special", ...cls, typeId: 0 },
        { kind: "seq", seq: 0, typeId: 0 },
        { kind: "special", ...sep, typeId: 0 },
        { kind: "seq", seq: 1, typeId: 1 },
        { kind: "special", ...sep, typeId: 1 },
      ],
      templateTypeIdsWithoutSpecials: false,
    };
  }
  if (p.type === "TemplateProcessing") {
    const specials = asRecord(p.special_tokens ?? {}, "TemplateProcessing.special_tokens");
    const parse = (tpl: unknown, name: string): Piece[] => {
      if (!Array.isArray(tpl)) throw new UnsupportedTokenizerError(`TemplateProcessing.${name} must be an array`);
      return tpl.map((raw): Piece => {
        const item = asRecord(raw, `TemplateProcessing.${name} piece`);
        if (item.Sequence !== undefined) {
          const s = asRecord(item.Sequence, "Sequence piece");
          if (s.id !== "A" && s.id !== "B") throw new UnsupportedTokenizerError(`Unknown template sequence ${JSON.stringify(s.id)}`);
          return { kind: "seq", seq: s.id === "A" ? 0 : 1, typeId: Number(s.type_id ?? 0) };
        }
        if (item.SpecialToken !== undefined) {
          const s = asRecord(item.SpecialToken, "SpecialToken piece");
          const id = String(s.id);
          const def = specials[id];
          if (def === undefined) throw new UnsupportedTokenizerError(`TemplateProcessing: missing special token ${JSON.stringify(id)}`);
          const d = asRecord(def, `special token ${id}`);
          const ids = d.ids as number[];
          const tokens = d.tokens as string[];
          if (!Array.isArray(ids) || !Array.isArray(tokens) || ids.length !== tokens.length) {
            throw new UnsupportedTokenizerError(`TemplateProcessing: malformed special token ${JSON.stringify(id)}`);
          }
          return { kind: "special", ids: [...ids], tokens: [...tokens], typeId: Number(s.type_id ?? 0) };
        }
        throw new UnsupportedTokenizerError(`TemplateProcessing: unknown piece ${JSON.stringify(raw)}`);
      });
    };
    const single = parse(p.single, "single");
    const pair = parse(p.pair, "pair");
    if (!pair.some((x) => x.kind === "seq" && x.seq === 0) || !pair.some((x) => x.kind === "seq" && x.seq === 1)) {
      throw new UnsupportedTokenizerError("TemplateProcessing: template for `pair` must use both sequences");
    }
    return { single, pair, templateTypeIdsWithoutSpecials: true };
  }
  throw new UnsupportedTokenizerError(
    `Unsupported post_processor type ${JSON.stringify(p.type)} (supported: BertProcessing, TemplateProcessing)`,
  );
}

// ---------------------------------------------------------------------------
// Added tokens
// ---------------------------------------------------------------------------

interface AddedToken {
  id: number;
  content: string;
  singleWord: boolean;
  lstrip: boolean;
  rstrip: boolean;
  normalized: boolean;
  special: boolean;
}

/** Leftmost-longest literal matcher (what aho-corasick LeftmostLongest does). */
class AddedTokenMatcher {
  private readonly byFirstUnit = new Map<number, { pattern: string; token: AddedToken }[]>();
  /** Any first unit of a pattern: finds the next candidate without a lookup per character. */
  private readonly candidate: RegExp;
  readonly empty: boolean;

  constructor(entries: { pattern: string; token: AddedToken }[]) {
    for (const e of entries) {
      if (e.pattern.length === 0) continue;
      const k = e.pattern.charCodeAt(0);
      let list = this.byFirstUnit.get(k);
      if (!list) this.byFirstUnit.set(k, (list = []));
      list.push(e);
    }
    for (const list of this.byFirstUnit.values()) list.sort((a, b) => b.pattern.length - a.pattern.length);
    this.empty = this.byFirstUnit.size === 0;
    const units = [...this.byFirstUnit.keys()].map((k) => `\\u${k.toString(16).padStart(4, "0")}`);
    this.candidate = new RegExp(`[${units.join("")}]`, "g");
  }

  /**
   * added_vocabulary.rs `find_matches`: returns [start, stop, token] spans in
   * `text` (UTF-16 indices), honoring single_word / lstrip / rstrip.
   */
  find(text: string): [number, number, AddedToken][] {
    const out: [number, number, AddedToken][] = [];
    if (this.empty) return out;
    let startOffset = 0;
    let i = 0;
    const n = text.length;
    while (i < n) {
      this.candidate.lastIndex = i;
      if (!this.candidate.exec(text)) break;
      i = this.candidate.lastIndex - 1;
      const list = this.byFirstUnit.get(text.charCodeAt(i));
      let hit: { pattern: string; token: AddedToken } | undefined;
      if (list) {
        for (const e of list) {
          if (text.startsWith(e.pattern, i)) {
            hit = e;
            break;
          }
        }
      }
      if (!hit) {
        i++;
        continue;
      }
      let start = i;
      let stop = i + hit.pattern.length;
      i = stop; // non-overlapping iteration resumes after the raw match
      const tok = hit.token;
      if (tok.singleWord) {
        const startSpace = start === 0 || !isWordCharBefore(text, start);
        const stopSpace = stop === n || !isWordCharAt(text, stop);
        if (!startSpace || !stopSpace) continue;
      }
      if (tok.lstrip) {
        let s = start;
        while (s > 0 && isUnicodeWhitespace(text.charCodeAt(s - 1))) s--;
        start = Math.max(s, startOffset);
      }
      if (tok.rstrip) {
        while (stop < n && isUnicodeWhitespace(text.charCodeAt(stop))) stop++;
        i = stop;
      }
      out.push([start, stop, tok]);
      startOffset = stop;
    }
    return out;
  }
}

// ---------------------------------------------------------------------------
// Internal per-sequence encoding (before truncation / post-processing)
// ---------------------------------------------------------------------------

interface RawEncoding {
  ids: number[];
  tokens: string[];
  offsets: [number, number][];
  wordIds: number[];
}

function sliceRaw(e: RawEncoding, start: number, stop: number): RawEncoding {
  return {
    ids: e.ids.slice(start, stop),
    tokens: e.tokens.slice(start, stop),
    offsets: e.offsets.slice(start, stop),
    wordIds: e.wordIds.slice(start, stop),
  };
}

const EMPTY_RAW: RawEncoding = { ids: [], tokens: [], offsets: [], wordIds: [] };

/**
 * encoding.rs `Encoding::truncate` (direction Right): the first window plus
 * the overflowing windows, consecutive windows overlapping by `stride`.
 */
function truncateRaw(e: RawEncoding, maxLen: number, stride: number): RawEncoding[] {
  const len = e.ids.length;
  if (maxLen >= len) return [e];
  if (maxLen === 0) return [EMPTY_RAW, e];
  if (stride >= maxLen) {
    throw new Error(
      `Truncation error: stride (${stride}) must be smaller than the number of tokens kept for the truncated sequence (${maxLen})`,
    );
  }
  const step = maxLen - stride;
  const windows: RawEncoding[] = [];
  for (let start = 0; start < len; start += step) {
    const stop = Math.min(start + maxLen, len);
    windows.push(sliceRaw(e, start, stop));
    if (stop === len) break;
  }
  return windows;
}

/** utils/truncation.rs `truncate_encodings`. Returns window lists for A and B. */
function truncateEncodings(
  a: RawEncoding,
  b: RawEncoding | undefined,
  maxLength: number,
  strategy: TruncationStrategy,
  stride: number,
): [RawEncoding[], RawEncoding[] | undefined] {
  const total = a.ids.length + (b ? b.ids.length : 0);
  if (total <= maxLength) return [[a], b ? [b] : undefined];
  const toRemove = total - maxLength;
  if (strategy === "longest_first") {
    if (!b) return [truncateRaw(a, total - toRemove, stride), undefined];
    let n1 = a.ids.length;
    let n2 = b.ids.length;
    const swap = n1 > n2;
    if (swap) [n1, n2] = [n2, n1];
    n2 = n1 > maxLength ? n1 : Math.max(n1, maxLength - n1);
    if (n1 + n2 > maxLength) {
      n1 = Math.floor(maxLength / 2);
      n2 = n1 + (maxLength % 2);
    }
    if (swap) [n1, n2] = [n2, n1];
    return [truncateRaw(a, n1, stride), truncateRaw(b, n2, stride)];
  }
  if (strategy === "only_first" || strategy === "only_second") {
    const targetIsA = strategy === "only_first";
    if (!targetIsA && !b) {
      throw new Error("Truncation error: strategy only_second requires a second sequence (pair), but none was provided");
    }
    const target = targetIsA ? a : b!;
    const targetLen = target.ids.length;
    if (targetLen <= toRemove) {
      throw new Error(
        `Truncation error: cannot fit in maxLength with strategy ${strategy}: the ${targetIsA ? "first" : "second"} sequence has ${targetLen} tokens but ${toRemove} must be removed (the other sequence and the special tokens alone are too long)`,
      );
    }
    const windows = truncateRaw(target, targetLen - toRemove, stride);
    return targetIsA ? [windows, b ? [b] : undefined] : [[a], windows];
  }
  throw new Error(`Unknown truncation strategy ${JSON.stringify(strategy)}`);
}

// ---------------------------------------------------------------------------
// Tokenizer
// ---------------------------------------------------------------------------

function tokenName(v: unknown): string | undefined {
  if (typeof v === "string") return v;
  if (v && typeof v === "object" && typeof (v as Record<string, unknown>).content === "string") {
    return (v as Record<string, unknown>).content as string;
  }
  return undefined;
}

const CP_WS = 1;
const CP_PUNCT = 2;
const CP_OTHER = 0;
const ASCII_CLASS = new Uint8Array(128);
for (let c = 0; c < 128; c++) ASCII_CLASS[c] = isUnicodeWhitespace(c) ? CP_WS : isBertPunctuation(c, "") ? CP_PUNCT : CP_OTHER;

export class BertTokenizer {
  readonly vocabSize: number;
  readonly modelMaxLength: number;
  readonly padTokenId: number;
  readonly unkTokenId: number;
  readonly clsTokenId: number;
  readonly sepTokenId: number;
  readonly maskToken: string | undefined;
  readonly maskTokenId: number | undefined;

  private readonly vocab: Map<string, number>;
  private readonly idToTok: Map<number, string>;
  private readonly unkToken: string;
  private readonly prefix: string;
  private readonly maxInputCharsPerWord: number;
  /** Longest vocab entry in UTF-16 units (without the continuation prefix), at least its code points: bounds the greedy search. */
  private readonly maxPieceChars: number;
  private readonly steps: CharStep[];
  private readonly normCache = new Map<number, string>();
  private readonly asciiNorm: string[] = [];
  /**
   * How the normalizer maps every printable ASCII character (U+0020–U+007E), when it maps each to one
   * unit in one of two plain ways: to itself, or to its lower case. A run of them is then normalized
   * with one call, its offsets one to one; null sends every character through `normOf`.
   */
  private readonly printableAscii: ((s: string) => string) | null;
  private readonly classCache = new Map<number, number>();
  private readonly rawMatcher: AddedTokenMatcher;
  private readonly normMatcher: AddedTokenMatcher;
  private readonly post: PostProcessor;
  private readonly specialIds = new Set<number>();
  private readonly specialAddedIds = new Set<number>();
  private readonly decoder: { prefix: string; cleanup: boolean } | null;
  private readonly defaultCleanup: boolean;

  private constructor(json: Record<string, unknown>, config: Record<string, unknown>) {
    // --- model -----------------------------------------------------------
    const model = asRecord(json.model, "tokenizer.json `model`");
    if (model.type !== "WordPiece") {
      throw new UnsupportedTokenizerError(
        `Unsupported model type ${JSON.stringify(model.type)}: only WordPiece tokenizers (BERT family) are supported`,
      );
    }
    const rawVocab = asRecord(model.vocab, "WordPiece vocab");
    this.vocab = new Map<string, number>();
    this.idToTok = new Map<number, string>();
    this.prefix = typeof model.continuing_subword_prefix === "string" ? model.continuing_subword_prefix : "##";
    // Object.keys, and lengths in UTF-16 units: Object.entries and a code-point iterator per entry made
    // this loop three times slower (about 70 against 25 ms for a 30,522-entry vocabulary, at every load).
    let maxPiece = 1;
    for (const tok of Object.keys(rawVocab)) {
      const id = rawVocab[tok];
      if (typeof id !== "number") throw new UnsupportedTokenizerError(`WordPiece vocab entry ${JSON.stringify(tok)} has a non-numeric id`);
      this.vocab.set(tok, id);
      this.idToTok.set(id, tok);
      // An upper bound on the piece's code points, which is all the longest-match search needs.
      const units = tok.startsWith(this.prefix) ? tok.length - this.prefix.length : tok.length;
      if (units > maxPiece) maxPiece = units;
    }
    this.maxPieceChars = maxPiece;
    this.unkToken = typeof model.unk_token === "string" ? model.unk_token : "[UNK]";
    this.maxInputCharsPerWord = typeof model.max_input_chars_per_word === "number" ? model.max_input_chars_per_word : 100;

    // --- added tokens ------------------------------------------------------
    const added: AddedToken[] = [];
    if (json.added_tokens !== undefined && json.added_tokens !== null) {
      if (!Array.isArray(json.added_tokens)) throw new UnsupportedTokenizerError("`added_tokens` must be an array");
      for (const raw of json.added_tokens) {
        const t = asRecord(raw, "added token");
        if (typeof t.content !== "string" || typeof t.id !== "number") throw new UnsupportedTokenizerError("malformed added token");
        const special = t.special === true;
        added.push({
          id: t.id,
          content: t.content,
          singleWord: t.single_word === true,
          lstrip: t.lstrip === true,
          rstrip: t.rstrip === true,
          normalized: typeof t.normalized === "boolean" ? t.normalized : !special,
          special,
        });
        this.idToTok.set(t.id, t.content);
        if (special) this.specialAddedIds.add(t.id);
      }
    }
    // token → id lookups consult added tokens first (AddedVocabulary::token_to_id)
    for (const t of added) this.vocab.set(t.content, t.id);
    const unkId = this.vocab.get(this.unkToken);
    if (unkId === undefined) throw new UnsupportedTokenizerError(`unk_token ${JSON.stringify(this.unkToken)} is not in the vocabulary`);
    this.unkTokenId = unkId;

    // --- normalizer --------------------------------------------------------
    // Like transformers' BertTokenizerFast, the tokenizer_config's
    // do_lower_case / strip_accents / tokenize_chinese_chars win over the
    // BertNormalizer stored in tokenizer.json.
    const overrides: Partial<BertNormalizerFlags> = {};
    if (typeof config.do_lower_case === "boolean") overrides.lowercase = config.do_lower_case;
    if ("strip_accents" in config && (config.strip_accents === null || typeof config.strip_accents === "boolean")) {
      overrides.strip_accents = config.strip_accents as boolean | null;
    }
    if (typeof config.tokenize_chinese_chars === "boolean") overrides.handle_chinese_chars = config.tokenize_chinese_chars;
    this.steps = normalizerSteps(json.normalizer, overrides);
    for (let c = 0; c < 128; c++) this.asciiNorm.push(this.normalizeChar(String.fromCharCode(c), c));
    const printable = Array.from({ length: 0x7f - 0x20 }, (_, k) => String.fromCharCode(0x20 + k));
    const mapsAll = (f: (s: string) => string) => printable.every((ch) => this.asciiNorm[ch.charCodeAt(0)] === f(ch));
    const same = (s: string) => s;
    const lower = (s: string) => s.toLowerCase();
    this.printableAscii = mapsAll(same) ? same : mapsAll(lower) ? lower : null;

    // --- pre-tokenizer -----------------------------------------------------
    const pre = json.pre_tokenizer;
    const isBertPre = (p: unknown): boolean => {
      const r = asRecord(p, "pre_tokenizer");
      if (r.type === "BertPreTokenizer") return true;
      if (r.type === "Sequence" && Array.isArray(r.pretokenizers) && r.pretokenizers.length === 1) return isBertPre(r.pretokenizers[0]);
      return false;
    };
    if (pre === null || pre === undefined || !isBertPre(pre)) {
      const type = pre && typeof pre === "object" ? (pre as Record<string, unknown>).type : pre;
      throw new UnsupportedTokenizerError(`Unsupported pre_tokenizer ${JSON.stringify(type ?? null)}: only BertPreTokenizer is supported`);
    }

    // Added-token matchers: raw text for normalized:false, normalized text otherwise.
    this.rawMatcher = new AddedTokenMatcher(added.filter((t) => !t.normalized).map((t) => ({ pattern: t.content, token: t })));
    this.normMatcher = new AddedTokenMatcher(
      added.filter((t) => t.normalized).map((t) => ({ pattern: this.normalizeString(t.content), token: t })),
    );

    // --- post-processor ----------------------------------------------------
    this.post = parsePostProcessor(json.post_processor);
    for (const pieces of [this.post.single, this.post.pair]) {
      for (const p of pieces) if (p.kind === "special") for (const id of p.ids) this.specialIds.add(id);
    }
    for (const id of this.specialAddedIds) this.specialIds.add(id);

    // --- decoder -----------------------------------------------------------
    const dec = json.decoder;
    if (dec === null || dec === undefined) {
      this.decoder = null;
    } else {
      const d = asRecord(dec, "decoder");
      if (d.type !== "WordPiece") {
        throw new UnsupportedTokenizerError(`Unsupported decoder type ${JSON.stringify(d.type)}: only WordPiece is supported`);
      }
      this.decoder = { prefix: typeof d.prefix === "string" ? d.prefix : "##", cleanup: d.cleanup !== false };
    }
    this.defaultCleanup =
      typeof config.clean_up_tokenization_spaces === "boolean" ? config.clean_up_tokenization_spaces : (this.decoder?.cleanup ?? false);

    // --- ids exposed to callers -------------------------------------------
    const lookup = (name: string | undefined): number | undefined => (name === undefined ? undefined : this.vocab.get(name));
    const firstSpecial = (pieces: Piece[], which: "first" | "last"): number | undefined => {
      const sp = pieces.filter((p): p is Extract<Piece, { kind: "special" }> => p.kind === "special");
      const p = which === "first" ? sp[0] : sp[sp.length - 1];
      return p?.ids[0];
    };
    const pt = json.post_processor as Record<string, unknown> | null | undefined;
    const clsFromPost = pt && pt.type === "BertProcessing" ? (pt.cls as [string, number])[1] : firstSpecial(this.post.single, "first");
    const sepFromPost = pt && pt.type === "BertProcessing" ? (pt.sep as [string, number])[1] : firstSpecial(this.post.single, "last");
    const cls = clsFromPost ?? lookup(tokenName(config.cls_token)) ?? lookup("[CLS]");
    const sep = sepFromPost ?? lookup(tokenName(config.sep_token)) ?? lookup("[SEP]");
    if (cls === undefined || sep === undefined) throw new UnsupportedTokenizerError("cannot determine the [CLS]/[SEP] token ids");
    this.clsTokenId = cls;
    this.sepTokenId = sep;
    const padding = json.padding as Record<string, unknown> | null | undefined;
    this.padTokenId =
      lookup(tokenName(config.pad_token)) ?? (typeof padding?.pad_id === "number" ? padding.pad_id : undefined) ?? lookup("[PAD]") ?? 0;
    const maskName = tokenName(config.mask_token) ?? (this.vocab.has("[MASK]") ? "[MASK]" : undefined);
    const maskId = lookup(maskName);
    this.maskToken = maskId === undefined ? undefined : maskName;
    this.maskTokenId = maskId;

    const mml = config.model_max_length;
    this.modelMaxLength = typeof mml === "number" && Number.isFinite(mml) && mml > 0 && mml < 1e9 ? mml : 512;

    let maxId = -1;
    for (const id of this.idToTok.keys()) if (id > maxId) maxId = id;
    this.vocabSize = Math.max(maxId + 1, this.idToTok.size);
  }

  /** Build a tokenizer from a parsed `tokenizer.json` (and optionally its `tokenizer_config.json`). */
  static fromJSON(tokenizerJson: unknown, tokenizerConfig?: Record<string, unknown>): BertTokenizer {
    return new BertTokenizer(asRecord(tokenizerJson, "tokenizer.json"), tokenizerConfig ?? {});
  }

  // -- normalization helpers ---------------------------------------------

  private normalizeChar(ch: string, cp: number): string {
    let s = ch;
    for (const step of this.steps) {
      if (s.length === 0) break;
      if (s.length === ch.length && s === ch) {
        s = step(s, cp);
      } else {
        let out = "";
        for (const c of s) out += step(c, c.codePointAt(0)!);
        s = out;
      }
    }
    return s;
  }

  private normOf(cp: number, text: string, i: number, len: number): string {
    if (cp < 128) return this.asciiNorm[cp];
    let r = this.normCache.get(cp);
    if (r === undefined) {
      r = this.normalizeChar(len === 1 ? text[i] : text.slice(i, i + 2), cp);
      if (this.normCache.size < 50000) this.normCache.set(cp, r);
    }
    return r;
  }

  private normalizeString(s: string): string {
    let out = "";
    for (let i = 0; i < s.length; ) {
      const cp = s.codePointAt(i)!;
      const len = cp > 0xffff ? 2 : 1;
      out += this.normOf(cp, s, i, len);
      i += len;
    }
    return out;
  }

  private classify(cp: number, ch: string): number {
    if (cp < 128) return ASCII_CLASS[cp];
    let c = this.classCache.get(cp);
    if (c === undefined) {
      c = isUnicodeWhitespace(cp) ? CP_WS : isBertPunctuation(cp, ch) ? CP_PUNCT : CP_OTHER;
      if (this.classCache.size < 50000) this.classCache.set(cp, c);
    }
    return c;
  }

  // -- per-sequence encoding ----------------------------------------------

  private encodeSequence(text: string): RawEncoding {
    const out: RawEncoding = { ids: [], tokens: [], offsets: [], wordIds: [] };
    const word = { n: 0 };
    let pos = 0;
    for (const [start, stop, tok] of this.rawMatcher.find(text)) {
      if (pos < start) this.encodeNormalizedSegment(text, pos, start, out, word);
      out.ids.push(tok.id);
      out.tokens.push(tok.content);
      out.offsets.push([start, stop]);
      out.wordIds.push(word.n++);
      pos = stop;
    }
    if (pos < text.length) this.encodeNormalizedSegment(text, pos, text.length, out, word);
    return out;
  }

  /** Normalize text[from, to) keeping, for every UTF-16 unit of the normalized string, its source span. */
  private encodeNormalizedSegment(text: string, from: number, to: number, out: RawEncoding, word: { n: number }): void {
    const printableAscii = this.printableAscii;
    let ascii = from;
    if (printableAscii) {
      while (ascii < to && isPrintableAscii(text.charCodeAt(ascii))) ascii++;
    }
    let norm: string;
    let spans: SourceSpans;
    if (printableAscii && ascii === to) {
      // The common case: one printable ASCII run, normalized one unit to one; no span arrays needed.
      norm = printableAscii(text.slice(from, to));
      spans = new SourceSpans(from);
    } else {
      norm = "";
      spans = new SourceSpans(from, [], []);
      const starts = spans.starts!;
      const ends = spans.ends!;
      for (let i = from; i < to; ) {
        if (printableAscii) {
          let end = i;
          while (end < to && isPrintableAscii(text.charCodeAt(end))) {
            starts.push(end);
            ends.push(++end);
          }
          if (end > i) {
            norm += printableAscii(text.slice(i, end));
            i = end;
            continue;
          }
        }
        const cp = codePointWithin(text, i, to);
        const len = cp > 0xffff ? 2 : 1;
        const piece = this.normOf(cp, text, i, len);
        if (piece.length > 0) {
          norm += piece;
          for (let k = 0; k < piece.length; k++) {
            starts.push(i);
            ends.push(i + len);
          }
        }
        i += len;
      }
    }
    if (norm.length === 0) return;
    if (this.normMatcher.empty) {
      this.preTokenizeAndModel(norm, 0, norm.length, spans, out, word);
      return;
    }
    let pos = 0;
    for (const [start, stop, tok] of this.normMatcher.find(norm)) {
      if (pos < start) this.preTokenizeAndModel(norm, pos, start, spans, out, word);
      out.ids.push(tok.id);
      out.tokens.push(tok.content);
      out.offsets.push([spans.start(start), spans.end(stop - 1)]);
      out.wordIds.push(word.n++);
      pos = stop;
    }
    if (pos < norm.length) this.preTokenizeAndModel(norm, pos, norm.length, spans, out, word);
  }

  /** BertPreTokenizer (split on whitespace, isolate punctuation) followed by WordPiece on each word. */
  private preTokenizeAndModel(
    norm: string,
    from: number,
    to: number,
    spans: SourceSpans,
    out: RawEncoding,
    word: { n: number },
  ): void {
    let wStart = -1;
    for (let i = from; i < to; ) {
      const unit = norm.charCodeAt(i);
      const cp = unit < 128 ? unit : codePointWithin(norm, i, to);
      const len = cp > 0xffff ? 2 : 1;
      const cls = cp < 128 ? ASCII_CLASS[cp] : this.classify(cp, len === 1 ? norm[i] : norm.slice(i, i + 2));
      if (cls === CP_OTHER) {
        if (wStart < 0) wStart = i;
      } else {
        if (wStart >= 0) {
          this.wordPiece(norm, wStart, i, spans, out, word.n++);
          wStart = -1;
        }
        if (cls === CP_PUNCT) this.wordPiece(norm, i, i + len, spans, out, word.n++);
      }
      i += len;
    }
    if (wStart >= 0) this.wordPiece(norm, wStart, to, spans, out, word.n++);
  }

  /** models/wordpiece: greedy longest-match-first; any failure makes the whole word [UNK]. */
  private wordPiece(
    norm: string,
    from: number,
    to: number,
    spans: SourceSpans,
    out: RawEncoding,
    wordId: number,
  ): void {
    // Code point boundaries of the word (UTF-16 indices into `norm`); only
    // materialized when the word contains surrogate pairs.
    let bounds: number[] | null = null;
    let nChars = to - from;
    for (let i = from; i < to; i++) {
      const c = norm.charCodeAt(i);
      if (c >= 0xd800 && c <= 0xdbff && i + 1 < to) {
        bounds = [from];
        for (let k = from; k < to; ) {
          const h = norm.charCodeAt(k);
          k += h >= 0xd800 && h <= 0xdbff && k + 1 < to ? 2 : 1;
          bounds.push(k);
        }
        nChars = bounds.length - 1;
        break;
      }
    }
    if (nChars > this.maxInputCharsPerWord) return this.pushUnk(from, to, spans, out, wordId);
    const mark = out.ids.length;
    let s = 0;
    while (s < nChars) {
      let e = Math.min(nChars, s + this.maxPieceChars);
      let id: number | undefined;
      let piece = "";
      const from16 = bounds ? bounds[s] : from + s;
      while (e > s) {
        const sub = norm.slice(from16, bounds ? bounds[e] : from + e);
        piece = s > 0 ? this.prefix + sub : sub;
        id = this.vocab.get(piece);
        if (id !== undefined) break;
        e--;
      }
      if (id === undefined) {
        out.ids.length = out.tokens.length = out.offsets.length = out.wordIds.length = mark;
        return this.pushUnk(from, to, spans, out, wordId);
      }
      const to16 = bounds ? bounds[e] : from + e;
      out.ids.push(id);
      out.tokens.push(piece);
      out.offsets.push([spans.start(from16), spans.end(to16 - 1)]);
      out.wordIds.push(wordId);
      s = e;
    }
  }

  private pushUnk(from: number, to: number, spans: SourceSpans, out: RawEncoding, wordId: number): void {
    out.ids.push(this.unkTokenId);
    out.tokens.push(this.unkToken);
    out.offsets.push([spans.start(from), spans.end(to - 1)]);
    out.wordIds.push(wordId);
  }

  // -- public API ----------------------------------------------------------

  /**
   * Encode one text or a pair. Returns `[first window, ...overflowing windows]`
   * (always at least one); overflowing windows are only included with
   * `returnOverflowing`. Window order follows HF `Encoding::merge_with`.
   */
  encode(text: string, pair?: string, options: EncodeOptions = {}): Encoding[] {
    const addSpecial = options.addSpecialTokens ?? true;
    const isPair = pair !== undefined;
    const a = this.encodeSequence(text);
    const b = isPair ? this.encodeSequence(pair) : undefined;
    const template = isPair ? this.post.pair : this.post.single;

    let aWindows: RawEncoding[] = [a];
    let bWindows: RawEncoding[] | undefined = b ? [b] : undefined;
    if (options.maxLength !== undefined) {
      const maxLength = options.maxLength;
      if (!Number.isInteger(maxLength) || maxLength < 0) throw new Error(`maxLength must be a non-negative integer, got ${maxLength}`);
      const stride = options.stride ?? 0;
      if (!Number.isInteger(stride) || stride < 0) throw new Error(`stride must be a non-negative integer, got ${stride}`);
      const nAdded = addSpecial ? countAdded(template) : 0;
      if (nAdded > 0 && maxLength <= nAdded) {
        throw new Error(`maxLength (${maxLength}) must be greater than the ${nAdded} special tokens added to each ${isPair ? "pair" : "sequence"}`);
      }
      [aWindows, bWindows] = truncateEncodings(a, b, maxLength - nAdded, options.truncation ?? "longest_first", stride);
    }

    const combos: [RawEncoding, RawEncoding | undefined][] = [];
    if (!bWindows) {
      for (const w of aWindows) combos.push([w, undefined]);
    } else {
      // Encoding::merge_with ordering: (A0,B0), then for each Ai>0: (Ai,B0),(Ai,B1..), then (A0,Bj>0)
      combos.push([aWindows[0], bWindows[0]]);
      for (let i = 1; i < aWindows.length; i++) for (const bw of bWindows) combos.push([aWindows[i], bw]);
      for (let j = 1; j < bWindows.length; j++) combos.push([aWindows[0], bWindows[j]]);
    }
    const n = options.returnOverflowing ? combos.length : 1;
    const result: Encoding[] = [];
    for (let k = 0; k < n; k++) result.push(this.postProcess(combos[k][0], combos[k][1], template, addSpecial));
    return result;
  }

  private postProcess(a: RawEncoding, b: RawEncoding | undefined, template: Piece[], addSpecial: boolean): Encoding {
    const plain = !addSpecial && !this.post.templateTypeIdsWithoutSpecials;
    const length = a.ids.length + (b?.ids.length ?? 0) + (addSpecial ? countAdded(template) : 0);
    // Every array at its final size up front: grown push by push, each was copied five times over
    // (a quarter of what one 128-token encode allocated).
    const sized = <T>() => new Array<T>(length);
    const enc: Encoding = {
      ids: sized(),
      tokens: sized(),
      typeIds: sized(),
      attentionMask: new Array<number>(length).fill(1),
      offsets: sized(),
      sequenceIds: sized(),
      wordIds: sized(),
      specialTokensMask: sized(),
    };
    let at = 0;
    const putSeq = (r: RawEncoding, seq: 0 | 1, typeId: number) => {
      for (let i = 0; i < r.ids.length; i++, at++) {
        enc.ids[at] = r.ids[i];
        enc.tokens[at] = r.tokens[i];
        enc.typeIds[at] = typeId;
        enc.offsets[at] = r.offsets[i];
        enc.sequenceIds[at] = seq;
        enc.wordIds[at] = r.wordIds[i];
        enc.specialTokensMask[at] = 0;
      }
    };
    if (plain) {
      putSeq(a, 0, 0);
      if (b) putSeq(b, 1, 1);
      return enc;
    }
    for (const p of template) {
      if (p.kind === "seq") {
        const r = p.seq === 0 ? a : b;
        if (r) putSeq(r, p.seq, p.typeId);
      } else if (addSpecial) {
        for (let i = 0; i < p.ids.length; i++, at++) {
          enc.ids[at] = p.ids[i];
          enc.tokens[at] = p.tokens[i];
          enc.typeIds[at] = p.typeId;
          enc.offsets[at] = [0, 0];
          enc.sequenceIds[at] = null;
          enc.wordIds[at] = null;
          enc.specialTokensMask[at] = 1;
        }
      }
    }
    return enc;
  }

  /** Tokens of `text` without special tokens and without truncation. */
  tokenize(text: string): string[] {
    return this.encodeSequence(text).tokens;
  }

  tokenToId(token: string): number | undefined {
    return this.vocab.get(token);
  }

  idToToken(id: number): string | undefined {
    return this.idToTok.get(id);
  }

  isSpecialId(id: number): boolean {
    return this.specialIds.has(id);
  }

  /**
   * Decode ids to text (WordPiece decoder: "##" pieces are glued to the
   * previous token, other tokens are separated by a space). Unknown ids are
   * skipped. `cleanUpTokenizationSpaces` (default: tokenizer_config's
   * clean_up_tokenization_spaces, else the decoder's `cleanup`) applies the
   * decoder's cleanup and transformers' `clean_up_tokenization`.
   */
  decode(ids: number[], options: { skipSpecialTokens?: boolean; cleanUpTokenizationSpaces?: boolean } = {}): string {
    const skip = options.skipSpecialTokens ?? false;
    const cleanup = options.cleanUpTokenizationSpaces ?? this.defaultCleanup;
    const tokens: string[] = [];
    for (const id of ids) {
      const t = this.idToTok.get(id);
      if (t === undefined) continue;
      if (skip && this.specialAddedIds.has(id)) continue;
      tokens.push(t);
    }
    let text: string;
    if (this.decoder) {
      const prefix = this.decoder.prefix;
      const parts = tokens.map((t, i) => {
        let s = t;
        if (i !== 0) s = prefix.length > 0 && s.startsWith(prefix) ? s.slice(prefix.length) : ` ${s}`;
        return cleanup && this.decoder!.cleanup ? decoderCleanup(s) : s;
      });
      text = parts.join("");
    } else {
      text = tokens.join(" ");
    }
    return cleanup ? cleanUpTokenization(text) : text;
  }
}

/** transformers `PreTrainedTokenizerBase.clean_up_tokenization`. */
function cleanUpTokenization(s: string): string {
  return s
    .replaceAll(" .", ".")
    .replaceAll(" ?", "?")
    .replaceAll(" !", "!")
    .replaceAll(" ,", ",")
    .replaceAll(" ' ", "'")
    .replaceAll(" n't", "n't")
    .replaceAll(" 'm", "'m")
    .replaceAll(" 's", "'s")
    .replaceAll(" 've", "'ve")
    .replaceAll(" 're", "'re");
}

/** decoders/wordpiece.rs `cleanup`: the same rules plus " do not" → " don't" (no rule creates or breaks that one). */
function decoderCleanup(s: string): string {
  return cleanUpTokenization(s).replaceAll(" do not", " don't");
}

const isPrintableAscii = (c: number) => c >= 0x20 && c < 0x7f;

/**
 * For each UTF-16 unit of a normalized segment, the span of source text it came from: explicit
 * arrays, or none when the unit at i came from source unit `shift + i` alone.
 */
class SourceSpans {
  constructor(
    private readonly shift: number,
    readonly starts: number[] | null = null,
    readonly ends: number[] | null = null,
  ) {}
  start(i: number): number {
    return this.starts ? this.starts[i] : this.shift + i;
  }
  end(i: number): number {
    return this.ends ? this.ends[i] : this.shift + i + 1;
  }
}

/** The code point at text[i], reading nothing at or past `to`: a surrogate pair cut there is its lone high half. */
function codePointWithin(text: string, i: number, to: number): number {
  const cp = text.codePointAt(i)!;
  return cp > 0xffff && i + 1 >= to ? text.charCodeAt(i) : cp;
}
