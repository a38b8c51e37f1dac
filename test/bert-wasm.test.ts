import assert from "node:assert/strict";
import { execFileSync, spawnSync } from "node:child_process";
import { readFileSync } from "node:fs";
import { describe, test } from "node:test";
import type { Batch, Outputs } from "../src/engine/backend.ts";
import { decodeModel, encodeModel } from "../src/cli/onnx.ts";
import { type BertWasmOptions, type KernelExports, createBertWasmBackend, selfTest } from "../src/engine/backends/bert-wasm/index.ts";
import { ALIGN, BertWasmUnsupportedError, readHeader } from "../src/engine/backends/bert-wasm/format.ts";
import { enableRelaxedSimd, readBertWasmModules } from "../src/engine/backends/bert-wasm/node.ts";
import { packBertWasm } from "../src/engine/backends/bert-wasm/pack.ts";
import { FIXTURES_DIR, readReference, type ReferenceCase } from "./support/fixtures.ts";
import { argmaxRows, batchOf, big, FIXTURES, worstDifference } from "./support/reference-check.ts";

/**
 * Accuracy bound of bert-wasm against the PyTorch fp32 references: weights int8 per output channel,
 * activations quantized per token to 7 bits (asymmetric, 0..127: the relaxed dot product needs one
 * operand in 0..127), attention / softmax / LayerNorm / GELU in f32. On these fixtures (hidden 32,
 * deliberately large random weights, logits spanning about ±10) the worst difference seen is ~0.86
 * (onnxruntime's own int8 graphs: ~0.61), so the bound is 1.0; argmax must match on every reference
 * row. Outputs must not depend on the batch: a padded batch equals the sequences run alone, bit for bit.
 */
const BOUND = 1.0;

await enableRelaxedSimd();
const modules = await readBertWasmModules();
const logs: string[] = [];
const backend = (options: BertWasmOptions = { relaxed: modules.relaxed }) =>
  createBertWasmBackend(modules.simd128, { log: (m) => logs.push(m), ...options });
const main = backend();
const simd128Only = backend({ relaxed: null });

const packedCache = new Map<string, Uint8Array>();
function packed(fixture: string, file = "model.onnx"): Uint8Array {
  const key = `${fixture}/${file}`;
  if (!packedCache.has(key)) packedCache.set(key, packBertWasm(readFileSync(`${FIXTURES_DIR}/${fixture}/onnx/${file}`)));
  return packedCache.get(key)!;
}

/** Right-pads 2-D cases into one batch. */
function padded(cases: { ids: number[]; types: number[] }[]): Batch {
  const seq = Math.max(...cases.map((c) => c.ids.length));
  const ids: number[] = [], mask: number[] = [], types: number[] = [];
  for (const c of cases) {
    for (let i = 0; i < seq; i++) {
      ids.push(c.ids[i] ?? 0);
      mask.push(i < c.ids.length ? 1 : 0);
      types.push(c.types[i] ?? 0);
    }
  }
  return { dims: [cases.length, seq], inputIds: big(ids), attentionMask: big(mask), tokenTypeIds: big(types) };
}


describe("bert-wasm reproduces PyTorch on every fixture", () => {
  for (const fixture of FIXTURES) {
    for (const file of ["model.onnx", "model_quantized.onnx"]) {
      test(`${fixture} ${file}`, async (t) => {
        const session = await main.createSession(packed(fixture, file));
        const worst = await worstDifference(session, fixture, {
          argmax: true,
          extra: (c, outputs) => {
            if (!c.outputs.top_k) return;
            // fill-mask: the top token at every mask position is PyTorch's.
            const V = outputs.logits.dims[2];
            for (const k of c.outputs.top_k as unknown as { position: number; token_id: number }[][]) {
              const row = outputs.logits.data.subarray(k[0].position * V, (k[0].position + 1) * V);
              assert.equal(argmaxRows(row, V)[0], k[0].token_id);
            }
          },
        });
        await session.release();
        t.diagnostic(`max |bert-wasm - pytorch| = ${worst.toFixed(3)}`);
        assert.ok(worst <= BOUND, `max difference ${worst} over ${BOUND}`);
      });
    }
  }
});

