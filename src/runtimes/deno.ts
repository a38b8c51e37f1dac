/**
 * Deno entry point: `deno run -A src/runtimes/deno.ts` serves the models at $MODELS (a folder,
 * s3://bucket/prefix or an https:// base URL; default: the embedded models) on $PORT, with
 * $BACKEND: bert-wasm (the default: bert-edge's own int8 encoder, onnxruntime-web for models it cannot
 * run, with a log line) or wasm (onnxruntime-web, one thread, as at the edge); $RESPONSE_CACHE=off
 * turns the response cache off, $FIRST_TOKEN=off the first-token pruning of classifier graphs.
 */
import { ModelRegistry } from "../engine/registry.ts";
import { createApp } from "../http/app.ts";
import { openStorage } from "../storage/open.ts";
import { type BackendName, createBackend } from "./backends.ts";
import { sha256Hex } from "./native-hash.ts";

declare const Deno: {
  env: { toObject(): Record<string, string> };
  serve(options: { port: number; hostname?: string; onListen?: (addr: { port: number }) => void }, handler: (req: Request) => Response | Promise<Response>): unknown;
};

const env = Deno.env.toObject();

const models = env.MODELS ?? new URL("../../models", import.meta.url).pathname;
const backend = await createBackend((env.BACKEND ?? "bert-wasm") as BackendName, undefined, { firstToken: env.FIRST_TOKEN !== "off" });
const registry = new ModelRegistry(openStorage(models, env), backend);
const app = createApp({ registry, cache: env.RESPONSE_CACHE === "off" ? false : undefined, sha256Hex });
Deno.serve({ port: Number(env.PORT ?? 8787), hostname: env.HOST ?? "127.0.0.1", onListen: ({ port }) => console.log(`bert-edge (Deno): ${models} on http://localhost:${port}`) }, app.fetch);
