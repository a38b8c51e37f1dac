import type { z } from "@hono/zod-openapi";
import type { LoadedModel, TaskName } from "../engine/model.ts";
import { tooLarge } from "../errors.ts";

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
