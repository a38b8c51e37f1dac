import type { z } from "@hono/zod-openapi";
import type { OutputTensor } from "../engine/backend.ts";
import { padBatch, rowOf } from "../engine/batch.ts";
import type { LoadedModel, TaskName } from "../engine/model.ts";
import type { Encoding } from "../engine/tokenizer.ts";
import { ServiceError, tooLarge } from "../errors.ts";

/**
 * A head's pre- and post-processing: validated inputs and parameters in, JSON in the Hugging Face
 * Inference API shape out. Tokenizing and running the graph go through the model.
 */
export interface Task<Inputs = unknown, Parameters = unknown> {
  readonly name: TaskName;
  readonly inputs: z.ZodType<Inputs>;
  readonly parameters: z.ZodType<Parameters>;
  run(model: LoadedModel, inputs: Inputs, parameters: Parameters): Promise<unknown>;
}

/** Most inputs one request may carry; past it the caller gets 413 and should split the request. */
export const MAX_BATCH_INPUTS = 64;

/** A single input or a list of them, as the pipelines accept; returns the list and whether it was one. */
export function asBatch<T>(inputs: T | T[]): { items: T[]; single: boolean } {
  const single = !Array.isArray(inputs);
  const items = single ? [inputs as T] : (inputs as T[]);
  if (items.length > MAX_BATCH_INPUTS) {
    throw tooLarge(`${items.length} inputs in one request; at most ${MAX_BATCH_INPUTS} are accepted`);
  }
  return { items, single };
}

/** Most rows one run gets; longer lists of encodings (windows, label pairs) run in chunks. */
export const RUN_CHUNK = 32;

/**
 * Runs encodings through the model in padded chunks and returns, per encoding, its row of each
 * named output: views into the output tensors, without the batch axis (and still padded).
 */
export async function runRows(
  model: LoadedModel,
  encodings: readonly Encoding[],
  names: readonly string[],
): Promise<Record<string, OutputTensor>[]> {
  const rows: Record<string, OutputTensor>[] = [];
  for (let i = 0; i < encodings.length; i += RUN_CHUNK) {
    const chunk = encodings.slice(i, i + RUN_CHUNK);
    const outputs = await model.run(padBatch(chunk, model.tokenizer.padTokenId));
    const missing = names.filter((n) => !outputs[n]);
    if (missing.length) throw new ServiceError(500, "bad_model_output", `model "${model.id}" has no output ${missing.join(", ")}`);
    chunk.forEach((_, row) => {
      const entry: Record<string, OutputTensor> = {};
      for (const name of names) {
        const { data, dims } = outputs[name];
        entry[name] = { data: rowOf(data, dims, row), dims: dims.slice(1) };
      }
      rows.push(entry);
    });
  }
  return rows;
}
