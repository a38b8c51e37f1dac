import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { test } from "node:test";
import type { Backend } from "../src/engine/backend.ts";
import { BertWasmOrOrt } from "../src/engine/backends/bert-wasm-or-ort.ts";
import { BertWasmUnsupportedError } from "../src/engine/backends/bert-wasm/format.ts";
import { loadBertWasmBackend } from "../src/engine/backends/bert-wasm/node.ts";
import { packBertWasm } from "../src/engine/backends/bert-wasm/pack.ts";
import { createBackend } from "../src/runtimes/backends.ts";
import { FIXTURES_DIR } from "./support/fixtures.ts";

const graph = () => readFileSync(`${FIXTURES_DIR}/tiny-bert-sentiment/onnx/model_quantized.onnx`);

/** Records which backend made each session. */
function tagged(name: string, real: Backend, made: string[]): Backend {
  return { name, createSession: (m, d) => (made.push(name), real.createSession(m, d)) };
}

test("bert-wasm runs what it can convert and falls back, logged, for the rest", async () => {
  const made: string[] = [];
  const logs: string[] = [];
  const own = tagged("own", await loadBertWasmBackend({ log: () => {} }), made);
  const ort = tagged("ort", await createBackend("wasm"), made);

  const backend = new BertWasmOrOrt(own, ort, (onnx) => packBertWasm(onnx), (l) => logs.push(l));
  await backend.createSession(graph()); // converted on the fly
  await backend.createSession(packBertWasm(graph())); // already packed
  assert.deepEqual(made, ["own", "own"]);
  assert.equal(logs.length, 0);

  const refusing = new BertWasmOrOrt(own, ort, () => {
    throw new BertWasmUnsupportedError("relative position embeddings");
  }, (l) => logs.push(l));
  const session = await refusing.createSession(graph());
  assert.deepEqual(made.slice(2), ["ort"]);
  assert.match(logs[0], /bert-wasm cannot run this model \(relative position embeddings\); using onnxruntime-web/);
  assert.deepEqual([...session.outputNames], ["logits"]);

  const noConverter = new BertWasmOrOrt(own, ort, undefined, (l) => logs.push(l));
  await noConverter.createSession(graph());
  assert.match(logs[1], /no bert-wasm file and no converter/);
});
