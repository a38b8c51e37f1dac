import assert from "node:assert/strict";
import { readFileSync, readdirSync } from "node:fs";
import { describe, test } from "node:test";
import type { Batch } from "../src/engine/backend.ts";
import { type BackendName, createBackend } from "../src/runtimes/node.ts";
import { FIXTURES_DIR, maxAbsDiff, readReference, type ReferenceCase } from "./support/fixtures.ts";

/** fp32 graphs must reproduce PyTorch; int8 graphs (dynamic quantization) within this bound on logits. */
const FP32_TOLERANCE = 1e-4;
const INT8_TOLERANCE = 0.25;

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

for (const backendName of ["native", "wasm"] as BackendName[]) {
  describe(`${backendName} backend reproduces PyTorch on every fixture`, async () => {
    const backend = await createBackend(backendName);
    for (const fixture of fixtures) {
      for (const [file, tolerance] of [
        ["model.onnx", FP32_TOLERANCE],
        ["model_quantized.onnx", INT8_TOLERANCE],
      ] as const) {
        test(`${fixture} ${file}`, async (t) => {
          const session = await backend.createSession(readFileSync(`${FIXTURES_DIR}/${fixture}/onnx/${file}`));
          let worst = 0;
          for (const c of readReference(fixture)) {
            const outputs = await session.run(batchOf(c));
            for (const [name, expected] of Object.entries(c.outputs)) {
              assert.deepEqual([...outputs[name].dims], expected.dims, `${name} dims`);
              worst = Math.max(worst, maxAbsDiff(outputs[name].data, expected.data));
            }
          }
          await session.release();
          t.diagnostic(`max |logit - pytorch| = ${worst.toExponential(2)}`);
          assert.ok(worst <= tolerance, `max difference ${worst} over ${tolerance}`);
        });
      }
    }
  });
}
