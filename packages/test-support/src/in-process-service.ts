// A service built by its factory and served in this process on 127.0.0.1, on a port chosen
// before start (its URL is its token audience), with real tokens from an InProcessAuth.
import {
  parseConfig,
  type RunningService,
  type ServerEnv,
  type ServiceFactory,
  silentLogger,
  startService,
} from "@cloudrun-grpc/runtime";
import type { z } from "zod";
import type { InProcessAuth } from "./in-process-auth.js";
import { freePort } from "./ports.js";
import { until } from "./wait.js";

export interface InProcessService extends RunningService {
  /** `http://127.0.0.1:<port>`: what a peer's *_URL names, and the token audience. */
  url: string;
  /** `127.0.0.1:<port>` for a grpc-js client. */
  target: string;
}

export async function serveInProcess<Schema extends z.ZodType<ServerEnv>>(
  schema: Schema,
  factory: ServiceFactory<z.infer<Schema>>,
  auth: InProcessAuth,
  env: Record<string, string> = {},
): Promise<InProcessService> {
  const port = await freePort();
  const url = `http://127.0.0.1:${port}`;
  const config = parseConfig(schema, {
    HOST: "127.0.0.1",
    PORT: String(port),
    SHUTDOWN_GRACE_MS: "2000",
    ...auth.env(url),
    ...env,
  });
  // Silent: a test asserts on calls, and the call lines have tests of their own.
  const logger = silentLogger();
  const setup = await factory(config, { logger });
  const running = await startService(setup, { config, logger });
  // As Cloud Run's startup probe: calls go to it once its own health name would say SERVING.
  await until(
    () => setup.readiness?.ready ?? true,
    `the in-process service at ${url} is ready (its health SERVING)`,
    20_000,
  ).catch(async (error: unknown) => {
    await running.stop();
    throw error;
  });
  return { ...running, url, target: `127.0.0.1:${running.port}` };
}
