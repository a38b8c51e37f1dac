import assert from "node:assert/strict";
import { readFileSync, readdirSync } from "node:fs";
import { describe, test } from "node:test";
import type { Batch } from "../src/engine/backend.ts";
import { type BackendName, createBackend } from "../src/runtimes/node-backends.ts";
import { FIXTURES_DIR, maxAbsDiff, readReference, type ReferenceCase } from "./support/fixtures.ts";

/**
 * fp32 graphs must reproduce PyTorch within 1e-4. int8 graphs (dynamic quantization, activations
 * quantized per tensor at run time) must stay within 0.75 of PyTorch's logits (the fixtures' logits
 * span about ±10) and pick the same argmax in every row.
 */
const FP32_TOLERANCE = 1e-4;
const INT8_TOLERANCE = 0.75;

const fixtures = readdirSync(FIXTURES_DIR, { withFileTypes: true })
  .filter((d) => d.isDirectory())
  .map((d) => d.name)
  .sort();

function batchOf(c: ReferenceCase): Batch {
  const ids = (c.input_ids as number[] | number[][]).flat();
  const types = (c.token_type_ids as number[] | number[][]).flat();
  const mask = c.attention_mask ? (c.attention_mask as number[] | number[][]).flat() : ids.map(() => 1);
  const dims = Array.isArray(c.input_ids[0])
    ? [1, c.input_ids.length, (c.input_ids[0] as number[]).length]
    : [1, c.input_ids.length];
  const big = (xs: number[]) => BigInt64Array.from(xs, BigInt);
  return { dims, inputIds: big(ids), attentionMask: big(mask), tokenTypeIds: big(types) };
}

function argmaxRows(data: ArrayLike<number>, rowSize: number): number[] {
  const rows: number[] = [];
  for (let start = 0; start < data.length; start += rowSize) {
    let best = start;
    for (let i = start; i < start + rowSize; i++) if (data[i] > data[best]) best = i;
    rows.push(best - start);
  }
  return rows;
}

for (const backendName of ["native", "wasm"] as BackendName[]) {
  describe(`${backendName} backend reproduces PyTorch on every fixture`, async () => {
    const backend = await createBackend(backendName);
    for (const fixture of fixtures) {
      for (const file of ["model.onnx", "model_quantized.onnx"]) {
        const quantized = file === "model_quantized.onnx";
        test(`${fixture} ${file}`, async (t) => {
          const session = await backend.createSession(readFileSync(`${FIXTURES_DIR}/${fixture}/onnx/${file}`));
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
              const diff = maxAbsDiff(actual, expected.data);
              worst = Math.max(worst, diff);
              if (quantized && name !== "last_hidden_state") {
                assert.deepEqual(argmaxRows(actual, rowSize), argmaxRows(expected.data, rowSize), `${name} argmax`);
              }
            }
          }
          await session.release();
          t.diagnostic(`max |logit - pytorch| = ${worst.toExponential(2)}`);
          const tolerance = quantized ? INT8_TOLERANCE : FP32_TOLERANCE;
          assert.ok(worst <= tolerance, `max difference ${worst} over ${tolerance}`);
        });
      }
    }
  });
}
