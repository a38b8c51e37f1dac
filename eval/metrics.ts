/** Metrics, identical to tools/train/metrics.py. */

export const accuracy = (pred: number[], gold: number[]) => pred.filter((p, i) => p === gold[i]).length / gold.length;

export function binaryF1(pred: number[], gold: number[]): number {
  let tp = 0, fp = 0, fn = 0;
  pred.forEach((p, i) => {
    if (p === 1 && gold[i] === 1) tp++;
    else if (p === 1) fp++;
    else if (gold[i] === 1) fn++;
  });
  return tp ? (2 * tp) / (2 * tp + fp + fn) : 0;
}

// -- NER ------------------------------------------------------------------------

function tag(label: string): [string, string] {
  if (label.startsWith("B-")) return ["B", label.slice(2)];
  if (label.startsWith("I-")) return ["I", label.slice(2)];
  return ["I", label];
}

/** Each CoNLL word's [start, end) in `words.join(" ")`. */
export function wordSpans(words: string[]): [number, number][] {
  let pos = 0;
  return words.map((w) => {
    const span: [number, number] = [pos, pos + w.length];
    pos += w.length + 1;
    return span;
  });
}

/** Served entities (char spans) → "firstWord:lastWord:TYPE"; misaligned spans can only be false positives. */
export function entitiesToWordSpans(ents: { start: number; end: number; entity_group: string }[], spans: [number, number][]): Set<string> {
  const starts = new Map(spans.map(([s], i) => [s, i]));
  const ends = new Map(spans.map(([, e], i) => [e, i]));
  const out = new Set<string>();
  for (const { start, end, entity_group } of ents) {
    if (starts.has(start) && ends.has(end)) out.add(`${starts.get(start)}:${ends.get(end)}:${entity_group}`);
    else out.add(`${-1 - start}:${-1 - end}:${entity_group}`);
  }
  return out;
}

export function bioSpans(tags: string[]): Set<string> {
  const out = new Set<string>();
  let start = -1;
  let type: string | null = null;
  [...tags, "O"].forEach((t, i) => {
    const [bi, tt] = tag(t);
    if (t === "O" || bi === "B" || tt !== type) {
      if (type !== null && type !== "O") out.add(`${start}:${i - 1}:${type}`);
      if (t !== "O") {
        start = i;
        type = tt;
      } else {
        start = -1;
        type = null;
      }
    }
  });
  return out;
}

export function entityPRF(pred: Set<string>[], gold: Set<string>[]) {
  let tp = 0, np = 0, ng = 0;
  pred.forEach((p, i) => {
    for (const x of p) if (gold[i].has(x)) tp++;
    np += p.size;
    ng += gold[i].size;
  });
  const precision = np ? tp / np : 0;
  const recall = ng ? tp / ng : 0;
  return { precision, recall, f1: precision + recall ? (2 * precision * recall) / (precision + recall) : 0 };
}

// -- SQuAD v1.1 (official normalisation) -----------------------------------------------

const PUNCT = new Set("!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~");

export function normalizeAnswer(s: string): string {
  s = [...s.toLowerCase()].filter((c) => !PUNCT.has(c)).join("");
  s = s.replace(/\b(a|an|the)\b/g, " ");
  return s.split(/\s+/).filter(Boolean).join(" ");
}

function f1One(pred: string, gold: string): number {
  const p = normalizeAnswer(pred).split(" ").filter(Boolean);
  const g = normalizeAnswer(gold).split(" ").filter(Boolean);
  const counts = new Map<string, number>();
  for (const t of g) counts.set(t, (counts.get(t) ?? 0) + 1);
  let same = 0;
  for (const t of p) {
    const c = counts.get(t) ?? 0;
    if (c > 0) {
      same++;
      counts.set(t, c - 1);
    }
  }
  if (same === 0) return 0;
  const prec = same / p.length, rec = same / g.length;
  return (2 * prec * rec) / (prec + rec);
}

export const squadEM = (pred: string, golds: string[]) => Math.max(...golds.map((g) => Number(normalizeAnswer(pred) === normalizeAnswer(g))));
export const squadF1 = (pred: string, golds: string[]) => Math.max(...golds.map((g) => f1One(pred, g)));
