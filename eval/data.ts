/**
 * Held-out evaluation sets, read from the shared data folder (`../shared/data` beside the checkout,
 * or $BERT_EDGE_DATA) — never copied into the repository. Same readers and split rules as
 * tools/train/data.py (see its docstring), so that the fp32 PyTorch numbers written by the training
 * script and the int8 numbers measured here are on identical examples.
 */
import { readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

export const REPO = dirname(dirname(fileURLToPath(import.meta.url)));
export const DATA = process.env.BERT_EDGE_DATA ?? join(dirname(REPO), "shared", "data");

const lines = (...parts: string[]) => readFileSync(join(DATA, ...parts), "utf8").replace(/^\uFEFF/, "").split("\n");
/** Python's str.strip() for the characters that occur here. */
const strip = (s: string) => s.replace(/^[\s]+|[\s]+$/g, "");

export function sst2Dev(): { text: string; label: number }[] {
  return lines("sst2", "dev.tsv")
    .slice(1)
    .filter((l) => strip(l))
    .map((l) => {
      const i = l.lastIndexOf("\t");
      return { text: strip(l.slice(0, i)), label: Number.parseInt(l.slice(i + 1), 10) };
    });
}

export function mrpcTest(): { text: string; text_pair: string; label: number }[] {
  return lines("mrpc", "msr_paraphrase_test.txt")
    .slice(1)
    .filter((l) => strip(l))
    .map((l) => {
      const c = l.split("\t");
      return { text: c[3], text_pair: c[4], label: Number.parseInt(c[0], 10) };
    });
}

export function conllTest(): { words: string[]; tags: string[] }[] {
  const out: { words: string[]; tags: string[] }[] = [];
  let words: string[] = [];
  let tags: string[] = [];
  for (const raw of [...lines("conll2003", "test.txt"), ""]) {
    const l = strip(raw);
    if (!l || l.startsWith("-DOCSTART-")) {
      if (words.length) out.push({ words, tags });
      words = [];
      tags = [];
      continue;
    }
    const c = l.split(" ");
    words.push(c[0]);
    tags.push(c[c.length - 1]);
  }
  return out;
}

export interface SquadExample {
  id: string;
  question: string;
  context: string;
  answers: string[];
}

export function squadHeldOut(): SquadExample[] {
  const { data } = JSON.parse(readFileSync(join(DATA, "squad", "dev-v1.1.json"), "utf8"));
  const out: SquadExample[] = [];
  data.forEach((art: any, i: number) => {
    if (i % 5 !== 4) return;
    for (const para of art.paragraphs)
      for (const qa of para.qas)
        out.push({ id: qa.id, question: qa.question, context: para.context, answers: qa.answers.map((a: any) => a.text) });
  });
  return out;
}

export function codahHeldOut(): { prompt: string; choices: string[]; label: number }[] {
  const rows = lines("codah", "full_data.tsv").filter((l) => strip(l));
  const out: { prompt: string; choices: string[]; label: number }[] = [];
  rows.forEach((l, i) => {
    if (i % 5 !== 4) return;
    const c = l.split("\t");
    out.push({ prompt: c[1], choices: c.slice(2, 6), label: Number.parseInt(c[6], 10) });
  });
  return out;
}

/** SST-2 dev sentences with one whole word masked (the first [a-z]{3,} vocabulary word from the middle on). */
export function fillMaskItems(vocab: Record<string, number>): { text: string; target: string }[] {
  const out: { text: string; target: string }[] = [];
  for (const { text } of sst2Dev()) {
    const words = text.split(" ");
    for (let i = Math.floor(words.length / 2); i < words.length; i++) {
      const w = words[i];
      if (/^[a-z]{3,}$/.test(w) && Object.hasOwn(vocab, w)) {
        out.push({ text: [...words.slice(0, i), "[MASK]", ...words.slice(i + 1)].join(" "), target: w });
        break;
      }
    }
  }
  return out;
}
