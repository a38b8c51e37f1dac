#!/usr/bin/env node
// Runs the TypeScript CLI through tsx, so that users need no build step.
import { register } from "tsx/esm/api";
import { pathToFileURL } from "node:url";

register();
const { main } = await import(pathToFileURL(new URL("../src/runtimes/node.ts", import.meta.url).pathname).href);
await main(process.argv.slice(2));
