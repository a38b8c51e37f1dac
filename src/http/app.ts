import { OpenAPIHono, z } from "@hono/zod-openapi";
import type { Context } from "hono";
import { bodyLimit } from "hono/body-limit";
import type { LoadedModel } from "../engine/model.ts";
import type { ModelRegistry } from "../engine/registry.ts";
import { invalidInput, tooLarge } from "../errors.ts";
import { TASK_HANDLERS } from "../tasks/index.ts";
import type { Task } from "../tasks/task.ts";
import { cacheKey, canonicalJson, MemoryCache, type ResponseCache } from "./cache.ts";
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
}

const requestBody = z.object({
  inputs: z.unknown(),
  parameters: z.record(z.string(), z.unknown()).optional(),
});

export function createApp({ registry, maxBodyBytes = 1 << 20, cache = new MemoryCache(), cacheMaxAge = 3600 }: AppOptions) {
  const app = new OpenAPIHono();
  app.onError((err, c) => errorResponse(c, err));
  app.notFound((c) => c.json(errorBody(`no route ${c.req.method} ${c.req.path}`, "not_found"), 404));
  app.use(
    bodyLimit({
      maxSize: maxBodyBytes,
      onError: () => {
        throw tooLarge(`request body over ${maxBodyBytes} bytes`);
      },
    }),
  );

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
    const info = await registry.info(id);
    const task = TASK_HANDLERS[info.task];
    const body = requestBody.safeParse(await readJson(c));
    if (!body.success || body.data.inputs === undefined) {
      throw invalidInput('the body must be a JSON object {"inputs": ..., "parameters": {...}}');
    }
    const inputs = validate(task.inputs, body.data.inputs, "inputs");
    const parameters = validate(task.parameters, body.data.parameters ?? {}, "parameters");

    const key = await cacheKey({ model: id, version: info.version, file: info.file, task: info.task, inputs, parameters });
    const etag = `"${key.slice(0, 32)}"`;
    c.header("ETag", etag);
    c.header("Cache-Control", `max-age=${cacheMaxAge}`);
    if (c.req.header("if-none-match")?.split(/\s*,\s*/).includes(etag)) return c.body(null, 304);

    const hit = cache ? await cache.get(key) : undefined;
    if (hit) {
      c.header("X-Cache", "HIT");
      return c.body(hit.body, 200, { "content-type": "application/json" });
    }
    const result = await runDeduplicated(task, await registry.get(id), inputs, parameters);
    const text = JSON.stringify(result);
    if (cache) waitUntil(c, cache.put(key, { body: text, etag }));
    c.header("X-Cache", "MISS");
    return c.body(text, 200, { "content-type": "application/json" });
  });

  registerEmbeddingRoutes(app, registry);
  registerOpenApi(app);
  return app;
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

/** Workers keep the isolate alive for `promise`; elsewhere it simply runs on. */
function waitUntil(c: Context, promise: Promise<unknown>) {
  const guarded = promise.catch((err) => console.warn(`bert-edge: cache write failed: ${err.message}`));
  try {
    c.executionCtx.waitUntil(guarded);
  } catch {
    // No execution context outside Workers (Hono throws when asked for it).
  }
}
