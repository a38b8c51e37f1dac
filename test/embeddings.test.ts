import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { before, describe, test } from "node:test";
import type { Outputs } from "../src/engine/backend.ts";
import type { LoadedModel } from "../src/engine/model.ts";
import { ModelRegistry } from "../src/engine/registry.ts";
import { BertTokenizer } from "../src/engine/tokenizer.ts";
import { ServiceError } from "../src/errors.ts";
import { createApp } from "../src/http/app.ts";
import { float32Base64 } from "../src/http/embeddings.ts";
import { createBackend } from "../src/runtimes/backends.ts";
import { FolderStorage } from "../src/storage/fs.ts";
import { clsPool, featureExtraction, l2Normalize, meanPool, poolingOf } from "../src/tasks/feature-extraction.ts";
import { sigmoid } from "../src/tasks/math.ts";
import { FIXTURES_DIR, maxAbsDiff, readReference } from "./support/fixtures.ts";
import { hasFixture } from "./support/load-model.ts";
import { fakeModel } from "./support/fake-model.ts";

const close = (a: number, b: number, eps = 1e-12) => assert.ok(Math.abs(a - b) < eps, `${a} != ${b}`);

describe("pooling math", () => {
  // Three tokens of width 2; the third is padding.
  const tokens = new Float32Array([1, 2, 3, 6, 100, 100]);

  test("mean pooling averages the tokens the attention mask keeps", () => {
    assert.deepEqual(meanPool(tokens, [1, 1, 0], 2), [2, 4]);
    assert.deepEqual(meanPool(tokens, [1, 1, 1], 2), [104 / 3, 108 / 3]);
    assert.deepEqual(meanPool(tokens, [0, 0, 0], 2), [0, 0]);
  });

  test("cls pooling takes the first vector", () => {
    assert.deepEqual(clsPool(tokens, 2), [1, 2]);
  });

  test("L2 normalisation, with the norm clamped away from 0", () => {
    assert.deepEqual(l2Normalize([3, 4]), [0.6, 0.8]);
    assert.deepEqual(l2Normalize([0, 0]), [0, 0]);
  });

  test("pooling hints in config.json", () => {
    assert.equal(poolingOf({}), undefined);
    assert.equal(poolingOf({ pooling: "cls" }), "cls");
    assert.equal(poolingOf({ pooling_mode: "mean" }), "mean");
    assert.equal(poolingOf({ pooling_config: { pooling_mode_cls_token: true, pooling_mode_mean_tokens: false } }), "cls");
    assert.equal(poolingOf({ sentence_transformers: { pooling: { pooling_mode_mean_tokens: true } } }), "mean");
  });
});

const TOKENIZER_DIR = new URL("../tools/fixtures/tokenizer/", import.meta.url);
const tokenizer = BertTokenizer.fromJSON(
  JSON.parse(readFileSync(new URL("tokenizer.json", TOKENIZER_DIR), "utf8")),
  JSON.parse(readFileSync(new URL("tokenizer_config.json", TOKENIZER_DIR), "utf8")),
);

/** A BertModel whose hidden state at (row, t, d) is row * 100 + t * 10 + d, width 2. */
function fakeEncoder(config: Record<string, unknown> = {}, maxLength = 512): LoadedModel {
  return fakeModel({
    id: "fake-embed",
    task: "feature-extraction",
    config,
    tokenizer,
    maxLength,
    async run(batch): Promise<Outputs> {
      const [b, s] = batch.dims;
      const data = new Float32Array(b * s * 2);
      for (let r = 0; r < b; r++) for (let t = 0; t < s; t++) for (let d = 0; d < 2; d++) data[(r * s + t) * 2 + d] = r * 100 + t * 10 + d;
      return { last_hidden_state: { data, dims: [b, s, 2] } };
    },
  });
}

