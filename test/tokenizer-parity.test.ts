/**
 * Parity of src/engine/tokenizer.ts with the reference JS port of Hugging Face
 * tokenizers (`@huggingface/tokenizers`, a devDependency used only here) on
 * real sentences from CoNLL-2003, SQuAD v1.1, MRPC (as pairs) and SST-2,
 * read at test time from ../shared/data (relative to the repository root).
 *
 * Checked for every sentence:
 *  - ids, token strings, token type ids and attention mask equal the reference;
 *  - decode(ids) equals the reference's decode (with and without special tokens);
 *  - every offset of a non-special token slices the original text to the token
 *    (after the same normalization: control chars removed, accents stripped,
 *    lowercased; "##" removed), or to a non-empty word for [UNK];
 *  - for ASCII-only texts, where UTF-16 and code-point offsets coincide,
 *    offsets equal those derived from the reference's tokens (the reference
 *    package exposes no offsets of its own, so they are reconstructed by
 *    aligning its tokens left-to-right against the original text).
 */
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { test } from "node:test";
import { Tokenizer } from "@huggingface/tokenizers";
import { BertTokenizer, type Encoding } from "../src/engine/tokenizer.ts";
import { conll2003, mrpcPairs, type ParityCase, SHARED_DATA_DIR, sharedDataAvailable, squad, sst2 } from "./support/parity-data.ts";

const REMOVED_RE = /[\p{Cc}\p{Cf}\p{Co}\p{Cn}\p{Cs}\uFFFD]/u;
const MN_RE = /\p{Mn}/gu;

/** Independent re-statement of what BertNormalizer does to a single token's source text. */
function normalizeSlice(s: string): string {
  let out = "";
  for (const ch of s) {
    if (REMOVED_RE.test(ch)) continue;
    out += ch.normalize("NFD").replace(MN_RE, "").toLowerCase();
  }
  return out;
}

function isAsciiSkippable(c: number): boolean {
  return c <= 0x20 || c === 0x7f; // whitespace and (removed) control characters
}

/** Offsets derived from the reference's tokens for an ASCII-only text; null when they cannot be aligned. */
function deriveAsciiOffsets(text: string, tokens: string[]): [number, number][] | null {
  const out: [number, number][] = [];
  let pos = 0;
  for (const tok of tokens) {
    const cont = tok.startsWith("##");
    const piece = cont ? tok.slice(2) : tok;
    if (!cont) while (pos < text.length && isAsciiSkippable(text.charCodeAt(pos))) pos++;
    const start = pos;
    for (let k = 0; k < piece.length; ) {
      if (pos >= text.length) return null;
      const c = text.charCodeAt(pos);
      if (c < 0x20 && c !== 0x09 && c !== 0x0a && c !== 0x0d) {
        pos++;
        continue;
      }
      if (text[pos].toLowerCase() !== piece[k]) return null;
      pos++;
      k++;
    }
    out.push([start, pos]);
  }
  return out;
}

const ASCII_RE = /^[\x00-\x7f]*$/;

interface Counts {
  sentences: number;
  pairs: number;
  tokens: number;
  idMismatches: number;
  typeIdMismatches: number;
  decodeMismatches: number;
  offsetsChecked: number;
  offsetMismatches: number;
  refOffsetSequences: number;
  refOffsetMismatches: number;
}

