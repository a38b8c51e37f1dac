import type { TaskName } from "../engine/model.ts";
import { featureExtraction } from "./feature-extraction.ts";
import { fillMask } from "./fill-mask.ts";
import { multipleChoice } from "./multiple-choice.ts";
import { questionAnswering } from "./question-answering.ts";
import type { Task } from "./task.ts";
import { textClassification } from "./text-classification.ts";
import { tokenClassification } from "./token-classification.ts";
import { zeroShotClassification } from "./zero-shot-classification.ts";

/** The head each task name is served by. */
export const TASK_HANDLERS: Record<TaskName, Task<any, any>> = {
  "text-classification": textClassification,
  "token-classification": tokenClassification,
  "question-answering": questionAnswering,
  "multiple-choice": multipleChoice,
  "fill-mask": fillMask,
  "feature-extraction": featureExtraction,
  "zero-shot-classification": zeroShotClassification,
};