describe("feature-extraction head", () => {
  // "hello world" → [CLS] hello world [SEP] (4 tokens); "hi" → [CLS] hi [SEP] (3, padded to 4).
  test("pooling none: [1][seq][hidden] per input, unpadded, as the pipeline", async () => {
    const model = fakeEncoder();
    assert.deepEqual(await featureExtraction.run(model, "hello world", {}), [[[0, 1], [10, 11], [20, 21], [30, 31]]]);
    assert.deepEqual(await featureExtraction.run(model, ["hello world", "hi"], {}), [
      [[[0, 1], [10, 11], [20, 21], [30, 31]]],
      [[[100, 101], [110, 111], [120, 121]]],
    ]);
  });

  test("mean and cls pooling: number[] for one text, number[][] for a list", async () => {
    const model = fakeEncoder();
    assert.deepEqual(await featureExtraction.run(model, "hello world", { pooling: "mean" }), [15, 16]);
    // The padded 4th token of "hi" is left out of its mean.
    assert.deepEqual(await featureExtraction.run(model, ["hello world", "hi"], { pooling: "mean" }), [[15, 16], [110, 111]]);
    assert.deepEqual(await featureExtraction.run(model, ["hello world", "hi"], { pooling: "cls" }), [[0, 1], [100, 101]]);
    const [x, y] = (await featureExtraction.run(model, "hello world", { pooling: "mean", normalize: true })) as number[];
    close(x, 15 / Math.hypot(15, 16));
    close(y, 16 / Math.hypot(15, 16));
  });

  test("the model's pooling hint is the default", async () => {
    assert.deepEqual(await featureExtraction.run(fakeEncoder({ pooling: "cls" }), "hello world", {}), [0, 1]);
  });

  test("truncate: cut to the model's length by default; false makes a long text a 413", async () => {
    const model = fakeEncoder({}, 3);
    assert.deepEqual(await featureExtraction.run(model, "hello world", { pooling: "cls" }), [0, 1]);
    await assert.rejects(
      () => featureExtraction.run(model, "hello world", { truncate: false }),
      (e: unknown) => e instanceof ServiceError && e.status === 413,
    );
  });

  test("float32 base64 is little-endian float32 bytes", () => {
    const b64 = float32Base64([1, -2.5, 0.1]);
    const bytes = Uint8Array.from(atob(b64), (ch) => ch.charCodeAt(0));
    assert.deepEqual(Array.from(new Float32Array(bytes.buffer)), [1, -2.5, Math.fround(0.1)]);
  });
});

const FIXTURES = ["tiny-bert-embed", "tiny-bert-reranker", "tiny-bert-regression"];
const missing = FIXTURES.filter((f) => !hasFixture(f));

