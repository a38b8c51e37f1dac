import { type OpenAPIHono, z } from "@hono/zod-openapi";
import { TASK_HANDLERS } from "../tasks/index.ts";

const error = z
  .object({ error: z.string(), error_type: z.string() })
  .openapi("Error", { example: { error: 'no model "x" (GET /models lists them)', error_type: "model_not_found" } });

const modelInfo = z
  .object({
    id: z.string(),
    task: z.string(),
    labels: z.array(z.string()),
    file: z.string().openapi({ description: "The ONNX file served (int8 `model_quantized.onnx` when present)" }),
    loaded: z.boolean(),
  })
  .openapi("ModelInfo");

const errors = Object.fromEntries(
  [
    [400, "The body is not JSON"],
    [404, "No such model"],
    [413, "Body or batch too large"],
    [422, "Inputs or parameters invalid for the model's task"],
    [500, "The model failed to load, or the service failed"],
  ].map(([status, description]) => [status, { description, content: { "application/json": { schema: error } } }]),
);

const anyOf = (schemas: z.ZodType[]) =>
  schemas.length === 1 ? schemas[0] : z.union(schemas as [z.ZodType, z.ZodType, ...z.ZodType[]]);

/** Describes the routes at GET /openapi.json. */
export function registerOpenApi(app: OpenAPIHono) {
  const tasks = Object.values(TASK_HANDLERS);
  app.openAPIRegistry.registerPath({
    method: "get",
    path: "/models",
    summary: "Models found in storage, their task and labels, and whether they are loaded",
    responses: { 200: { description: "Models", content: { "application/json": { schema: z.array(modelInfo) } } } },
  });
  app.openAPIRegistry.registerPath({
    method: "post",
    path: "/models/{id}",
    summary: "Run a model. The body and answer follow the Hugging Face Inference API for the model's task.",
    request: {
      params: z.object({ id: z.string().openapi({ description: "Model id; may contain '/'", example: "tiny-bert-mrpc" }) }),
      body: {
        content: {
          "application/json": {
            schema: z.object({
              inputs: anyOf(tasks.map((t) => t.inputs)),
              parameters: anyOf(tasks.map((t) => t.parameters)).optional(),
            }),
          },
        },
      },
    },
    responses: { 200: { description: "Predictions in the Inference API shape of the task" }, ...errors },
  });
  app.doc31("/openapi.json", { openapi: "3.1.0", info: { title: "bert-edge", version: "0.1.0" } });
}
