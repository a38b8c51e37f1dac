/**
 * Loaders for the public NLP datasets under ../shared/data (relative to the
 * repository root) used by the tokenizer parity test. Nothing is copied into
 * the repository; the files are read at test time.
 */
import { existsSync, readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";

export const SHARED_DATA_DIR = fileURLToPath(new URL("../../../shared/data/", import.meta.url));

export function sharedDataAvailable(): boolean {
  return existsSync(`${SHARED_DATA_DIR}vocab/distilbert-base-uncased-tokenizer.json`);
}

export interface ParityCase {
  source: string;
  text: string;
  pair?: string;
}

function read(rel: string): string {
  return readFileSync(`${SHARED_DATA_DIR}${rel}`, "utf8").replace(/^\uFEFF/, "");
}

/** CoNLL-2003: one token per line (first column), blank line between sentences; tokens joined by spaces. */
export function conll2003(file = "conll2003/test.txt"): ParityCase[] {
  const out: ParityCase[] = [];
  let words: string[] = [];
  const flush = () => {
    if (words.length > 0) out.push({ source: "conll2003", text: words.join(" ") });
    words = [];
  };
  for (const line of read(file).split(/\r?\n/)) {
    if (line.trim() === "") {
      flush();
      continue;
    }
    const word = line.split(" ")[0];
    if (word === "-DOCSTART-") continue;
    words.push(word);
  }
  flush();
  return out;
}

/** SQuAD v1.1: every context and every question. */
export function squad(file = "squad/dev-v1.1.json"): ParityCase[] {
  const data = JSON.parse(read(file)) as {
    data: { paragraphs: { context: string; qas: { question: string }[] }[] }[];
  };
  const out: ParityCase[] = [];
  for (const article of data.data) {
    for (const p of article.paragraphs) {
      out.push({ source: "squad-context", text: p.context });
      for (const qa of p.qas) out.push({ source: "squad-question", text: qa.question });
    }
  }
  return out;
}

/** MRPC (msr_paraphrase_test.txt): TSV split on tabs only; columns Quality, #1 ID, #2 ID, #1 String, #2 String. */
export function mrpcPairs(file = "mrpc/msr_paraphrase_test.txt"): ParityCase[] {
  const lines = read(file).split(/\r?\n/);
  const out: ParityCase[] = [];
  for (const line of lines.slice(1)) {
    if (line === "") continue;
    const cols = line.split("\t");
    if (cols.length < 5) continue;
    out.push({ source: "mrpc", text: cols[3], pair: cols[4] });
  }
  return out;
}

/** SST-2 dev.tsv: header `sentence\tlabel`. */
export function sst2(file = "sst2/dev.tsv"): ParityCase[] {
  const lines = read(file).split(/\r?\n/);
  const out: ParityCase[] = [];
  for (const line of lines.slice(1)) {
    if (line === "") continue;
    const tab = line.lastIndexOf("\t");
    out.push({ source: "sst2", text: tab >= 0 ? line.slice(0, tab) : line });
  }
  return out;
}
