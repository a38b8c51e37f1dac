import { OpenAPIHono, z } from "@hono/zod-openapi";
import type { Context, MiddlewareHandler } from "hono";
import { bodyLimit } from "hono/body-limit";
import type { LoadedModel } from "../engine/model.ts";
import { expectArrival, OverloadedError } from "../engine/queue.ts";
import type { ModelRegistry } from "../engine/registry.ts";
import { invalidInput, tooLarge } from "../errors.ts";
import { TASK_HANDLERS } from "../tasks/index.ts";
import type { Task } from "../tasks/task.ts";
import { cacheKey, canonicalJson, MemoryCache, type ResponseCache, type Sha256Hex } from "./cache.ts";
import { registerEmbeddingRoutes } from "./embeddings.ts";
import { readJson, validate } from "./body.ts";
import { errorBody, errorResponse } from "./errors.ts";
import { registerOpenApi } from "./openapi.ts";

export interface AppOptions {
  registry: ModelRegistry;
  /** Largest request body accepted, in bytes (413 beyond). */
  maxBodyBytes?: number;
  /** Where answers are kept for repeated requests; `false` turns caching off. */
  cache?: ResponseCache | false;
  /** `Cache-Control: max-age` of answers, in seconds. */
  cacheMaxAge?: number;
  /** SHA-256 for cache keys and ETags: the runtime's native one where it has a synchronous one. */
  sha256Hex?: Sha256Hex;
}

const requestBody = z.object({
  inputs: z.unknown(),
  parameters: z.record(z.string(), z.unknown()).optional(),
});

export function createApp({ registry, maxBodyBytes = 1 << 20, cache = new MemoryCache(), cacheMaxAge = 3600, sha256Hex }: AppOptions) {
  const app = new OpenAPIHono();
  app.onError((err, c) => {
    // An error is never cached: a failed load or a full queue must not outlive its cause. (Answers
    // carry their ETag in their own headers, so an error thrown after the key was made has none.)
    c.header("Cache-Control", "no-store");
    // A full model queue: retry later.
    if (err instanceof OverloadedError) c.header("Retry-After", String(err.retryAfter));
    return errorResponse(c, err);
  });
  app.notFound((c) => c.json(errorBody(`no route ${c.req.method} ${c.req.path}`, "not_found"), 404));
  app.use(limitBody(maxBodyBytes));

  app.get("/health", (c) => c.json({ status: "ok", backend: registry.backendName }));
  app.get("/models", async (c) => c.json(await registry.list()));

  // Model ids may contain '/', as on the Hub ("org/name"); "org/name@version" pins a packed version.
  // (One route: Hono's router cannot tell "/models/:id{.+}/load" from "/models/:id{.+}".)
  app.post("/models/:id{.+}", async (c) => {
    let id = c.req.param("id");
    if (id.endsWith("/load")) {
      // Warms a model: fetch, verify and create its session now rather than on the first request.
      id = id.slice(0, -"/load".length);
      await registry.get(id);
      return c.json(await registry.info(id));
    }
    // Counted until it reaches the model's queue, so that a run ending meanwhile waits for it (src/engine/queue.ts).
    const arrived = expectArrival();
    try {
      return await answer(c, id, arrived);
    } finally {
      arrived();
    }
  });

  const answer = async (c: Context, id: string, arrived: () => void) => {
    const info = await registry.info(id);
    const task = TASK_HANDLERS[info.task];
    const body = requestBody.safeParse(await readJson(c));
    if (!body.success || body.data.inputs === undefined) {
      throw invalidInput('the body must be a JSON object {"inputs": ..., "parameters": {...}}');
    }
    const inputs = validate(task.inputs, body.data.inputs, "inputs");
    const parameters = validate(task.parameters, body.data.parameters ?? {}, "parameters");

    const key = cacheKey({ model: id, version: info.version, file: info.file, task: info.task, inputs, parameters }, sha256Hex);
    const etag = `"${key.slice(0, 32)}"`;
    // One plain record, handed to the Response as is: c.header() would build a Headers object, which
    // @hono/node-server then turns back into a record (about 30 µs a request, measured servers taking turns).
    const headers: Record<string, string> = { etag, "cache-control": `max-age=${cacheMaxAge}` };
    if (c.req.header("if-none-match")?.split(/\s*,\s*/).includes(etag)) return new Response(null, { status: 304, headers });

    headers["content-type"] = "application/json";
    const hit = cache ? await cache.get(key) : undefined;
    if (hit) {
      headers["x-cache"] = "HIT";
      return new Response(hit.body, { headers });
    }
    const timed = timedModel(await registry.get(id), arrived);
    const started = performance.now();
    const result = await runDeduplicated(task, timed.model, inputs, parameters);
    const text = JSON.stringify(result);
    headers["server-timing"] = timed.header(performance.now() - started);
    headers["x-cache"] = "MISS";
    if (cache) waitUntil(c, cache.put(key, { body: text, etag }));
    return new Response(text, { headers });
  };

  registerEmbeddingRoutes(app, registry);
  registerOpenApi(app);
  return app;
}

