import assert from "node:assert/strict";
import { test } from "node:test";
import { padBatch, rowOf } from "../src/engine/batch.ts";
import type { Encoding } from "../src/engine/tokenizer.ts";

const encoding = (ids: number[], typeIds = ids.map(() => 0)) => ({ ids, typeIds, attentionMask: ids.map(() => 1) }) as unknown as Encoding;

test("padBatch lays encodings out as int64, padded to the longest with the pad id and a zero mask", () => {
  const batch = padBatch([encoding([101, 30521, 102]), encoding([101, 2_000_000_000, 7, 102], [0, 0, 1, 1])], 3);
  assert.deepEqual(batch.dims, [2, 4]);
  assert.deepEqual([...batch.inputIds], [101n, 30521n, 102n, 3n, 101n, 2_000_000_000n, 7n, 102n]);
  assert.deepEqual([...batch.attentionMask], [1n, 1n, 1n, 0n, 1n, 1n, 1n, 1n]);
  assert.deepEqual([...batch.tokenTypeIds], [0n, 0n, 0n, 0n, 0n, 0n, 1n, 1n]);
});

test("padBatch groups choices as [batch, choices, seq], and refuses a ragged group", () => {
  const batch = padBatch([encoding([1]), encoding([1, 2]), encoding([3]), encoding([4])], 0, 2);
  assert.deepEqual(batch.dims, [2, 2, 2]);
  assert.deepEqual([...batch.inputIds], [1n, 0n, 1n, 2n, 3n, 0n, 4n, 0n]);
  assert.throws(() => padBatch([encoding([1])], 0, 2), RangeError);
});

test("rowOf is a view of one row", () => {
  const data = Float32Array.from([0, 1, 2, 3, 4, 5]);
  const row = rowOf(data, [3, 2], 1);
  assert.deepEqual([...row], [2, 3]);
  assert.equal(row.buffer, data.buffer);
});