describe("embedding routes over HTTP", { skip: missing.length > 0 && `fixtures missing: ${missing.join(", ")}` }, () => {
  let app: ReturnType<typeof createApp>;
  const post = async (path: string, body: unknown) => {
    const res = await app.request(path, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: typeof body === "string" ? body : JSON.stringify(body),
    });
    return { status: res.status, body: (await res.json()) as any };
  };
  const embedCases = () => readReference("tiny-bert-embed");
  /** Reference mean-pooled, L2-normalised vectors (every token is attended in the references). */
  const referenceVectors = () =>
    embedCases().map((c) => {
      const { dims, data } = c.outputs.last_hidden_state;
      return l2Normalize(meanPool(data, new Array(dims[1]).fill(1), dims[2]));
    });

  before(async () => {
    // fp32 graphs, so that results can be held to PyTorch's within 1e-4.
    const registry = new ModelRegistry(new FolderStorage(FIXTURES_DIR), await createBackend("native"), {
      preferQuantized: false,
    });
    app = createApp({ registry });
  });

  test("POST /embed: mean-pooled, normalised vectors of the default embedding model", async () => {
    const texts = embedCases().map((c) => c.text!);
    const { status, body } = await post("/embed", { inputs: texts });
    assert.equal(status, 200);
    const expected = referenceVectors();
    assert.equal(body.length, texts.length);
    body.forEach((v: number[], i: number) => {
      assert.equal(v.length, 32);
      assert.ok(maxAbsDiff(v, expected[i]) < 1e-4, `text ${i}`);
      close(Math.hypot(...v), 1, 1e-6);
    });
  });

  test("POST /embed: one string still gives a list of one vector; normalize false; named model", async () => {
    const [c] = embedCases();
    const { status, body } = await post("/embed", { inputs: c.text, normalize: false, model: "tiny-bert-embed" });
    assert.equal(status, 200);
    assert.equal(body.length, 1);
    const { dims, data } = c.outputs.last_hidden_state;
    assert.ok(maxAbsDiff(body[0], meanPool(data, new Array(dims[1]).fill(1), dims[2])) < 1e-4);
  });

  test("POST /embed: errors", async () => {
    const long = Array.from({ length: 600 }, () => "word").join(" ");
    assert.equal((await post("/embed", "{not json")).status, 400);
    const invalid = await post("/embed", { inputs: 3 });
    assert.equal(invalid.status, 422);
    assert.equal(invalid.body.error_type, "invalid_input");
    assert.equal((await post("/embed", { inputs: [] })).status, 422);
    assert.equal((await post("/embed", { inputs: "x", model: "nope" })).status, 404);
    const wrong = await post("/embed", { inputs: "x", model: "tiny-bert-reranker" });
    assert.equal(wrong.status, 422);
    assert.match(wrong.body.error, /feature-extraction/);
    assert.equal((await post("/embed", { inputs: long })).status, 413);
    assert.equal((await post("/embed", { inputs: Array(65).fill("x") })).status, 413);
    const cut = await post("/embed", { inputs: long, truncate: true });
    assert.equal(cut.status, 200);
    assert.equal(cut.body[0].length, 32);
  });

  test("POST /rerank: sigmoid of the cross-encoder's logits, best first (default model skips regression)", async () => {
    const cases = readReference("tiny-bert-reranker").filter((c) => c.text === "how tall is the eiffel tower");
    const texts = cases.map((c) => c.text_pair!);
    const { status, body } = await post("/rerank", { query: cases[0].text, texts });
    assert.equal(status, 200);
    const expected = cases
      .map((c, index) => ({ index, score: sigmoid(c.outputs.logits.data[0]) }))
      .sort((a, b) => b.score - a.score);
    assert.deepEqual(body.map((r: any) => r.index), expected.map((e) => e.index));
    body.forEach((r: any, i: number) => {
      close(r.score, expected[i].score, 1e-4);
      assert.equal(r.text, undefined);
    });
  });

  test("POST /rerank: raw_scores and return_text", async () => {
    const cases = readReference("tiny-bert-reranker");
    const query = "symptoms of dehydration";
    const mine = cases.filter((c) => c.text === query);
    const texts = mine.map((c) => c.text_pair!);
    const { status, body } = await post("/rerank", {
      query,
      texts,
      raw_scores: true,
      return_text: true,
      model: "tiny-bert-reranker",
    });
    assert.equal(status, 200);
    for (const r of body) {
      assert.equal(r.text, texts[r.index]);
      close(r.score, mine[r.index].outputs.logits.data[0], 1e-4);
    }
    assert.ok(body[0].score >= body[1].score);
  });

  test("POST /rerank: errors", async () => {
    const sentiment = await post("/rerank", { query: "q", texts: ["a"], model: "tiny-bert-embed" });
    assert.equal(sentiment.status, 422);
    assert.match(sentiment.body.error, /one label/);
    assert.equal((await post("/rerank", { query: "q", texts: [] })).status, 422);
    assert.equal((await post("/rerank", { texts: ["a"] })).status, 422);
  });

  test("POST /v1/embeddings: OpenAI's shape, float and base64", async () => {
    const cases = embedCases();
    const input = cases.slice(0, 2).map((c) => c.text!);
    const { status, body } = await post("/v1/embeddings", { input, model: "tiny-bert-embed" });
    assert.equal(status, 200);
    assert.equal(body.object, "list");
    assert.equal(body.model, "tiny-bert-embed");
    const tokens = cases.slice(0, 2).reduce((n, c) => n + c.tokens.length, 0);
    assert.deepEqual(body.usage, { prompt_tokens: tokens, total_tokens: tokens });
    const expected = referenceVectors();
    body.data.forEach((d: any, i: number) => {
      assert.equal(d.object, "embedding");
      assert.equal(d.index, i);
      assert.ok(maxAbsDiff(d.embedding, expected[i]) < 1e-4);
    });

    const b64 = await post("/v1/embeddings", { input: input[0], encoding_format: "base64" });
    assert.equal(b64.status, 200);
    assert.equal(b64.body.data.length, 1);
    const bytes = Uint8Array.from(atob(b64.body.data[0].embedding), (ch) => ch.charCodeAt(0));
    const floats = Array.from(new Float32Array(bytes.buffer));
    assert.deepEqual(floats, body.data[0].embedding.map(Math.fround));
    assert.equal((await post("/v1/embeddings", { input: "x", encoding_format: "int8" })).status, 422);
  });

  test("POST /models/tiny-bert-embed: token vectors equal PyTorch's last_hidden_state", async () => {
    const [c] = embedCases();
    const { status, body } = await post("/models/tiny-bert-embed", { inputs: c.text });
    assert.equal(status, 200);
    const { dims, data } = c.outputs.last_hidden_state;
    assert.equal(body.length, 1);
    assert.equal(body[0].length, dims[1]);
    assert.ok(maxAbsDiff(body[0].flat(), data) < 1e-4);
  });

  test("the routes are in the OpenAPI document", async () => {
    const doc = (await (await app.request("/openapi.json")).json()) as any;
    for (const path of ["/embed", "/rerank", "/v1/embeddings"]) assert.ok(doc.paths[path]?.post, path);
  });
});
