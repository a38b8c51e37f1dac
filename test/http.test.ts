import assert from "node:assert/strict";
import { request } from "node:http";
import { after, before, describe, test } from "node:test";
import { InferenceClient } from "@huggingface/inference";
import { type BackendName, startServer } from "../src/runtimes/node.ts";
import { softmax } from "../src/tasks/math.ts";
import { FIXTURES_DIR, readJson, readReference } from "./support/fixtures.ts";

for (const backend of ["native", "wasm"] as BackendName[]) {
  describe(`HTTP on Node, ${backend} backend`, () => {
    let server: Awaited<ReturnType<typeof startServer>>;
    let base: string;
    const post = (path: string, body: unknown) =>
      fetch(`${base}${path}`, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: typeof body === "string" ? body : JSON.stringify(body),
      });

    before(async () => {
      server = await startServer({ models: FIXTURES_DIR, port: 0, backend });
      base = `http://127.0.0.1:${server.port}`;
    });
    after(() => server.close());

    test("GET /health and GET /models", async () => {
      assert.deepEqual(await (await fetch(`${base}/health`)).json(), { status: "ok", backend });
      const models = (await (await fetch(`${base}/models`)).json()) as any[];
      const mrpc = models.find((m) => m.id === "tiny-bert-mrpc");
      assert.deepEqual(mrpc, {
        id: "tiny-bert-mrpc",
        task: "text-classification",
        labels: ["not_equivalent", "equivalent"],
        file: "onnx/model_quantized.onnx",
        loaded: false,
      });
      assert.ok(models.length >= 12, `${models.length} models`);
    });

    test("an MRPC pair gets PyTorch's labels and scores (fp32 file)", async () => {
      // Serve the fp32 graph of the same fixture so that scores can be held to PyTorch's within 1e-4.
      const fp32 = await startServer({ models: FIXTURES_DIR, port: 0, backend, preferQuantized: false });
      try {
        const labels = readJson("tiny-bert-mrpc", "config.json").id2label;
        for (const c of readReference("tiny-bert-mrpc").filter((c) => c.text_pair)) {
          const res = await fetch(`http://127.0.0.1:${fp32.port}/models/tiny-bert-mrpc`, {
            method: "POST",
            headers: { "content-type": "application/json" },
            body: JSON.stringify({ inputs: { text: c.text, text_pair: c.text_pair } }),
          });
          assert.equal(res.status, 200);
          const [scores] = (await res.json()) as { label: string; score: number }[][];
          const expected = softmax(c.outputs.logits.data)
            .map((score, i) => ({ label: labels[i], score }))
            .sort((a, b) => b.score - a.score);
          assert.deepEqual(scores.map((s) => s.label), expected.map((e) => e.label));
          scores.forEach((s, i) => assert.ok(Math.abs(s.score - expected[i].score) < 1e-4, `${s.score} vs ${expected[i].score}`));
        }
      } finally {
        await fp32.close();
      }
    });

    test("the int8 file answers the same labels for the MRPC pairs", async () => {
      for (const c of readReference("tiny-bert-mrpc").filter((c) => c.text_pair)) {
        const res = await post("/models/tiny-bert-mrpc", { inputs: { text: c.text, text_pair: c.text_pair } });
        const [scores] = (await res.json()) as { label: string; score: number }[][];
        const best = c.outputs.logits.data.indexOf(Math.max(...c.outputs.logits.data));
        assert.equal(scores[0].label, readJson("tiny-bert-mrpc", "config.json").id2label[best]);
      }
    });

    test("a list of inputs gets one list per input; top_k and function_to_apply apply", async () => {
      const res = await post("/models/tiny-bert-sentiment", {
        inputs: ["I loved it.", "Terrible service, never again."],
        parameters: { top_k: 2, function_to_apply: "none" },
      });
      const out = (await res.json()) as { label: string; score: number }[][];
      assert.equal(out.length, 2);
      for (const row of out) {
        assert.equal(row.length, 2);
        assert.ok(row[0].score >= row[1].score);
      }
    });

    test("regression returns the raw value; multi-label uses sigmoid", async () => {
      const [[reg]] = (await (await post("/models/tiny-bert-regression", { inputs: "A fine day." })).json()) as any;
      assert.equal(reg.label, "LABEL_0");
      const multi = (await (await post("/models/tiny-bert-multilabel", { inputs: "You are a spammer." })).json()) as any;
      assert.equal(multi[0].length, 4);
      const sum = multi[0].reduce((a: number, s: any) => a + s.score, 0);
      assert.ok(multi[0].every((s: any) => s.score > 0 && s.score < 1));
      assert.notEqual(Math.round(sum * 1e6), 1e6, "sigmoid scores do not sum to 1");
    });

    test("errors are JSON with the right status", async () => {
      const cases: [Promise<Response>, number, string][] = [
        [post("/models/nope/nothing", { inputs: "x" }), 404, "model_not_found"],
        [post("/models/tiny-bert-sentiment", "{not json"), 400, "invalid_json"],
        [post("/models/tiny-bert-sentiment", { nothing: 1 }), 422, "invalid_input"],
        [post("/models/tiny-bert-sentiment", { inputs: 42 }), 422, "invalid_input"],
        [post("/models/tiny-bert-sentiment", { inputs: "x", parameters: { top_k: 0 } }), 422, "invalid_input"],
        [post("/models/tiny-bert-sentiment", { inputs: Array.from({ length: 65 }, (_, i) => `text ${i}`) }), 413, "payload_too_large"],
        [post("/models/tiny-bert-sentiment", { inputs: "x".repeat(2 << 20) }), 413, "payload_too_large"],
        [fetch(`${base}/nowhere`), 404, "not_found"],
      ];
      for (const [response, status, type] of cases) {
        const res = await response;
        const body = (await res.json()) as { error: string; error_type: string };
        assert.equal(res.status, status, JSON.stringify(body));
        assert.equal(body.error_type, type);
        assert.equal(typeof body.error, "string");
      }
    });

    test("the body limit holds for chunked bodies too, whose size no header declares", async () => {
      // node:http sends a body written in parts without Content-Length as chunked; a connection of
      // its own, since the server drops one whose request body it did not read to the end.
      const chunked = (text: string) =>
        new Promise<{ status: number; body: any }>((ok, fail) => {
          const req = request(`${base}/models/tiny-bert-sentiment`, { method: "POST", agent: false, headers: { "content-type": "application/json" } }, (res) => {
            let body = "";
            res.on("data", (d) => (body += d)).on("end", () => ok({ status: res.statusCode!, body: JSON.parse(body) }));
          });
          req.on("error", fail);
          req.write(text.slice(0, 5));
          req.end(text.slice(5));
        });
      const big = await chunked(JSON.stringify({ inputs: "x".repeat(2 << 20) }));
      assert.equal(big.status, 413);
      assert.equal(big.body.error_type, "payload_too_large");
      const small = await chunked(JSON.stringify({ inputs: "A fine day." }));
      assert.equal(small.status, 200);
      assert.deepEqual(small.body, await (await post("/models/tiny-bert-sentiment", { inputs: "A fine day." })).json());
    });

    test("the @huggingface/inference client works unchanged", async () => {
      const client = new InferenceClient(undefined, { endpointUrl: `${base}/models/tiny-bert-mrpc` });
      const out = await client.textClassification({ inputs: "The cat sat on the mat." });
      assert.equal(out.length, 2);
      assert.deepEqual(out.map((o) => o.label).sort(), ["equivalent", "not_equivalent"]);
      assert.ok(Math.abs(out[0].score + out[1].score - 1) < 1e-6);
    });

    test("the client's other tasks work unchanged too", async () => {
      const client = (id: string) => new InferenceClient(undefined, { endpointUrl: `${base}/models/${id}` });
      const text = "Angela Merkel met Tim Cook at Apple in Berlin.";
      const entities = await client("tiny-bert-ner").tokenClassification({ inputs: text });
      assert.ok(entities.length > 0);
      for (const e of entities) assert.equal(e.word, text.slice(e.start, e.end));

      const context = "The Eiffel Tower is a wrought-iron lattice tower in Paris, France.";
      const answer = await client("tiny-bert-qa").questionAnswering({ inputs: { question: "Where is the tower?", context } });
      assert.equal(answer.answer, context.slice(answer.start, answer.end));
      assert.ok(answer.score > 0 && answer.score <= 1);

      const fills = await client("tiny-bert-mlm").fillMask({ inputs: "The capital of France is [MASK]." });
      assert.equal(fills.length, 5);
      for (const f of fills) assert.equal(f.sequence.includes("[MASK]"), false);

      const vector = await client("tiny-bert-embed").featureExtraction({ inputs: "hello world" });
      assert.ok(Array.isArray(vector) && vector.length > 0);

      const zeroShot = await client("tiny-bert-nli").zeroShotClassification({
        inputs: "The new phone has a great camera.",
        parameters: { candidate_labels: ["technology", "sports", "politics"] },
      });
      assert.deepEqual(zeroShot.map((z) => z.label).sort(), ["politics", "sports", "technology"]);
      assert.ok(Math.abs(zeroShot.reduce((s, z) => s + z.score, 0) - 1) < 1e-6);
    });
  });
}

