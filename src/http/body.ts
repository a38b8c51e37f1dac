import type { z } from "@hono/zod-openapi";
import type { Context } from "hono";
import { invalidInput, ServiceError } from "../errors.ts";

/** The request's JSON (400 when it is not JSON). */
export async function readJson(c: Context): Promise<unknown> {
  return c.req.json().catch(() => {
    throw new ServiceError(400, "invalid_json", "the request body is not valid JSON");
  });
}

/** Parses `value` with `schema`, or throws 422 listing every issue with its path under `root`. */
export function validate<T>(schema: z.ZodType<T>, value: unknown, root: string): T {
  const parsed = schema.safeParse(value);
  if (!parsed.success) {
    throw invalidInput(parsed.error.issues.map((i) => `${[root, ...i.path].join(".")}: ${i.message}`).join("; "));
  }
  return parsed.data;
}

/** The request's JSON body, validated. */
export async function parseBody<T>(c: Context, schema: z.ZodType<T>): Promise<T> {
  return validate(schema, await readJson(c), "body");
}
