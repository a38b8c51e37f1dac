/**
 * Embedding and reranking routes in the shapes other servers made common, so that their clients work
 * unchanged against bert-edge:
 *
 * - `POST /embed` (text-embeddings-inference): `{"inputs": string | string[], "normalize"?: true,
 *   "truncate"?: false, "model"?: id}` → `number[][]`, one vector per input (a list even for one text).
 *   Pooling is the model's own when its config.json says (see `poolingOf`), else mean.
 * - `POST /rerank` (text-embeddings-inference): `{"query", "texts": string[], "raw_scores"?: false,
 *   "return_text"?: false, "truncate"?: false, "model"?: id}` → `[{"index", "score", "text"?}]` best
 *   first. Each (query, text) pair is scored by a cross-encoder, a text-classification model with
 *   one label; the score is the sigmoid of its logit, or the logit itself with raw_scores.
 * - `POST /v1/embeddings` (OpenAI): `{"input": string | string[], "model"?: id, "encoding_format"?:
 *   "float" | "base64"}` → `{"object": "list", "data": [{"object": "embedding", "index", "embedding"}],
 *   "model", "usage": {"prompt_tokens", "total_tokens"}}`. Vectors are normalised as OpenAI's are;
 *   base64 is the little-endian float32 bytes. Tokens are counted with the special tokens.
 *
 * Without `model`, the first suitable model of `GET /models` serves: a feature-extraction model for
 * the embedding routes, a one-label text-classification model (not a regression one) for /rerank.
 * As in text-embeddings-inference, a text longer than the model takes is a 413 unless `truncate` is
 * true (/v1/embeddings never truncates).
 */
import { type OpenAPIHono, z } from "@hono/zod-openapi";
import { padBatch } from "../engine/batch.ts";
import type { LoadedModel } from "../engine/model.ts";
import type { ModelInfo, ModelRegistry } from "../engine/registry.ts";
import { invalidInput, ServiceError, tooLarge } from "../errors.ts";
import { hiddenStates, poolingOf, pooled } from "../tasks/feature-extraction.ts";
import { sigmoid } from "../tasks/math.ts";
import { asBatch } from "../tasks/task.ts";
import { parseBody } from "./body.ts";

const modelField = z.string().min(1).optional().openapi({
  description: "Model id (GET /models); default: the first model suited to the route",
});

const embedRequest = z
  .object({
    inputs: z.union([z.string(), z.array(z.string()).min(1)]),
    normalize: z.boolean().optional().openapi({ description: "L2-normalise the vectors (default true)" }),
    truncate: z.boolean().optional().openapi({ description: "Cut texts to the model's length (default false: 413)" }),
    model: modelField,
  })
  .openapi("EmbedRequest", { example: { inputs: ["What is Deep Learning?"] } });

const embedResponse = z.array(z.array(z.number())).openapi("EmbedResponse");

const rerankRequest = z
  .object({
    query: z.string(),
    texts: z.array(z.string()).min(1),
    raw_scores: z.boolean().optional().openapi({ description: "Logits instead of sigmoid scores (default false)" }),
    return_text: z.boolean().optional().openapi({ description: "Echo each text in its rank (default false)" }),
    truncate: z.boolean().optional().openapi({ description: "Cut pairs to the model's length (default false: 413)" }),
    model: modelField,
  })
  .openapi("RerankRequest", {
    example: { query: "What is Deep Learning?", texts: ["Deep Learning is not...", "Deep learning is..."] },
  });

const rank = z.object({ index: z.number().int(), score: z.number(), text: z.string().optional() }).openapi("Rank");
const rerankResponse = z.array(rank).openapi("RerankResponse");

const openAiRequest = z
  .object({
    input: z.union([z.string(), z.array(z.string()).min(1)]),
    model: modelField,
    encoding_format: z.enum(["float", "base64"]).optional(),
  })
  .openapi("OpenAIEmbeddingRequest", { example: { input: "The food was delicious.", model: "tiny-bert-embed" } });

const openAiResponse = z
  .object({
    object: z.literal("list"),
    data: z.array(
      z.object({
        object: z.literal("embedding"),
        index: z.number().int(),
        embedding: z.union([z.array(z.number()), z.string()]),
      }),
    ),
    model: z.string(),
    usage: z.object({ prompt_tokens: z.number().int(), total_tokens: z.number().int() }),
  })
  .openapi("OpenAIEmbeddingResponse");

type Purpose = "embeddings" | "rerank";

const suits: Record<Purpose, (info: ModelInfo) => boolean> = {
  embeddings: (info) => info.task === "feature-extraction",
  rerank: (info) => info.task === "text-classification" && info.labels.length === 1 && info.problem_type !== "regression",
};

const needs: Record<Purpose, string> = {
  embeddings: "a feature-extraction model",
  rerank: "a text-classification model with one label (a cross-encoder)",
};