describe("bert-wasm kernels", () => {
  test("relaxed-SIMD build is picked when it passes the self-test, and gives bit-identical outputs to SIMD128", async (t) => {
    const variant = await main.variant();
    t.diagnostic(`kernel build on this engine: ${variant}`);
    assert.equal(await simd128Only.variant(), "simd128");
    for (const fixture of ["tiny-bert-ner", "tiny-bert-mlm", "tiny-distilbert-sentiment"]) {
      const c = readReference(fixture)[0];
      const a = await (await main.createSession(packed(fixture))).run(batchOf(c));
      const b = await (await simd128Only.createSession(packed(fixture))).run(batchOf(c));
      for (const name of Object.keys(a)) assert.deepEqual(a[name].data, b[name].data, `${fixture} ${name}`);
    }
  });

  test("both builds pass the self-test (exact GEMM, partial panels, with and without a residual); a broken kernel fails it", async () => {
    for (const bytes of [modules.simd128, modules.relaxed]) {
      const exports = (await WebAssembly.instantiate(bytes as Uint8Array<ArrayBuffer>, {})).instance.exports as unknown as KernelExports;
      assert.equal(selfTest(exports), null);
      // A GEMM that drops the residual must be caught.
      const dropsResidual: KernelExports["gemm_q8"] = (a, as, z, m, kp, w, ws, sum, b, n, out, ostride, _res, act) =>
        exports.gemm_q8(a, as, z, m, kp, w, ws, sum, b, n, out, ostride, 0, act);
      assert.match(selfTest({ ...exports, gemm_q8: dropsResidual }) ?? "", /with a residual/);
    }
  });

  test("missing relaxed SIMD (module does not compile) falls back to SIMD128, logged", async () => {
    logs.length = 0;
    // A module using an opcode the engine rejects, as an engine without relaxed SIMD rejects bert-relaxed.wasm.
    const broken = new Uint8Array([0, 97, 115, 109, 1, 0, 0, 0, 1, 5, 1, 96, 0, 1, 123, 3, 2, 1, 0, 10, 8, 1, 6, 0, 253, 255, 255, 15, 11]);
    const b = backend({ relaxed: broken });
    assert.equal(await b.variant(), "simd128");
    assert.ok(logs.some((m) => /relaxed SIMD unavailable.*falling back to the SIMD128 kernels/.test(m)), logs.join("\n"));
    const session = await b.createSession(packed("tiny-bert-sentiment"));
    const out = await session.run(batchOf(readReference("tiny-bert-sentiment")[0]));
    assert.deepEqual(out.logits.dims, [1, 3]);
  });

  test("relaxed build failing the self-test (wrong dot product) falls back to SIMD128, logged", async () => {
    logs.length = 0;
    // Simulates V8 11.3's relaxed_dot_i8x16_i7x16_add_s, which ignores its accumulator: drop one k-block.
    const wrap = (x: KernelExports): KernelExports => ({
      ...x,
      gemm_q8: (...args: Parameters<KernelExports["gemm_q8"]>) => {
        x.gemm_q8(...args);
        const [, , , m, , , , , , n, out] = args;
        const o = new Float32Array(x.memory.buffer, out, m * n);
        o[0] += 1;
      },
    });
    const b = backend({ relaxed: modules.relaxed, wrapRelaxed: wrap });
    assert.equal(await b.variant(), "simd128");
    assert.ok(logs.some((m) => /self-test failed.*falling back to the SIMD128 kernels/.test(m)), logs.join("\n"));
  });

  test("no relaxed build given: SIMD128, logged", async () => {
    logs.length = 0;
    assert.equal(await backend({ relaxed: null }).variant(), "simd128");
    assert.ok(logs.some((m) => /SIMD128/.test(m)));
  });

  test("accepts a precompiled WebAssembly.Module (as workerd imports it)", async () => {
    const b = createBertWasmBackend(await WebAssembly.compile(modules.simd128 as Uint8Array<ArrayBuffer>), { log: () => {} });
    const session = await b.createSession(packed("tiny-bert-regression"));
    assert.deepEqual(session.inputNames, ["input_ids", "attention_mask", "token_type_ids"]);
    assert.deepEqual(session.outputNames, ["logits"]);
  });
});

