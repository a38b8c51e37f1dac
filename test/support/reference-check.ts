import assert from "node:assert/strict";
import { readdirSync } from "node:fs";
import type { Batch, Outputs, Session } from "../../src/engine/backend.ts";
import { int8Saturates, readCpuinfo } from "../../src/runtimes/backends.ts";
import { FIXTURES_DIR, maxAbsDiff, readReference, type ReferenceCase } from "./fixtures.ts";

/** Every fixture folder's name, sorted. */
export const FIXTURES = readdirSync(FIXTURES_DIR, { withFileTypes: true })
  .filter((d) => d.isDirectory())
  .map((d) => d.name)
  .sort();

const NATIVE_INT8_SATURATES = int8Saturates(process.arch, readCpuinfo());

/**
 * What an int8 graph's answers are held to on a backend: `bound` (logits from PyTorch) and the same
 * argmax in every row; except on onnxruntime-node where its int8 kernels saturate (x86 without VNNI),
 * measured on the fixtures up to 1.31 from onnxruntime-web's exact int8 answer and 1.24 from PyTorch,
 * with a QA argmax flipped: there 1.5, and argmax not required.
 */
export function int8Expectation(backendName: string, bound: number): { bound: number; argmax: boolean } {
  return backendName === "native" && NATIVE_INT8_SATURATES ? { bound: 1.5, argmax: false } : { bound, argmax: true };
}

export const big = (xs: number[]) => BigInt64Array.from(xs, BigInt);

/** A reference case as a batch of one ([1, seq], or [1, choices, seq] for multiple choice). */
export function batchOf(c: ReferenceCase): Batch {
  const ids = (c.input_ids as number[] | number[][]).flat();
  const types = (c.token_type_ids as number[] | number[][]).flat();
  const mask = c.attention_mask ? (c.attention_mask as number[] | number[][]).flat() : ids.map(() => 1);
  const dims = Array.isArray(c.input_ids[0]) ? [1, c.input_ids.length, (c.input_ids[0] as number[]).length] : [1, c.input_ids.length];
  return { dims, inputIds: big(ids), attentionMask: big(mask), tokenTypeIds: big(types) };
}

export function argmaxRows(data: ArrayLike<number>, rowSize: number): number[] {
  const rows: number[] = [];
  for (let start = 0; start < data.length; start += rowSize) {
    let best = start;
    for (let i = start; i < start + rowSize; i++) if (data[i] > data[best]) best = i;
    rows.push(best - start);
  }
  return rows;
}

/**
 * Runs every reference case of `fixture` through `session`: checks output dims, optionally the
 * argmax of every row of every output but hidden states, and returns the largest |output − PyTorch|.
 * `extra` gets each case's outputs for checks of its own.
 */
export async function worstDifference(
  session: Session,
  fixture: string,
  options: { argmax: boolean; extra?: (c: ReferenceCase, outputs: Outputs) => void },
): Promise<number> {
  let worst = 0;
  for (const c of readReference(fixture)) {
    const outputs = await session.run(batchOf(c));
    for (const [name, expected] of Object.entries(c.outputs)) {
      if (name === "top_k") continue;
      let actual: ArrayLike<number>;
      let rowSize: number;
      if (name === "logits_at_mask") {
        // The MLM reference keeps only the vocabulary rows at the [MASK] positions.
        const { logits } = outputs;
        assert.deepEqual([...logits.dims], expected.full_dims);
        rowSize = logits.dims[2];
        actual = expected.positions!.flatMap((p: number) => [...logits.data.subarray(p * rowSize, (p + 1) * rowSize)]);
      } else {
        assert.deepEqual([...outputs[name].dims], expected.dims, `${name} dims`);
        actual = outputs[name].data;
        rowSize = expected.dims.at(-1)!;
      }
      worst = Math.max(worst, maxAbsDiff(actual, expected.data));
      if (options.argmax && name !== "last_hidden_state") {
        assert.deepEqual(argmaxRows(actual, rowSize), argmaxRows(expected.data, rowSize), `${name} argmax`);
      }
    }
    options.extra?.(c, outputs);
  }
  return worst;
}