/** The requested model, checked against the route; or the first suitable one. */
async function resolveModel(registry: ModelRegistry, purpose: Purpose, requested?: string): Promise<LoadedModel> {
  if (requested !== undefined) {
    const info = await registry.info(requested);
    if (!suits[purpose](info)) {
      throw invalidInput(`model "${requested}" serves ${info.task}; this route needs ${needs[purpose]}`);
    }
    return registry.get(requested);
  }
  const candidate = (await registry.list()).find(suits[purpose]);
  if (candidate) return registry.get(candidate.id);
  throw new ServiceError(404, "model_not_found", `no model serves this route: it needs ${needs[purpose]} (GET /models)`);
}

/** Pooled vectors for `texts` and how many tokens they took. */
async function embed(model: LoadedModel, texts: string[], normalize: boolean, truncate: boolean) {
  const states = await hiddenStates(model, texts, truncate);
  const vectors = pooled(states, poolingOf(model.config) ?? "mean", normalize);
  const tokens = states.encodings.reduce((n, e) => n + e.ids.length, 0);
  return { vectors, tokens };
}

/** Base64 of the vector as little-endian float32, OpenAI's `encoding_format: "base64"`. */
export function float32Base64(vector: readonly number[]): string {
  const view = new DataView(new ArrayBuffer(vector.length * 4));
  vector.forEach((x, i) => view.setFloat32(i * 4, x, true));
  const bytes = new Uint8Array(view.buffer);
  let binary = "";
  for (let i = 0; i < bytes.length; i += 0x8000) binary += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
  return btoa(binary);
}

/** Cross-encoder logits of (query, text) pairs, one per text. */
async function rerankLogits(model: LoadedModel, query: string, texts: string[], truncate: boolean): Promise<number[]> {
  const { tokenizer, maxLength } = model;
  const encodings = texts.map((text, i) => {
    const e = tokenizer.encode(query, text, truncate ? { maxLength, truncation: "longest_first" } : {})[0];
    if (e.ids.length > maxLength) {
      throw tooLarge(`query + texts.${i} is ${e.ids.length} tokens; the model takes ${maxLength} (set truncate to cut it)`);
    }
    return e;
  });
  const outputs = await model.run(padBatch(encodings, tokenizer.padTokenId));
  const logits = outputs.logits ?? Object.values(outputs)[0];
  const width = logits.dims[1] ?? 1;
  return texts.map((_, i) => logits.data[i * width]);
}

export function registerEmbeddingRoutes(app: OpenAPIHono, registry: ModelRegistry) {
  app.post("/embed", async (c) => {
    const body = await parseBody(c, embedRequest);
    const { items } = asBatch(body.inputs);
    const model = await resolveModel(registry, "embeddings", body.model);
    const { vectors } = await embed(model, items, body.normalize ?? true, body.truncate ?? false);
    return c.json(vectors);
  });

  app.post("/rerank", async (c) => {
    const body = await parseBody(c, rerankRequest);
    const { items: texts } = asBatch(body.texts);
    const model = await resolveModel(registry, "rerank", body.model);
    const logits = await rerankLogits(model, body.query, texts, body.truncate ?? false);
    const ranks = logits.map((logit, index) => ({
      index,
      score: body.raw_scores ? logit : sigmoid(logit),
      ...(body.return_text ? { text: texts[index] } : {}),
    }));
    ranks.sort((a, b) => b.score - a.score || a.index - b.index);
    return c.json(ranks);
  });

  app.post("/v1/embeddings", async (c) => {
    const body = await parseBody(c, openAiRequest);
    const { items } = asBatch(body.input);
    const model = await resolveModel(registry, "embeddings", body.model);
    const { vectors, tokens } = await embed(model, items, true, false);
    const base64 = body.encoding_format === "base64";
    return c.json({
      object: "list" as const,
      data: vectors.map((v, index) => ({
        object: "embedding" as const,
        index,
        embedding: base64 ? float32Base64(v) : v,
      })),
      model: model.id,
      usage: { prompt_tokens: tokens, total_tokens: tokens },
    });
  });

  const json = <T extends z.ZodType>(schema: T) => ({ content: { "application/json": { schema } } });
  const error = { description: "Error `{error, error_type}`: 404 no model, 413 too many or too long inputs, 422 invalid" };
  app.openAPIRegistry.registerPath({
    method: "post",
    path: "/embed",
    summary: "Embeddings, as text-embeddings-inference's /embed",
    request: { body: json(embedRequest) },
    responses: { 200: { description: "One vector per input", ...json(embedResponse) }, default: error },
  });
  app.openAPIRegistry.registerPath({
    method: "post",
    path: "/rerank",
    summary: "Rerank texts against a query with a cross-encoder, as text-embeddings-inference's /rerank",
    request: { body: json(rerankRequest) },
    responses: { 200: { description: "Ranks, best first", ...json(rerankResponse) }, default: error },
  });
  app.openAPIRegistry.registerPath({
    method: "post",
    path: "/v1/embeddings",
    summary: "Embeddings, as OpenAI's /v1/embeddings",
    request: { body: json(openAiRequest) },
    responses: { 200: { description: "Embeddings list", ...json(openAiResponse) }, default: error },
  });
}
