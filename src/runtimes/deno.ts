/**
 * Deno entry point: `deno run -A src/runtimes/deno.ts` serves the models at $MODELS (a folder,
 * s3://bucket/prefix or an https:// base URL; default: the embedded models) on $PORT, with
 * onnxruntime-web (WASM, one thread, as at the edge).
 */
import * as ort from "onnxruntime-web";
import { OrtBackend } from "../engine/backends/ort.ts";
import { ModelRegistry } from "../engine/registry.ts";
import { createApp } from "../http/app.ts";
import { openStorage } from "../storage/open.ts";

declare const Deno: {
  env: { toObject(): Record<string, string> };
  serve(options: { port: number; hostname?: string; onListen?: (addr: { port: number }) => void }, handler: (req: Request) => Response | Promise<Response>): unknown;
};

const env = Deno.env.toObject();
ort.env.wasm.numThreads = 1;
ort.env.wasm.proxy = false;

const models = env.MODELS ?? new URL("../../models/fixtures", import.meta.url).pathname;
const registry = new ModelRegistry(openStorage(models, env), new OrtBackend("wasm", ort, { executionProviders: ["wasm"] }));
const app = createApp({ registry });
Deno.serve({ port: Number(env.PORT ?? 8787), hostname: env.HOST ?? "127.0.0.1", onListen: ({ port }) => console.log(`bert-edge (Deno): ${models} on http://localhost:${port}`) }, app.fetch);
