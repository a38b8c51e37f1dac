import { type ChildProcess, spawn } from "node:child_process";
import { createServer } from "node:net";

export async function freePort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((ok) => server.listen(0, "127.0.0.1", ok));
  const { port } = server.address() as { port: number };
  await new Promise((ok) => server.close(ok));
  return port;
}

/** Starts a server process and resolves once `url` answers; its output is kept for error messages. */
export async function startProcess(
  command: string,
  args: string[],
  options: { env?: Record<string, string>; url: string; timeoutMs?: number },
): Promise<{ child: ChildProcess; output: () => string; stop: () => Promise<void> }> {
  const child = spawn(command, args, { env: { ...process.env, ...options.env }, stdio: ["ignore", "pipe", "pipe"], detached: true });
  let output = "";
  child.stdout!.on("data", (d) => (output += d));
  child.stderr!.on("data", (d) => (output += d));
  const stop = async () => {
    if (child.exitCode !== null) return;
    const exited = new Promise((ok) => child.once("exit", ok));
    process.kill(-child.pid!, "SIGTERM"); // the whole group: npx, wrangler and workerd
    await Promise.race([exited, new Promise((ok) => setTimeout(ok, 5000))]);
    if (child.exitCode === null) process.kill(-child.pid!, "SIGKILL");
  };
  const deadline = Date.now() + (options.timeoutMs ?? 90_000);
  while (Date.now() < deadline) {
    if (child.exitCode !== null) throw new Error(`${command} exited with ${child.exitCode}:\n${output}`);
    try {
      await fetch(options.url);
      return { child, output: () => output, stop };
    } catch {
      await new Promise((ok) => setTimeout(ok, 250));
    }
  }
  await stop();
  throw new Error(`${command} did not answer at ${options.url} in time:\n${output}`);
}

/** Runs a command to completion; rejects with its output when it fails. */
export function runCommand(command: string, args: string[], env: Record<string, string> = {}): Promise<string> {
  return new Promise((ok, fail) => {
    const child = spawn(command, args, { env: { ...process.env, ...env }, stdio: ["ignore", "pipe", "pipe"] });
    let output = "";
    child.stdout.on("data", (d) => (output += d));
    child.stderr.on("data", (d) => (output += d));
    child.on("exit", (code) => (code === 0 ? ok(output) : fail(new Error(`${command} ${args.join(" ")} exited ${code}:\n${output}`))));
  });
}
