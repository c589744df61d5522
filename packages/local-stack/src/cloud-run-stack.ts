// The three services as Cloud Run runs them, on this machine: each behind its own local front
// end (packages/cloud-run-local), configured from infra/ (ingress, invokers, concurrency,
// instances, timeout, probes), at https://localhost:<port>, with instances started and scaled
// in as load comes and goes. Identities and ID tokens are the local stack's (local-auth.ts):
// each service calls as its own service account, a client as the local client identity.
// `pnpm start --cloud-run` and test/cloud-run.test.ts start the system through here.
import {
  type CloudRunLocal,
  type CloudRunLocalOptions,
  type Logger,
  startCloudRunLocal,
} from "@cloudrun-grpc/cloud-run-local";
import {
  type EmbeddedPostgres,
  type EmbeddedPostgresOptions,
  startEmbeddedPostgres,
} from "./embedded-postgres.js";
import { localProject, type StackAuth, startStackAuth } from "./local-auth.js";
import { givenStatsDatabaseUrl, type StackServiceName, serviceEntry } from "./stack.js";

export interface CloudRunStackOptions {
  /**
   * Where the stack's own PostgreSQL server (embedded-postgres.ts) keeps its cluster (default:
   * a temporary folder, removed at stop). stats' instances share that server, as they share
   * Cloud SQL, unless `env` gives stats a STATS_DATABASE_URL (as startStack reads it).
   */
  database?: Pick<EmbeddedPostgresOptions, "dataDir">;
  /** Extra environment per service (and for all), over what Terraform gives. */
  env?: Partial<Record<StackServiceName | "all", Record<string, string>>>;
  /** Each front end's port (default: free ports). */
  ports?: Partial<Record<StackServiceName, number>>;
  /** Terraform's settings overridden per service (e.g. a small concurrency to see scaling). */
  overrides?: CloudRunLocalOptions["overrides"];
  scaling?: CloudRunLocalOptions["scaling"];
  /** Terraform's `gateway_public`: the gateway's edge lets anyone in (no invoker check). */
  publicGateway?: boolean;
  logger?: Logger;
  onLine?: CloudRunLocalOptions["onLine"];
}

export interface CloudRunStack {
  local: CloudRunLocal;
  /** Each front end's URL (https://localhost:<port>): what callers dial and their tokens' audience. */
  urls: Record<StackServiceName, string>;
  /** The identities, the token authority, and tokens for any of them. */
  auth: StackAuth;
  /** The CA the front ends' certificate chains to (PEM, and as a file until stop()). */
  caPem: string;
  caFile: string;
  /** Where stats' instances keep their data, as a person reads it (no password). */
  databaseDescription: string;
  stop(): Promise<void>;
}

/** Preloaded into each instance: it ends when the process that started it is gone. */
const parentWatch = new URL("./parent-watch.js", import.meta.url).href;

// Terraform's startup probe asks every 4 s (60 times): locally each cold start would wait up
// to 4 s for nothing. The same 240 s budget in 0.2 s steps.
const quickStartupProbe = { periodSeconds: 0.2, failureThreshold: 1200 };

export async function startCloudRunStack(
  options: CloudRunStackOptions = {},
): Promise<CloudRunStack> {
  const givenUrl = givenStatsDatabaseUrl(options.env);
  const database: EmbeddedPostgres | undefined = givenUrl
    ? undefined
    : await startEmbeddedPostgres(options.database);
  const statsDatabaseUrl = givenUrl ?? (database as EmbeddedPostgres).url;
  let auth: StackAuth | undefined;
  const cleanUp = async () => {
    await auth?.close();
    await database?.stop();
  };
  const service = (name: StackServiceName, env: Record<string, string> = {}) => ({
    entry: serviceEntry(name),
    execArgv: ["--import", parentWatch],
    port: options.ports?.[name],
    startupProbe: quickStartupProbe,
    env: { ...options.env?.all, ...env, ...options.env?.[name] },
  });
  try {
    auth = await startStackAuth();
    const local = await startCloudRunLocal({
      projectId: localProject,
      variables: { project_id: localProject, gateway_public: options.publicGateway === true },
      services: {
        stats: service("stats", { STATS_DATABASE_URL: statsDatabaseUrl }),
        route: service("route"),
        // The local client identity stands for Terraform's gateway_invokers.
        gateway: { ...service("gateway"), extraInvokers: [auth.emails.client] },
      },
      // Its issuer and keys, and each service's metadata host (by the service's name).
      authority: auth.authority,
      overrides: options.overrides,
      scaling: options.scaling,
      logger: options.logger,
      onLine: options.onLine,
    });
    const urlOf = (name: StackServiceName) => local.services[name]?.url as string;
    return {
      local,
      urls: { gateway: urlOf("gateway"), route: urlOf("route"), stats: urlOf("stats") },
      auth,
      caPem: local.caPem,
      caFile: local.caFile,
      databaseDescription: database
        ? `the stack's own PostgreSQL server at 127.0.0.1:${database.port} (${database.dataDir})`
        : describeUrl(statsDatabaseUrl),
      async stop() {
        await local.stop();
        await cleanUp();
      },
    };
  } catch (error) {
    await cleanUp();
    throw error;
  }
}

/** A database URL without its password. */
function describeUrl(raw: string): string {
  try {
    const url = new URL(raw);
    url.password = "";
    return url.toString();
  } catch {
    return "the STATS_DATABASE_URL given";
  }
}
