import type { Context } from "hono";
import type { ContentfulStatusCode } from "hono/utils/http-status";
import { ServiceError } from "../errors.ts";

/** The error body of every failed request, as the Hugging Face Inference API writes it. */
export const errorBody = (error: string, error_type: string) => ({ error, error_type });

export function errorResponse(c: Context, err: unknown) {
  if (err instanceof ServiceError) {
    return c.json(errorBody(err.message, err.type), err.status as ContentfulStatusCode);
  }
  console.error("bert-edge: unexpected error", err);
  return c.json(errorBody("internal error", "internal"), 500);
}