describe("serve --threads and --spin", () => {
  const ask = async (port: number) => {
    const res = await fetch(`http://127.0.0.1:${port}/models/tiny-bert-sentiment`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ inputs: ["I loved it.", "Terrible, from the first minute to the last."] }),
    });
    assert.equal(res.status, 200);
    return (await res.json()) as { label: string; score: number }[][];
  };

  test("the native backend on one intra-op thread, or with its pool spinning, answers as on its default pool", async () => {
    const pooled = await startServer({ models: FIXTURES_DIR, port: 0, backend: "native" });
    const others = [
      await startServer({ models: FIXTURES_DIR, port: 0, backend: "native", threads: 1 }),
      await startServer({ models: FIXTURES_DIR, port: 0, backend: "native", spinning: true }),
    ];
    try {
      const expected = await ask(pooled.port);
      for (const other of others) {
        const got = await ask(other.port);
        assert.deepEqual(got.map((row) => row.map((s) => s.label)), expected.map((row) => row.map((s) => s.label)));
        got.flat().forEach((s, i) => assert.ok(Math.abs(s.score - expected.flat()[i].score) < 1e-6, `${s.score} vs ${expected.flat()[i].score}`));
      }
    } finally {
      await Promise.all([pooled, ...others].map((server) => server.close()));
    }
  });

  test("are refused for the WASM backends, and threads for anything but a whole number ≥ 1", async () => {
    await assert.rejects(startServer({ models: FIXTURES_DIR, port: 0, backend: "wasm", threads: 2 }), /native backend only/);
    await assert.rejects(startServer({ models: FIXTURES_DIR, port: 0, backend: "bert-wasm", spinning: true }), /native backend only/);
    for (const threads of [0, 1.5, Number.NaN]) {
      await assert.rejects(startServer({ models: FIXTURES_DIR, port: 0, backend: "native", threads }), /at least 1/);
    }
  });
});
