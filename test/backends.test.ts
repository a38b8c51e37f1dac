import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { describe, test } from "node:test";
import { type BackendName, createBackend, int8Saturates } from "../src/runtimes/backends.ts";
import { FIXTURES_DIR } from "./support/fixtures.ts";
import { FIXTURES, int8Expectation, worstDifference } from "./support/reference-check.ts";

/**
 * fp32 graphs must reproduce PyTorch within 1e-4. int8 graphs (dynamic quantization, activations
 * quantized per tensor at run time) must stay within 0.75 of PyTorch's logits (the fixtures' logits
 * span about ±10) and pick the same argmax in every row (looser where onnxruntime-node's int8 kernels
 * saturate: int8Expectation).
 */
const FP32_TOLERANCE = 1e-4;
const INT8_TOLERANCE = 0.75;

for (const backendName of ["native", "wasm"] as BackendName[]) {
  describe(`${backendName} backend reproduces PyTorch on every fixture`, async () => {
    const backend = await createBackend(backendName);
    const int8 = int8Expectation(backendName, INT8_TOLERANCE);
    for (const fixture of FIXTURES) {
      for (const file of ["model.onnx", "model_quantized.onnx"]) {
        const quantized = file === "model_quantized.onnx";
        test(`${fixture} ${file}`, async (t) => {
          const session = await backend.createSession(readFileSync(`${FIXTURES_DIR}/${fixture}/onnx/${file}`));
          const worst = await worstDifference(session, fixture, { argmax: quantized && int8.argmax });
          await session.release();
          t.diagnostic(`max |logit - pytorch| = ${worst.toExponential(2)}`);
          const tolerance = quantized ? int8.bound : FP32_TOLERANCE;
          assert.ok(worst <= tolerance, `max difference ${worst} over ${tolerance}`);
        });
      }
    }
  });
}

test("int8Saturates: x86-64 without VNNI only", () => {
  const cpu = (flags: string) => `processor\t: 0\nflags\t\t: fpu sse2 ${flags}\n`;
  assert.equal(int8Saturates("x64", cpu("avx2 fma")), true);
  assert.equal(int8Saturates("x64", cpu("avx2 avx512f avx512_vnni")), false);
  assert.equal(int8Saturates("x64", cpu("avx2 avx_vnni")), false);
  assert.equal(int8Saturates("x64", undefined), true, "flags unknown");
  assert.equal(int8Saturates("arm64", undefined), false);
});
