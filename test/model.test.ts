import assert from "node:assert/strict";
import { test } from "node:test";
import { labelsOf, taskFromConfig } from "../src/engine/model.ts";

test("the task follows config.json architectures", () => {
  const t = (architectures: string[], id2label?: Record<string, string>) => taskFromConfig({ architectures, id2label });
  assert.equal(t(["BertForSequenceClassification"]), "text-classification");
  assert.equal(t(["DistilBertForSequenceClassification"]), "text-classification");
  assert.equal(t(["BertForTokenClassification"]), "token-classification");
  assert.equal(t(["BertForQuestionAnswering"]), "question-answering");
  assert.equal(t(["BertForMultipleChoice"]), "multiple-choice");
  assert.equal(t(["BertForMaskedLM"]), "fill-mask");
  assert.equal(t(["BertModel"]), "feature-extraction");
  assert.equal(t(["BertForSequenceClassification"], { 0: "contradiction", 1: "neutral", 2: "entailment" }), "zero-shot-classification");
  assert.equal(t(["ElectraForTokenClassification"]), "token-classification");
  assert.throws(() => t(["GPT2LMHeadModel"]), /not a BERT head/);
  assert.throws(() => t(["BertForPreTraining"]), /not a BERT head/);
  assert.throws(() => taskFromConfig({}), /no `architectures`/);
});

test("labels come from id2label in id order", () => {
  assert.deepEqual(labelsOf({ id2label: { "10": "k", "2": "c", "0": "a" } }), ["a", "c", "k"]);
  assert.deepEqual(labelsOf({}), []);
});