describe("bert-wasm batching", () => {
  test("a padded batch of 2 equals each sequence run alone (bit for bit)", async () => {
    for (const fixture of ["tiny-bert-sentiment", "tiny-bert-ner", "tiny-bert-qa", "tiny-bert-embed", "tiny-distilbert-sentiment"]) {
      const session = await main.createSession(packed(fixture));
      const all = readReference(fixture);
      const c1 = all[0];
      const c2 = all.find((c) => c.input_ids.length !== c1.input_ids.length)!;
      const cases = [c1, c2].map((c) => ({ ids: c.input_ids as number[], types: c.token_type_ids as number[] }));
      assert.notEqual(cases[0].ids.length, cases[1].ids.length, "cases of different lengths");
      const both = await session.run(padded(cases));
      const seq = both[session.outputNames[0]].dims[1];
      for (let b = 0; b < 2; b++) {
        const solo = await session.run(padded([cases[b]]));
        for (const name of session.outputNames) {
          const s = solo[name];
          const perSeq = s.data.length;
          const len = cases[b].ids.length;
          if (s.dims.length >= 2 && s.dims[1] === len && both[name].dims[1] === seq && seq !== len) {
            // per-token output: compare the real tokens only
            const inner = perSeq / len;
            const rowBoth = both[name].data.subarray(b * seq * inner, b * seq * inner + len * inner);
            assert.deepEqual(rowBoth, s.data, `${fixture} ${name} row ${b}`);
          } else {
            assert.deepEqual(both[name].data.subarray(b * perSeq, (b + 1) * perSeq), s.data, `${fixture} ${name} row ${b}`);
          }
        }
      }
    }
  });

  test("multiple choice: [batch, choices, seq] in, logits [batch, choices] out", async () => {
    const session = await main.createSession(packed("tiny-bert-swag"));
    const cases = readReference("tiny-bert-swag");
    const nChoices = (c: ReferenceCase) => (c.input_ids as number[][]).length;
    const a = cases[0];
    const b = cases.find((c) => c !== a && nChoices(c) === nChoices(a))!;
    assert.ok(b, "two cases with the same number of choices");
    const choices = nChoices(a);
    const seq = Math.max((a.input_ids as number[][])[0].length, (b.input_ids as number[][])[0].length);
    const pad = (rows: number[][], fill = 0) => rows.flatMap((r) => [...r, ...Array(seq - r.length).fill(fill)]);
    const masks = (c: ReferenceCase) => (c.attention_mask as number[][]) ?? (c.input_ids as number[][]).map((r) => r.map(() => 1));
    const batch: Batch = {
      dims: [2, choices, seq],
      inputIds: big([...pad(a.input_ids as number[][]), ...pad(b.input_ids as number[][])]),
      attentionMask: big([...pad(masks(a)), ...pad(masks(b))]),
      tokenTypeIds: big([...pad(a.token_type_ids as number[][]), ...pad(b.token_type_ids as number[][])]),
    };
    const out: Outputs = await session.run(batch);
    assert.deepEqual([...out.logits.dims], [2, choices]);
    const soloA = await session.run(batchOf(a));
    assert.deepEqual([...soloA.logits.dims], [1, choices]);
    assert.deepEqual(out.logits.data.subarray(0, choices), soloA.logits.data);
    assert.deepEqual(argmaxRows(out.logits.data, choices), [a, b].map((c) => argmaxRows(c.outputs.logits.data, choices)[0]));
  });
});

