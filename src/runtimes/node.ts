/**
 * Node entry point: `bert-edge serve [--models DIR] [--port N] [--backend native|wasm]`.
 * Hands Node's primitives (a folder, onnxruntime-node or onnxruntime-web, a socket) to the shared app.
 */
import { serve } from "@hono/node-server";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import { type BackendName, createBackend } from "./backends.ts";
import { sha256Hex } from "./native-hash.ts";
import { ModelRegistry } from "../engine/registry.ts";
import { createApp } from "../http/app.ts";
import { openStorage } from "../storage/open.ts";

/**
 * The models `npm start` serves when no --models is given: the trained demo models (`demo/…`) and
 * the random-weight test fixtures (`fixtures/…`), which cover the heads no demo model has.
 */
export const EMBEDDED_MODELS = fileURLToPath(new URL("../../models", import.meta.url));

export interface ServerOptions {
  /** A folder, s3://bucket/prefix or an http(s):// base URL. */
  models: string;
  port: number;
  backend: BackendName;
  /** Serve model_quantized.onnx where a folder has one (default true). */
  preferQuantized?: boolean;
  /** Keep answers for repeated requests (default true). */
  responseCache?: boolean;
  /** Prune classifier graphs' last layer to the first token (default true; src/engine/first-token.ts). */
  firstToken?: boolean;
  /** The native backend's intra-op threads (default one per core; README, Speed). */
  threads?: number;
  /** Let the native pool's threads busy-wait between parallel sections (default false; README, Speed). */
  spinning?: boolean;
}

export async function startServer(options: ServerOptions) {
  if (options.threads !== undefined && (options.backend !== "native" || !Number.isInteger(options.threads) || options.threads < 1)) {
    throw new Error(`threads: a whole number of at least 1, for the native backend only (got ${options.threads} for ${options.backend})`);
  }
  if (options.spinning && options.backend !== "native") throw new Error(`spinning: for the native backend only (got ${options.backend})`);
  const backend = await createBackend(options.backend, options.threads, { firstToken: options.firstToken !== false, spinning: options.spinning });
  const registry = new ModelRegistry(openStorage(options.models, process.env), backend, options);
  const app = createApp({ registry, cache: options.responseCache === false ? false : undefined, sha256Hex });
  const models = await registry.list();
  const server = serve({ fetch: app.fetch, port: options.port });
  await new Promise<void>((ok) => server.once("listening", ok));
  const address = server.address();
  const port = typeof address === "object" && address ? address.port : options.port;
  return { server, port, models, close: () =>
      new Promise<void>((ok) => {
        server.close(() => ok());
        // Keep-alive and half-read connections would otherwise hold close() open.
        (server as import("node:http").Server).closeAllConnections();
      }),
  };
}

export type { BackendName };

export async function main(argv: string[]) {
  try {
    await run(argv);
  } catch (err) {
    console.error(`bert-edge: ${(err as Error).message}`);
    process.exit(1);
  }
}

const USAGE = `usage:
  bert-edge serve [--models DIR|s3://bucket/prefix|https://...] [--port N] [--backend native|wasm|bert-wasm] [--fp32] [--response-cache on|off] [--first-token on|off] [--threads N] [--spin on|off]
  bert-edge pack <export-dir> --out <dir> [--id org/name] [--version V] [--fp32]
  bert-edge quantize <in.onnx> <out.onnx> | <model-dir>
  bert-edge push <packed-dir>/<id>/<version> <dir|s3://bucket/prefix|r2://bucket/prefix> [--local]`;

/** The CLI: the tooling commands live in src/cli and load only when asked for. */
async function run(argv: string[]) {
  const [command = "serve", ...rest] = argv;
  if (command === "pack") return (await import("../cli/pack.ts")).packCommand(rest);
  if (command === "quantize") return (await import("../cli/quantize.ts")).quantizeCommand(rest);
  if (command === "push") return (await import("../cli/push.ts")).pushCommand(rest);
  if (command === "-h" || command === "--help" || command === "help") return console.log(USAGE);
  if (command !== "serve") {
    console.error(USAGE);
    process.exit(2);
  }
  const { values } = parseArgs({
    args: rest,
    options: {
      models: { type: "string", default: EMBEDDED_MODELS },
      port: { type: "string", default: process.env.PORT ?? "8787" },
      backend: { type: "string", default: "native" },
      fp32: { type: "boolean", default: false },
      "response-cache": { type: "string", default: "on" },
      "first-token": { type: "string", default: "on" },
      threads: { type: "string" },
      spin: { type: "string", default: "off" },
    },
  });
  if (![values["response-cache"], values["first-token"], values.spin].every((v) => v === "on" || v === "off")) {
    console.error(USAGE);
    process.exit(2);
  }
  const { port, models } = await startServer({
    models: values.models!,
    port: Number(values.port),
    backend: values.backend as BackendName,
    preferQuantized: !values.fp32,
    responseCache: values["response-cache"] === "on",
    firstToken: values["first-token"] === "on",
    threads: values.threads === undefined ? undefined : Number(values.threads),
    spinning: values.spin === "on",
  });
  console.log(`bert-edge: ${models.length} models from ${values.models} on http://localhost:${port} (${values.backend} backend)`);
  for (const m of models) console.log(`  ${m.id}  ${m.task}  ${m.file}`);
}
