/**
 * Object storage as bert-edge uses it: keys are '/'-separated paths ("org/model/onnx/model.onnx").
 * Implementations: a local folder (fs.ts); R2, S3-compatible and HTTP stores plug in the same way.
 */
export interface ObjectStorage {
  /** Human-readable location, for logs and `GET /models`. */
  readonly location: string;
  /** The object's bytes, or null when there is no such key. */
  get(key: string): Promise<Uint8Array | null>;
  /** Every key under `prefix` (all keys when omitted). */
  list(prefix?: string): Promise<string[]>;
}
