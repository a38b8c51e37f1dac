import { OpenAPIHono, z } from "@hono/zod-openapi";
import { bodyLimit } from "hono/body-limit";
import type { ModelRegistry } from "../engine/registry.ts";
import { ServiceError, invalidInput, tooLarge } from "../errors.ts";
import { TASK_HANDLERS } from "../tasks/index.ts";
import { describeIssues, errorBody, errorResponse } from "./errors.ts";
import { registerOpenApi } from "./openapi.ts";
import { registerEmbeddingRoutes } from "./embeddings.ts";

export interface AppOptions {
  registry: ModelRegistry;
  /** Largest request body accepted, in bytes (413 beyond). */
  maxBodyBytes?: number;
}

const requestBody = z.object({
  inputs: z.unknown(),
  parameters: z.record(z.string(), z.unknown()).optional(),
});

export function createApp({ registry, maxBodyBytes = 1 << 20 }: AppOptions) {
  const app = new OpenAPIHono();
  app.onError((err, c) => errorResponse(c, err));
  app.notFound((c) => c.json(errorBody(`no route ${c.req.method} ${c.req.path}`, "not_found"), 404));

  app.get("/health", (c) => c.json({ status: "ok" }));

  app.get("/models", async (c) => c.json(await registry.list()));

  // Model ids may contain '/', as on the Hub ("org/name").
  app.use(
    bodyLimit({
      maxSize: maxBodyBytes,
      onError: () => {
        throw tooLarge(`request body over ${maxBodyBytes} bytes`);
      },
    }),
  );

  app.post("/models/:id{.+}", async (c) => {
      const id = c.req.param("id");
      const info = await registry.info(id);
      const task = TASK_HANDLERS[info.task];

      const body = requestBody.safeParse(await c.req.json().catch(() => {
        throw new ServiceError(400, "invalid_json", "the request body is not valid JSON");
      }));
      if (!body.success || body.data.inputs === undefined) {
        throw invalidInput('the body must be a JSON object {"inputs": ..., "parameters": {...}}');
      }
      const inputs = task.inputs.safeParse(body.data.inputs);
      if (!inputs.success) throw invalidInput(describeIssues(inputs.error, "inputs"));
      const parameters = task.parameters.safeParse(body.data.parameters ?? {});
      if (!parameters.success) throw invalidInput(describeIssues(parameters.error, "parameters"));

      const model = await registry.get(id);
      return c.json(await task.run(model, inputs.data, parameters.data));
  });

  registerEmbeddingRoutes(app, registry);
  registerOpenApi(app);
  return app;
}