test("tokenizer parity with @huggingface/tokenizers on CoNLL-2003, SQuAD, MRPC pairs and SST-2", (t) => {
  if (!sharedDataAvailable()) {
    t.skip(`shared data not found at ${SHARED_DATA_DIR} (expected ../shared/data next to the repository; CI provides it)`);
    return;
  }
  const tokenizerJson = JSON.parse(readFileSync(`${SHARED_DATA_DIR}vocab/distilbert-base-uncased-tokenizer.json`, "utf8"));
  const tokenizerConfig = JSON.parse(readFileSync(`${SHARED_DATA_DIR}vocab/distilbert-base-uncased-tokenizer_config.json`, "utf8"));
  const ours = BertTokenizer.fromJSON(tokenizerJson, tokenizerConfig);
  const ref = new Tokenizer(tokenizerJson, tokenizerConfig);

  const cases: ParityCase[] = [...conll2003(), ...squad(), ...mrpcPairs(), ...sst2()];
  const bySource = new Map<string, number>();
  for (const c of cases) bySource.set(c.source, (bySource.get(c.source) ?? 0) + 1);

  const n: Counts = {
    sentences: 0,
    pairs: 0,
    tokens: 0,
    idMismatches: 0,
    typeIdMismatches: 0,
    decodeMismatches: 0,
    offsetsChecked: 0,
    offsetMismatches: 0,
    refOffsetSequences: 0,
    refOffsetMismatches: 0,
  };
  const failures: string[] = [];
  const fail = (what: string, c: ParityCase, detail: string) => {
    if (failures.length < 10) failures.push(`${what} [${c.source}] ${JSON.stringify(c.text).slice(0, 160)}${c.pair !== undefined ? ` / ${JSON.stringify(c.pair).slice(0, 80)}` : ""}: ${detail}`);
  };

  for (const c of cases) {
    n.sentences++;
    if (c.pair !== undefined) n.pairs++;
    const encs = ours.encode(c.text, c.pair);
    assert.equal(encs.length, 1);
    const e: Encoding = encs[0];
    const r = ref.encode(c.text, { text_pair: c.pair ?? null, return_token_type_ids: true });
    n.tokens += e.ids.length;

    // 1. ids / tokens / type ids / attention mask
    if (e.ids.length !== r.ids.length || e.ids.some((id, i) => id !== r.ids[i]) || e.tokens.some((tk, i) => tk !== r.tokens[i])) {
      n.idMismatches++;
      fail("ids", c, `ours ${e.tokens.join(" ").slice(0, 200)} | ref ${r.tokens.join(" ").slice(0, 200)}`);
      continue;
    }
    if (e.typeIds.some((x, i) => x !== r.token_type_ids[i]) || e.attentionMask.some((x, i) => x !== r.attention_mask[i])) {
      n.typeIdMismatches++;
      fail("type ids", c, `ours ${e.typeIds.join("")} | ref ${r.token_type_ids.join("")}`);
    }

    // 2. decode
    for (const skip of [true, false]) {
      const a = ours.decode(e.ids, { skipSpecialTokens: skip });
      const b = ref.decode(e.ids, { skip_special_tokens: skip });
      if (a !== b) {
        n.decodeMismatches++;
        fail("decode", c, `ours ${JSON.stringify(a).slice(0, 120)} | ref ${JSON.stringify(b).slice(0, 120)}`);
      }
    }

    // 3. every offset slices the original text back to the token
    const texts = [c.text, c.pair ?? ""];
    const prevEnd = [0, 0];
    for (let i = 0; i < e.ids.length; i++) {
      const seq = e.sequenceIds[i];
      const [s, end] = e.offsets[i];
      if (seq === null) {
        if (e.specialTokensMask[i] !== 1 || s !== 0 || end !== 0) {
          n.offsetMismatches++;
          fail("special offsets", c, `token ${i} ${e.tokens[i]} (${s}, ${end})`);
        }
        continue;
      }
      n.offsetsChecked++;
      const src = texts[seq];
      const slice = src.slice(s, end);
      const token = e.tokens[i];
      let ok = s >= prevEnd[seq] && end <= src.length && s < end;
      if (ok) {
        ok = token === ours.idToToken(ours.unkTokenId) ? slice.trim() === slice && slice.length > 0 : normalizeSlice(slice) === token.replace(/^##/, "");
      }
      if (!ok) {
        n.offsetMismatches++;
        fail("offsets", c, `token ${i} ${JSON.stringify(token)} (${s}, ${end}) slices to ${JSON.stringify(slice)}`);
      }
      prevEnd[seq] = Math.max(prevEnd[seq], end);
    }

    // 4. ASCII texts: offsets equal the ones derived from the reference tokens
    for (const seq of [0, 1] as const) {
      if (seq === 1 && c.pair === undefined) continue;
      const src = texts[seq];
      if (!ASCII_RE.test(src)) continue;
      const idx = e.sequenceIds.flatMap((x, i) => (x === seq ? [i] : []));
      const refTokens = idx.map((i) => r.tokens[i]);
      if (refTokens.includes("[UNK]")) continue;
      n.refOffsetSequences++;
      const derived = deriveAsciiOffsets(src, refTokens);
      const mine = idx.map((i) => e.offsets[i]);
      if (derived === null || JSON.stringify(derived) !== JSON.stringify(mine)) {
        n.refOffsetMismatches++;
        fail("reference offsets", c, `ours ${JSON.stringify(mine).slice(0, 160)} | derived ${JSON.stringify(derived).slice(0, 160)}`);
      }
    }
  }

  const summary =
    `parity: ${n.sentences} sentences compared (${n.pairs} pairs; ${[...bySource].map(([k, v]) => `${k} ${v}`).join(", ")}), ` +
    `${n.tokens} tokens; id mismatches ${n.idMismatches}, type-id mismatches ${n.typeIdMismatches}, decode mismatches ${n.decodeMismatches}; ` +
    `offsets checked ${n.offsetsChecked}, offset mismatches ${n.offsetMismatches}; ` +
    `ASCII sequences compared with reference-derived offsets ${n.refOffsetSequences}, mismatches ${n.refOffsetMismatches}`;
  t.diagnostic(summary);

  assert.ok(n.sentences >= 5000, `expected at least 5000 sentences, got ${n.sentences}`);
  assert.ok(n.pairs > 1000, `expected the MRPC pairs to be compared, got ${n.pairs}`);
  assert.ok(n.refOffsetSequences > 1000, `expected many ASCII sequences, got ${n.refOffsetSequences}`);
  const mismatches = n.idMismatches + n.typeIdMismatches + n.decodeMismatches + n.offsetMismatches + n.refOffsetMismatches;
  assert.equal(mismatches, 0, `${summary}\n${failures.join("\n")}`);
});
