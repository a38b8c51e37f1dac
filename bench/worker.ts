/**
 * The Workers entry point as deployed (src/runtimes/workers.ts), plus `GET /__bench`: the size of
 * onnxruntime-web's wasm heap, for the benchmark (`wrangler dev bench/worker.ts`).
 */
import worker from "../src/runtimes/workers.ts";

const memories = new Set<WebAssembly.Memory>();
const instantiate = WebAssembly.instantiate;
const scan = (obj: object) => {
  for (const v of Object.values(obj)) {
    if (v instanceof WebAssembly.Memory) memories.add(v);
    else if (v && typeof v === "object") for (const w of Object.values(v)) if (w instanceof WebAssembly.Memory) memories.add(w);
  }
};
// Wraps workers.ts' own redirect (installed when it was imported, above).
WebAssembly.instantiate = (async (source: BufferSource | WebAssembly.Module, imports?: WebAssembly.Imports) => {
  if (imports) scan(imports);
  const result = (await instantiate(source as never, imports)) as unknown as WebAssembly.Instance | WebAssembly.WebAssemblyInstantiatedSource;
  scan((result instanceof WebAssembly.Instance ? result : result.instance).exports);
  return result;
}) as typeof WebAssembly.instantiate;

export default {
  fetch(request: Request, env: never, ctx: unknown) {
    if (new URL(request.url).pathname === "/__bench") {
      const wasmHeap = [...memories].reduce((sum, m) => sum + m.buffer.byteLength, 0);
      return Response.json({ wasmHeap });
    }
    return worker.fetch(request, env, ctx);
  },
};
