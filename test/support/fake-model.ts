import type { LoadedModel } from "../../src/engine/model.ts";

/** A hand-made model for head tests: the given id, task, tokenizer and run; placeholders for the rest. */
export function fakeModel(fields: Pick<LoadedModel, "id" | "task" | "tokenizer" | "run"> & Partial<LoadedModel>): LoadedModel {
  return { config: {}, labels: [], maxLength: 512, file: "onnx/model.onnx", ...fields };
}
