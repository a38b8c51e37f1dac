import type { Batch, Outputs, Session } from "./backend.ts";
import type { RunTiming } from "./queue.ts";
import type { BertTokenizer } from "./tokenizer.ts";

export const TASKS = [
  "text-classification",
  "token-classification",
  "question-answering",
  "multiple-choice",
  "fill-mask",
  "feature-extraction",
  "zero-shot-classification",
] as const;
export type TaskName = (typeof TASKS)[number];

/** The keys of a Hugging Face config.json that bert-edge reads. */
export interface ModelConfig {
  architectures?: string[];
  model_type?: string;
  id2label?: Record<string, string>;
  problem_type?: "regression" | "single_label_classification" | "multi_label_classification";
  num_labels?: number;
  max_position_embeddings?: number;
  [key: string]: unknown;
}

/** Encoder families whose graphs take BERT's inputs and whose tokenizers are WordPiece. */
const FAMILIES = ["Bert", "DistilBert", "Electra", "MobileBert", "ConvBert"];

const ARCHITECTURE_TASKS: [suffix: string, task: TaskName][] = [
  ["ForSequenceClassification", "text-classification"],
  ["ForTokenClassification", "token-classification"],
  ["ForQuestionAnswering", "question-answering"],
  ["ForMultipleChoice", "multiple-choice"],
  ["ForMaskedLM", "fill-mask"],
  ["Model", "feature-extraction"],
];

/**
 * The task a model serves, from its config.json `architectures`. A sequence classifier whose labels
 * include "entailment" is an NLI model and serves zero-shot classification, as on the Hugging Face Hub.
 */
export function taskFromConfig(config: ModelConfig): TaskName {
  const architecture = config.architectures?.[0];
  if (!architecture) throw new Error("config.json has no `architectures`, so the task is unknown");
  const family = FAMILIES.find((f) => architecture.startsWith(f));
  const head = family && architecture.slice(family.length);
  const match = ARCHITECTURE_TASKS.find(([suffix]) => head === suffix);
  if (!match) throw new Error(`architecture ${architecture} is not a BERT head bert-edge serves`);
  const task = match[1];
  if (task === "text-classification" && labelsOf(config).some((l) => l.toLowerCase().startsWith("entail"))) {
    return "zero-shot-classification";
  }
  return task;
}

/** Labels in id order, from `id2label` (keys are stringified ids). */
export function labelsOf(config: ModelConfig): string[] {
  const entries = Object.entries(config.id2label ?? {}).map(([id, label]) => [Number(id), label] as const);
  entries.sort((a, b) => a[0] - b[0]);
  return entries.map(([, label]) => label);
}

/** A model ready to serve: what the tasks see. */
export interface LoadedModel {
  readonly id: string;
  readonly task: TaskName;
  readonly config: ModelConfig;
  readonly labels: string[];
  readonly tokenizer: BertTokenizer;
  /** Longest sequence the model takes, special tokens included. */
  readonly maxLength: number;
  /** The ONNX file that is served, relative to the model folder. */
  readonly file: string;
  /** Runs a padded batch; `timing`, when given, is filled with where the time went (queue, run). */
  run(batch: Batch, timing?: RunTiming): Promise<Outputs>;
}

/** Builds a LoadedModel around a session. */
export function loadedModel(
  fields: Omit<LoadedModel, "run" | "labels" | "task" | "maxLength">,
  session: Session,
): LoadedModel & { session: Session } {
  const { config, tokenizer } = fields;
  return {
    ...fields,
    task: taskFromConfig(config),
    labels: labelsOf(config),
    maxLength: Math.min(tokenizer.modelMaxLength, config.max_position_embeddings ?? Infinity),
    session,
    run: (batch) => session.run(batch),
  };
}
