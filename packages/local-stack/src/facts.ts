// What a person or a script needs to reach the stack `pnpm start` runs, in one small JSON file
// in the stack's data folder (.stack-data/local-stack.json): written once the stack is ready,
// removed when it stops. Its `env` is what the CLI needs to call the gateway with no flags.
import { existsSync, mkdirSync, readFileSync, renameSync, rmSync, writeFileSync } from "node:fs";
import { dirname, join, relative } from "node:path";
import { fileURLToPath } from "node:url";
import type { CloudRunStack } from "./cloud-run-stack.js";
import type { StackAuth } from "./local-auth.js";
import type { Stack, StackServiceName } from "./stack.js";

export interface StackFacts {
  /** The local-stack process (signal it to stop the stack). */
  pid: number;
  /**
   * processes: one process per service, h2c on loopback (`pnpm start`); cloud-run: each service
   * behind its local Cloud Run front end (`pnpm start --cloud-run`).
   */
  mode: "processes" | "cloud-run";
  /**
   * For a shell (`export …`): the CLI reads GATEWAY_URL, google-auth-library
   * GCE_METADATA_HOST, grpc-js GRPC_DEFAULT_SSL_ROOTS_FILE_PATH (the front ends' CA, cloud-run).
   */
  env: {
    GATEWAY_URL: string;
    GCE_METADATA_HOST: string;
    GRPC_DEFAULT_SSL_ROOTS_FILE_PATH?: string;
  };
  /** Whether the gateway also serves calls without a token (GATEWAY_PUBLIC=true). */
  publicGateway: boolean;
  /** The local token authority, the stand-in for Google's. */
  tokenAuthority: {
    /** The `iss` of its ID tokens; the services fetch its keys from `jwksUrl`. */
    issuer: string;
    jwksUrl: string;
    /** The metadata server (host:port) that mints ID tokens as `identity`, the local client. */
    metadataHost: string;
    identity: string;
  };
  /** Each service's URL; its process, in processes mode (Cloud Run's instances come and go). */
  services: Record<StackServiceName, { url: string; pid?: number }>;
}

/** The facts file in `dataDir` (default: .stack-data in the repository). */
export function stackFactsFile(dataDir?: string): string {
  const repoRoot = fileURLToPath(new URL("../../../", import.meta.url));
  return join(dataDir || join(repoRoot, ".stack-data"), "local-stack.json");
}

export function stackFactsOf(
  stack: Stack,
  options: { pid: number; publicGateway: boolean },
): StackFacts {
  if (!stack.auth) throw new Error("a stack started without auth has no token authority");
  const metadataHost = stack.auth.authority.metadataHosts.client as string;
  return {
    pid: options.pid,
    mode: "processes",
    env: { GATEWAY_URL: stack.gateway.url, GCE_METADATA_HOST: metadataHost },
    publicGateway: options.publicGateway,
    tokenAuthority: tokenAuthorityFacts(stack.auth),
    services: {
      gateway: { url: stack.gateway.url, pid: stack.gateway.child.pid ?? 0 },
      route: { url: stack.route.url, pid: stack.route.child.pid ?? 0 },
      stats: { url: stack.stats.url, pid: stack.stats.child.pid ?? 0 },
    },
  };
}

/** The facts of the services under their local Cloud Run front ends (`pnpm start --cloud-run`). */
export function cloudRunFactsOf(
  stack: CloudRunStack,
  options: { pid: number; publicGateway: boolean },
): StackFacts {
  return {
    pid: options.pid,
    mode: "cloud-run",
    env: {
      GATEWAY_URL: stack.urls.gateway,
      GCE_METADATA_HOST: stack.auth.authority.metadataHosts.client as string,
      GRPC_DEFAULT_SSL_ROOTS_FILE_PATH: stack.caFile,
    },
    publicGateway: options.publicGateway,
    tokenAuthority: tokenAuthorityFacts(stack.auth),
    services: {
      gateway: { url: stack.urls.gateway },
      route: { url: stack.urls.route },
      stats: { url: stack.urls.stats },
    },
  };
}

function tokenAuthorityFacts(auth: StackAuth): StackFacts["tokenAuthority"] {
  return {
    issuer: auth.authority.issuer,
    jwksUrl: auth.authority.jwksUrl,
    metadataHost: auth.authority.metadataHosts.client as string,
    identity: auth.emails.client,
  };
}

/** Writes this process's facts file, and removes it only while it is still this process's. */
export class StackFactsWriter {
  private written = false;

  constructor(readonly file: string) {}

  /** The facts of another stack that is still running from the same folder, if any. */
  runningOther(): StackFacts | undefined {
    const facts = this.read();
    if (!facts || facts.pid === process.pid || !isRunning(facts.pid)) return undefined;
    return facts;
  }

  write(facts: StackFacts): void {
    mkdirSync(dirname(this.file), { recursive: true });
    // Whole or not at all: a script never reads half a file.
    const partial = `${this.file}.${process.pid}.tmp`;
    writeFileSync(partial, `${JSON.stringify(facts, null, 2)}\n`);
    renameSync(partial, this.file);
    this.written = true;
  }

  remove(): void {
    if (!this.written) return;
    this.written = false;
    if (this.read()?.pid === process.pid) rmSync(this.file, { force: true });
  }

  /** The file's path as a person would type it here. */
  displayPath(): string {
    const path = relative(process.cwd(), this.file);
    return path.startsWith("..") ? this.file : path;
  }

  private read(): StackFacts | undefined {
    if (!existsSync(this.file)) return undefined;
    try {
      return JSON.parse(readFileSync(this.file, "utf8")) as StackFacts;
    } catch {
      return undefined;
    }
  }
}

function isRunning(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    // EPERM: it exists, owned by someone else.
    return (error as NodeJS.ErrnoException).code === "EPERM";
  }
}
