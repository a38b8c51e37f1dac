/**
 * Errors that reach the caller. Every layer throws these; the HTTP layer turns them into
 * `{"error", "error_type"}` JSON with `status`.
 */
export class ServiceError extends Error {
  constructor(
    readonly status: 400 | 404 | 413 | 422 | 429 | 500 | 503,
    readonly type: string,
    message: string,
  ) {
    super(message);
  }
}

/** The request is well-formed JSON but its inputs or parameters are not acceptable. */
export const invalidInput = (message: string) => new ServiceError(422, "invalid_input", message);
/** The request is larger than this service accepts. */
export const tooLarge = (message: string) => new ServiceError(413, "payload_too_large", message);
