// One instance of a service: a process started as Cloud Run starts a container (its entry on
// the real Node binary, env only, PORT chosen for it), the front end's one h2c session to it,
// its probes, and its end. Process.execPath is the real node binary: a shell shim such as
// node_modules/.bin/node would not pass SIGTERM on.
//
// Container runtime contract (https://cloud.google.com/run/docs/container-contract): the
// container listens on $PORT; K_SERVICE, K_REVISION and K_CONFIGURATION name it; at shutdown it
// gets SIGTERM, then SIGKILL 10 seconds later if it is still running.
import { type ChildProcess, spawn } from "node:child_process";
import { type ClientHttp2Session, connect as connectHttp2, constants } from "node:http2";
import { type AddressInfo, createServer } from "node:net";
import { createInterface } from "node:readline";
import { grpcHealthCheck, tcpCheck } from "./health-probe.js";
import type { Probe } from "./infra.js";

/** The contract's grace between SIGTERM and SIGKILL. */
export const shutdownGraceMs = 10_000;

export type InstanceState = "starting" | "ready" | "stopping" | "stopped";

export interface InstanceOptions {
  id: string;
  entry: string;
  /** Arguments before the entry (e.g. --import tsx for a TypeScript entry in tests). */
  execArgv?: string[];
  /** The whole environment but PORT, which the instance picks. */
  env: Record<string, string>;
  onLine?: (line: string, stream: "stdout" | "stderr") => void;
}

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const probe = createServer();
    probe.once("error", reject);
    probe.listen(0, "127.0.0.1", () => {
      const { port } = probe.address() as AddressInfo;
      probe.close(() => resolve(port));
    });
  });
}

const delay = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

export class Instance {
  state: InstanceState = "starting";
  /** Requests (streams) being served: each counts once, for its whole life. */
  active = 0;
  /** When it last had no request (ms since the epoch). */
  idleSince = Date.now();
  readonly startedAt = Date.now();
  /** When its startup probe passed. */
  readyAt: number | undefined;
  /** stop() was called: its exit is no crash. */
  stopRequested = false;
  readonly exited: Promise<number | string>;
  /** The last lines it printed (for a failure's message). */
  readonly lastLines: string[] = [];
  private session: ClientHttp2Session | undefined;
  private livenessTimer: NodeJS.Timeout | undefined;

  private constructor(
    readonly id: string,
    readonly port: number,
    readonly child: ChildProcess,
    onLine?: InstanceOptions["onLine"],
  ) {
    this.exited = new Promise((resolve) => {
      child.once("exit", (code, signal) => {
        this.state = "stopped";
        this.stopLiveness();
        this.session?.destroy();
        resolve(code ?? signal ?? "unknown");
      });
    });
    for (const [stream, input] of [
      ["stdout", child.stdout],
      ["stderr", child.stderr],
    ] as const) {
      if (!input) continue;
      createInterface({ input }).on("line", (line) => {
        this.lastLines.push(line);
        if (this.lastLines.length > 20) this.lastLines.shift();
        onLine?.(line, stream);
      });
    }
  }

  static async start(options: InstanceOptions): Promise<Instance> {
    const port = await freePort();
    const child = spawn(process.execPath, [...(options.execArgv ?? []), options.entry], {
      env: { ...options.env, PORT: String(port) },
      // stdin: a pipe never written to. A process that wants to end with the one that started
      // it (the local stack preloads parent-watch) reads its end-of-file when that one is gone.
      stdio: ["pipe", "pipe", "pipe"],
    });
    return new Instance(options.id, port, child, options.onLine);
  }

  get pid(): number | undefined {
    return this.child.pid;
  }

  get running(): boolean {
    return this.child.exitCode === null && this.child.signalCode === null;
  }

  /** The front end's h2c session to it, made again after one that closed. */
  connection(): ClientHttp2Session {
    if (!this.session || this.session.closed || this.session.destroyed) {
      const session = connectHttp2(`http://127.0.0.1:${this.port}`);
      // A refused or broken connection shows up on the streams using it.
      session.on("error", () => {});
      session.on("close", () => {
        if (this.session === session) this.session = undefined;
      });
      this.session = session;
    }
    return this.session;
  }

  private check(probe: Probe): Promise<string> {
    const timeoutMs = probe.timeoutSeconds * 1000;
    return probe.kind === "tcp"
      ? tcpCheck(this.port, timeoutMs)
      : grpcHealthCheck(this.connection(), probe.service, timeoutMs);
  }

  /**
   * Runs the startup probe until it passes (then the instance is ready for traffic) or fails
   * failureThreshold times (https://cloud.google.com/run/docs/configuring/healthchecks).
   * Resolves undefined when ready, else why not.
   */
  async awaitStartup(probe: Probe): Promise<string | undefined> {
    const exited = this.exited.then((code) => `exited (${code}) before its startup probe passed`);
    await Promise.race([delay(probe.initialDelaySeconds * 1000), exited]);
    let outcome = "";
    for (let attempt = 1; attempt <= probe.failureThreshold; attempt += 1) {
      if (!this.running || this.state !== "starting") return await exited;
      const began = Date.now();
      outcome = await Promise.race([this.check(probe), exited]);
      if (outcome === "SERVING") {
        if (!this.running) return await exited;
        this.state = "ready";
        this.readyAt = Date.now();
        this.idleSince = this.readyAt;
        return undefined;
      }
      if (!this.running) return outcome;
      await delay(Math.max(0, probe.periodSeconds * 1000 - (Date.now() - began)));
    }
    return `startup probe failed ${probe.failureThreshold} times, last: ${outcome}`;
  }

  /** The liveness probe every period once ready; `onFailed` after failureThreshold in a row. */
  watchLiveness(probe: Probe, onFailed: (outcome: string) => void): void {
    let failures = 0;
    const tick = async () => {
      if (this.state !== "ready") return;
      const outcome = await this.check(probe);
      if (this.state !== "ready") return;
      failures = outcome === "SERVING" ? 0 : failures + 1;
      if (failures >= probe.failureThreshold) {
        onFailed(`liveness probe failed ${failures} times, last: ${outcome}`);
        return;
      }
      this.livenessTimer = setTimeout(tick, probe.periodSeconds * 1000);
    };
    this.livenessTimer = setTimeout(
      tick,
      (probe.initialDelaySeconds || probe.periodSeconds) * 1000,
    );
  }

  private stopLiveness(): void {
    if (this.livenessTimer) clearTimeout(this.livenessTimer);
    this.livenessTimer = undefined;
  }

  /**
   * Shuts it down as Cloud Run does: no new requests (GOAWAY on the front end's session to it),
   * SIGTERM, SIGKILL after the grace if it still runs. Resolves with its exit code or signal.
   */
  async stop(graceMs = shutdownGraceMs): Promise<number | string> {
    this.stopRequested = true;
    if (this.state === "stopped") return this.exited;
    this.state = "stopping";
    this.stopLiveness();
    const session = this.session;
    if (session && !session.closed && !session.destroyed) {
      session.goaway(constants.NGHTTP2_NO_ERROR);
      session.close();
    }
    if (this.running) {
      this.child.kill("SIGTERM");
      const killer = setTimeout(() => this.child.kill("SIGKILL"), graceMs);
      const code = await this.exited;
      clearTimeout(killer);
      return code;
    }
    return this.exited;
  }
}