describe("bert-wasm packer", () => {
  test("header, 64-byte alignment, tied MLM decoder stored once, deterministic", () => {
    const bytes = packed("tiny-bert-mlm", "model_quantized.onnx");
    const { meta, dataStart } = readHeader(bytes);
    assert.equal(dataStart % ALIGN, 0);
    assert.equal(meta.architecture, "BertForMaskedLM");
    assert.equal(meta.head.kind, "mlm");
    const refs: { offset: number }[] = [];
    JSON.stringify(meta, (k, v) => (v && typeof v === "object" && "offset" in v && "dtype" in v ? (refs.push(v), v) : v));
    for (const r of refs) assert.equal(r.offset % ALIGN, 0);
    // One vocab x hidden int8 table (~1 MB for 30522 x 32); an untied copy would double it.
    assert.ok(bytes.byteLength < 1.5 * 30522 * 32, `${bytes.byteLength} bytes`);
    assert.deepEqual(packBertWasm(readFileSync(`${FIXTURES_DIR}/tiny-bert-mlm/onnx/model_quantized.onnx`)), bytes);
  });

  test("architectures and heads are read from the graph", () => {
    const expect: Record<string, [string, string]> = {
      "tiny-bert-embed": ["BertModel", "none"],
      "tiny-bert-ner": ["BertForTokenClassification", "token"],
      "tiny-bert-qa": ["BertForQuestionAnswering", "qa"],
      "tiny-bert-swag": ["BertForMultipleChoice", "multiple-choice"],
      "tiny-bert-sentiment": ["BertForSequenceClassification", "sequence"],
      "tiny-distilbert-sentiment": ["DistilBertForSequenceClassification", "sequence"],
    };
    for (const [fixture, [arch, kind]] of Object.entries(expect)) {
      const { meta } = readHeader(packed(fixture));
      assert.equal(meta.architecture, arch);
      assert.equal(meta.head.kind, kind);
      assert.equal(meta.heads, 4);
      assert.equal(meta.layers, 2);
      assert.equal(meta.encoder[0].attnNorm.eps, Math.fround(1e-12));
    }
    assert.deepEqual(readHeader(packed("tiny-distilbert-sentiment")).meta.inputNames, ["input_ids", "attention_mask"]);
  });

  test("unknown architectures are rejected with a clear error", () => {
    const model = decodeModel(readFileSync(`${FIXTURES_DIR}/tiny-bert-sentiment/onnx/model.onnx`));
    for (const t of model.graph.initializer) t.name = t.name.replace(/^bert\./, "roberta.");
    for (const n of model.graph.node) n.input = n.input.map((i) => i.replace(/^bert\./, "roberta."));
    assert.throws(() => packBertWasm(encodeModel(model)), (e: Error) => e instanceof BertWasmUnsupportedError && /unknown architecture/.test(e.message));
    assert.throws(() => packBertWasm(new TextEncoder().encode("not onnx at all")), BertWasmUnsupportedError);
  });

  test("a non-packed file is refused by the backend", async () => {
    await assert.rejects(main.createSession(readFileSync(`${FIXTURES_DIR}/tiny-bert-sentiment/onnx/model.onnx`)), /bert-wasm.*magic/);
  });
});

const haveClang = spawnSync("clang-19", ["--version"]).status === 0 && spawnSync("wasm-ld-19", ["--version"]).status === 0;
test("the committed .wasm modules are a reproducible build of kernels.c", { skip: !haveClang && "clang-19 / wasm-ld-19 not installed" }, () => {
  execFileSync("bash", ["tools/bert-wasm/build.sh", "--check"], { cwd: new URL("..", import.meta.url), stdio: "pipe" });
});