/**
 * 413 beyond `maxBytes`. A declared Content-Length is checked from the header alone: hono's bodyLimit
 * reads `c.req.raw.body`, which makes @hono/node-server build a whole web Request (undici Request,
 * ReadableStream, AbortSignal) that its fast `json()` path never needs; that cost 0.4 ms per request
 * on a loaded 2-core box. Chunked bodies, whose size is known only once read, go through bodyLimit.
 */
function limitBody(maxBytes: number): MiddlewareHandler {
  const onError = () => {
    throw tooLarge(`request body over ${maxBytes} bytes`);
  };
  const streamed = bodyLimit({ maxSize: maxBytes, onError });
  return async (c, next) => {
    const length = c.req.header("content-length");
    if (length === undefined || c.req.header("transfer-encoding") !== undefined) return streamed(c, next);
    if (Number(length) > maxBytes) onError();
    await next();
  };
}

/**
 * Identical inputs inside one list are computed once: the task sees the distinct ones and the
 * answers are spread back (every task answers a list input with one entry per input).
 */
async function runDeduplicated(task: Task, model: LoadedModel, inputs: unknown, parameters: unknown) {
  if (!Array.isArray(inputs)) return task.run(model, inputs, parameters);
  const keys = inputs.map((input) => canonicalJson(input));
  const distinct = [...new Set(keys)];
  if (distinct.length === inputs.length) return task.run(model, inputs, parameters);
  const results = (await task.run(model, distinct.map((k) => inputs[keys.indexOf(k)]), parameters)) as unknown[];
  return keys.map((k) => results[distinct.indexOf(k)]);
}

/**
 * The model as one request sees it, timing its tokenizer.encode calls and its runs (queue wait and
 * session.run, from the queue), for a `Server-Timing` header: tokenize, queue, run, and decode (the
 * rest of the task: batching, post-processing, JSON).
 */
export function timedModel(model: LoadedModel, arrived = () => {}) {
  const spent = { tokenize: 0, queue: 0, run: 0, merged: 0 };
  const tokenizer = Object.create(model.tokenizer) as LoadedModel["tokenizer"];
  tokenizer.encode = (...args) => {
    const start = performance.now();
    try {
      return model.tokenizer.encode(...args);
    } finally {
      spent.tokenize += performance.now() - start;
    }
  };
  // A then() rather than an async wrapper: each async layer adds promise hops between the end of
  // the run and the task's decode.
  const run: LoadedModel["run"] = (batch, timing = { queueMs: 0, runMs: 0, merged: 1 }) => {
    const start = performance.now();
    arrived();
    return model.run(batch, timing).then((outputs) => {
      // A runner without a queue fills nothing in: all of it was the run.
      spent.queue += timing.queueMs;
      spent.run += timing.runMs || performance.now() - start - timing.queueMs;
      spent.merged = Math.max(spent.merged, timing.merged);
      return outputs;
    });
  };
  const header = (totalMs: number) => {
    const decode = Math.max(0, totalMs - spent.tokenize - spent.queue - spent.run);
    const f = (ms: number) => ms.toFixed(3);
    return `tokenize;dur=${f(spent.tokenize)}, queue;dur=${f(spent.queue)}, run;dur=${f(spent.run)};desc="${spent.merged || 1} merged", decode;dur=${f(decode)}`;
  };
  return { model: { ...model, tokenizer, run } as LoadedModel, spent, header };
}

/** Workers keep the isolate alive for `promise`; elsewhere it simply runs on. */
function waitUntil(c: Context, promise: Promise<unknown>) {
  const guarded = promise.catch((err) => console.warn(`bert-edge: cache write failed: ${err.message}`));
  try {
    c.executionCtx.waitUntil(guarded);
  } catch {
    // No execution context outside Workers (Hono throws when asked for it).
  }
}
