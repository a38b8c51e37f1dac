import type { Batch } from "./backend.ts";
import type { Encoding } from "./tokenizer.ts";

/**
 * Pads encodings to the longest one and lays them out flat. With `groupSize` > 1 (multiple choice)
 * every `groupSize` consecutive encodings form one row of a [batch, groupSize, seq] batch.
 */
export function padBatch(encodings: readonly Pick<Encoding, "ids" | "attentionMask" | "typeIds">[], padTokenId: number, groupSize = 1): Batch {
  if (encodings.length === 0 || encodings.length % groupSize !== 0) {
    throw new RangeError(`cannot batch ${encodings.length} encodings in groups of ${groupSize}`);
  }
  const seq = Math.max(...encodings.map((e) => e.ids.length));
  const size = encodings.length * seq;
  const inputIds = new BigInt64Array(size).fill(BigInt(padTokenId));
  const attentionMask = new BigInt64Array(size);
  const tokenTypeIds = new BigInt64Array(size);
  // Written as the low 32-bit words of each int64 (little-endian; ids, masks and type ids are small and
  // non-negative): no BigInt is made per token.
  const [ids32, mask32, types32] = [inputIds, attentionMask, tokenTypeIds].map((a) => new Int32Array(a.buffer, a.byteOffset, 2 * a.length));
  encodings.forEach((e, row) => {
    const base = 2 * row * seq;
    for (let i = 0; i < e.ids.length; i++) {
      ids32[base + 2 * i] = e.ids[i];
      mask32[base + 2 * i] = e.attentionMask[i];
      types32[base + 2 * i] = e.typeIds[i];
    }
  });
  const dims = groupSize > 1 ? [encodings.length / groupSize, groupSize, seq] : [encodings.length, seq];
  return { dims, inputIds, attentionMask, tokenTypeIds };
}

/** Row `row` of a [rows, ...rest] tensor, as a view (no copy). */
export function rowOf(data: Float32Array, dims: readonly number[], row: number): Float32Array {
  const stride = dims.slice(1).reduce((a, b) => a * b, 1);
  return data.subarray(row * stride, (row + 1) * stride);
}
