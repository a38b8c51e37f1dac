import { readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";

export const FIXTURES_DIR = fileURLToPath(new URL("../../models/fixtures", import.meta.url));

/** One reference case written by tools/fixtures/generate.py: inputs and PyTorch fp32 outputs. */
export interface ReferenceCase {
  text?: string;
  text_pair?: string;
  prompt?: string;
  choices?: string[];
  tokens: string[] | string[][];
  input_ids: number[] | number[][];
  token_type_ids: number[] | number[][];
  attention_mask?: number[] | number[][];
  offsets?: [number, number][];
  outputs: Record<string, { dims: number[]; data: number[]; positions?: number[]; full_dims?: number[] } & Record<string, any>>;
}

export function readReference(fixture: string): ReferenceCase[] {
  return JSON.parse(readFileSync(`${FIXTURES_DIR}/${fixture}/reference.json`, "utf8")).cases;
}

export function readJson<T = any>(fixture: string, file: string): T {
  return JSON.parse(readFileSync(`${FIXTURES_DIR}/${fixture}/${file}`, "utf8"));
}

export function maxAbsDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  if (a.length !== b.length) throw new Error(`length ${a.length} != ${b.length}`);
  let max = 0;
  for (let i = 0; i < a.length; i++) max = Math.max(max, Math.abs(a[i] - b[i]));
  return max;
}
