// A bench server (bench/baseline-server.ts, bench/payload-server.ts) run as a process of its
// own, so that its CPU and memory are its own; it prints {"port": n} once it listens.
import { spawn } from "node:child_process";
import { createInterface } from "node:readline";

export interface ServerProcess {
  name: string;
  pid: number;
  port: number;
  stop(): Promise<void>;
}

export async function startServerProcess(
  script: URL,
  name: string,
  args: string[],
  env: Record<string, string> = {},
): Promise<ServerProcess> {
  const child = spawn(
    process.execPath,
    ["--import", "tsx", script.pathname, ...args],
    // stdout is read to its end (readline goes on reading), as the stack's logs are.
    { stdio: ["ignore", "pipe", "inherit"], env: { ...process.env, ...env } },
  );
  const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()));
  const port = await new Promise<number>((resolve, reject) => {
    createInterface({ input: child.stdout }).once("line", (line) =>
      resolve((JSON.parse(line) as { port: number }).port),
    );
    void exited.then(() => reject(new Error(`${name} exited before listening`)));
  });
  return {
    name,
    pid: child.pid as number,
    port,
    async stop() {
      child.kill("SIGTERM");
      await exited;
    },
  };
}
