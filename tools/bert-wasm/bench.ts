/**
 * bert-wasm vs onnxruntime-web (1 thread), same process, same inputs: median ms per run at a given
 * sequence length, plus the max |logit| difference of each against onnxruntime fp32.
 *
 *   /usr/bin/python3 tools/bert-wasm/bench-model.py /tmp/bench-minilm
 *   node --import tsx tools/bert-wasm/bench.ts /tmp/bench-minilm [seq=128] [runs=30]
 */
import { readFileSync } from "node:fs";
import type { Batch, Session } from "../../src/engine/backend.ts";
import { loadBertWasmBackend } from "../../src/engine/backends/bert-wasm/node.ts";
import { packBertWasm } from "../../src/engine/backends/bert-wasm/pack.ts";
import { createBackend } from "../../src/runtimes/backends.ts";

const dir = process.argv[2] ?? "/tmp/bench-minilm";
const seq = Number(process.argv[3] ?? 128);
const runs = Number(process.argv[4] ?? 30);

let seed = 1;
const rnd = () => ((seed = (seed * 1103515245 + 12345) >>> 0) >>> 8) / 2 ** 24;
const ids = Array.from({ length: seq }, (_, i) => (i === 0 ? 101 : i === seq - 1 ? 102 : 1000 + Math.floor(rnd() * 20000)));
const batch: Batch = {
  dims: [1, seq],
  inputIds: BigInt64Array.from(ids, BigInt),
  attentionMask: new BigInt64Array(seq).fill(1n),
  tokenTypeIds: new BigInt64Array(seq),
};

const diff = (a: Float32Array, b: Float32Array) => a.reduce((m, v, i) => Math.max(m, Math.abs(v - b[i])), 0);

const ort = await createBackend("wasm", 1);
const fp32 = readFileSync(`${dir}/model.onnx`);
const int8 = readFileSync(`${dir}/model_quantized.onnx`);
const sessions: [string, Session][] = [
  ["onnxruntime-web fp32", await ort.createSession(fp32)],
  ["onnxruntime-web int8", await ort.createSession(int8)],
];
for (const relaxed of [false, true]) {
  const be = await loadBertWasmBackend({ relaxed, log: () => {} });
  const variant = await be.variant();
  for (const [src, bytes] of [["fp32", fp32], ["int8", int8]] as const) {
    sessions.push([`bert-wasm ${variant} (from ${src})`, await be.createSession(packBertWasm(bytes))]);
  }
}
// Round-robin so that every engine sees the same background load (the machine is shared).
const times: number[][] = sessions.map(() => []);
const outs: Float32Array[] = [];
for (let r = -3; r < runs; r++) {
  for (let i = 0; i < sessions.length; i++) {
    const t0 = performance.now();
    outs[i] = (await sessions[i][1].run(batch)).logits.data;
    if (r >= 0) times[i].push(performance.now() - t0);
  }
}
console.log(`seq ${seq}, 1 thread, ${runs} interleaved runs each`);
for (let i = 0; i < sessions.length; i++) {
  const t = times[i].sort((a, b) => a - b);
  console.log(`${sessions[i][0].padEnd(34)} median ${t[t.length >> 1].toFixed(1)} ms  min ${t[0].toFixed(1)} ms  max |logit - ort fp32| ${diff(outs[i], outs[0]).toFixed(4)}`);
}
