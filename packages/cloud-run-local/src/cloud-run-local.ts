// Cloud Run, locally: every service of infra/ behind a front end of its own, configured from the
// same Terraform that deploys it. It is a test double of Cloud Run's documented contract, not a
// platform: see README.md ("Cloud Run, locally") for what it reproduces and what it does not.
import { fileURLToPath } from "node:url";
import { formatAllowedInvoker, serviceAccountEmail } from "@cloudrun-grpc/auth-client";
import { makeEdgeCertificates } from "./certificates.js";
import { FrontEnd } from "./edge.js";
import { EdgeIam } from "./iam.js";
import { loadInfra, type Probe, type ServiceDefinition } from "./infra.js";
import { Instance, shutdownGraceMs } from "./instance.js";
import { defaultLogger, type Logger } from "./log.js";
import { InstancePool } from "./pool.js";
import { VpcEgress } from "./vpc.js";

export interface LocalServiceOptions {
  /** The built entry point, e.g. services/route/dist/main.js. */
  entry: string;
  /** Node arguments before the entry (e.g. ["--import", "tsx"] for a TypeScript fixture). */
  execArgv?: string[];
  /** Added to (and over) the environment Terraform gives the container. */
  env?: Record<string, string>;
  /** The front end's port (default: a free one). */
  port?: number;
  /** More invokers (emails) than the topology names, e.g. the local client identity. */
  extraInvokers?: string[];
  /** Probe settings over Terraform's (e.g. a short period in tests). */
  startupProbe?: Partial<Probe>;
  livenessProbe?: Partial<Probe>;
}

export interface CloudRunLocalOptions {
  /** Default: this repository's infra/. */
  infraDir?: string;
  /** Values for the root's Terraform variables (as terraform.tfvars); defaults fill the rest. */
  variables?: Record<string, unknown>;
  /** The services to serve, by their module name in infra/ (each must be there). */
  services: Record<string, LocalServiceOptions>;
  /** The ID token issuer the edge trusts, and each identity's metadata host (GCE_METADATA_HOST). */
  authority: { issuer: string; jwksUrl: string; metadataHosts?: Record<string, string> };
  /** The project in the service accounts' emails (default local-project, as the local stack). */
  projectId?: string;
  /**
   * Autoscaling timings: how long an idle instance is kept (Cloud Run: up to 15 minutes, the
   * default), how long a request waits for a free slot (Cloud Run: up to 30 s, the default), and
   * the grace between SIGTERM and SIGKILL (the container contract's 10 s, the default).
   */
  scaling?: { idleMs?: number; pendingMs?: number; shutdownGraceMs?: number };
  /** Overrides of Terraform's settings per service, for tests (e.g. a short request timeout). */
  overrides?: Record<
    string,
    Partial<
      Pick<
        ServiceDefinition,
        "maxConcurrency" | "minInstances" | "maxInstances" | "requestTimeoutSeconds"
      >
    >
  >;
  logger?: Logger;
  /** Each line an instance prints. */
  onLine?: (service: string, instance: string, line: string, stream: "stdout" | "stderr") => void;
}

export interface LocalService {
  name: string;
  /** https://localhost:<port>: what clients dial, and the audience of their ID tokens. */
  url: string;
  definition: ServiceDefinition;
  /** The instances now (starting, ready or stopping). */
  instances(): readonly Instance[];
}

export interface CloudRunLocal {
  services: Record<string, LocalService>;
  /** PEM of the CA the front ends' certificate is signed by: what a client must trust. */
  caPem: string;
  /** The same as a file (GRPC_DEFAULT_SSL_ROOTS_FILE_PATH), until stop(). */
  caFile: string;
  /** Stops every instance (SIGTERM, SIGKILL 10 s later) and front end. */
  stop(): Promise<void>;
}

const defaultInfraDir = fileURLToPath(new URL("../../../infra", import.meta.url));

/** What the host passes into a container: nothing but what a process needs to run at all. */
function hostBasics(): Record<string, string> {
  const basics: Record<string, string> = {};
  for (const name of ["PATH", "HOME", "TMPDIR", "TZ", "LANG"]) {
    const value = process.env[name];
    if (value !== undefined) basics[name] = value;
  }
  return basics;
}

export async function startCloudRunLocal(options: CloudRunLocalOptions): Promise<CloudRunLocal> {
  const logger = options.logger ?? defaultLogger();
  const projectId = options.projectId ?? "local-project";
  const definitions = await loadInfra(options.infraDir ?? defaultInfraDir, {
    variables: options.variables,
  });
  const names = Object.keys(options.services);
  for (const name of names) {
    if (!definitions[name]) {
      throw new Error(
        `cloud-run-local: infra has no Cloud Run service ${JSON.stringify(name)} (it has ${Object.keys(definitions).join(", ")})`,
      );
    }
    for (const [variable, peer] of Object.entries(definitions[name]?.peers ?? {})) {
      if (!names.includes(peer)) {
        throw new Error(
          `cloud-run-local: ${name}'s ${variable} names ${peer}, which is not among the services to serve`,
        );
      }
    }
  }
  const emailOf = (service: string) => {
    const id = definitions[service]?.serviceAccountId;
    if (!id) throw new Error(`cloud-run-local: no service account for ${service}`);
    return serviceAccountEmail(id, projectId);
  };

  const certificates = makeEdgeCertificates();
  const frontEnds = new Map<string, FrontEnd>();
  const pools = new Map<string, InstancePool>();
  const iams = new Map<string, EdgeIam>();
  const vpc = new VpcEgress(
    () => new Set([...frontEnds.values()].map((frontEnd) => frontEnd.port)),
  );
  const stopAll = async () => {
    await Promise.all([...pools.values()].map((pool) => pool.stop()));
    await Promise.all([...frontEnds.values()].map((frontEnd) => frontEnd.stop()));
    await vpc.stop();
    certificates.dispose();
  };

  try {
    await vpc.start();
    for (const name of names) {
      const definition = {
        ...(definitions[name] as ServiceDefinition),
        ...options.overrides?.[name],
      };
      const frontEnd = new FrontEnd({
        service: name,
        port: options.services[name]?.port ?? 0,
        certificates,
        internalOnly: definition.ingress !== "INGRESS_TRAFFIC_ALL",
        vpc,
        iam: () => iams.get(name) as EdgeIam,
        pool: () => pools.get(name) as InstancePool,
        requestTimeoutMs: definition.requestTimeoutSeconds * 1000,
        logger,
      });
      await frontEnd.start();
      frontEnds.set(name, frontEnd);
      definitions[name] = definition;
    }
    const urlOf = (service: string) => (frontEnds.get(service) as FrontEnd).url;

    for (const name of names) {
      const local = options.services[name] as LocalServiceOptions;
      const definition = definitions[name] as ServiceDefinition;
      const url = urlOf(name);
      const callers = Object.entries(definition.invokedBy);
      const invokers = [
        ...callers.map(([caller]) => emailOf(caller)),
        ...definition.externalInvokers,
        ...(local.extraInvokers ?? []),
      ];
      iams.set(
        name,
        new EdgeIam({
          invokerIamDisabled: definition.invokerIamDisabled,
          audiences: [url, ...definition.customAudiences],
          issuer: options.authority.issuer,
          jwksUrl: options.authority.jwksUrl,
          invokers,
        }),
      );

      // The container's environment as modules/grpc-service/main.tf builds it (container_env:
      // the module's env, the peers' URLs, AUTH_*), with local values where Cloud Run's own
      // would not work here: the front ends' URLs, the local authority as issuer and metadata
      // server, the front ends' CA as the trusted roots, the VPC as the egress proxy.
      const env: Record<string, string> = {
        ...hostBasics(),
        ...definition.env,
        ...Object.fromEntries(
          Object.entries(definition.peers).map(([variable, peer]) => [variable, urlOf(peer)]),
        ),
        AUTH_MODE: definition.invokerIamDisabled ? "optional" : "verify",
        AUTH_AUDIENCES: [url, ...definition.customAudiences].join(","),
        AUTH_ALLOWED_INVOKERS: [
          ...callers.map(([caller, methods]) =>
            formatAllowedInvoker({ email: emailOf(caller), methods }),
          ),
          ...definition.externalInvokers,
          ...(local.extraInvokers ?? []),
        ].join(","),
        AUTH_END_USER_FROM: definition.endUserFrom.map(emailOf).join(","),
        AUTH_ISSUER: options.authority.issuer,
        AUTH_JWKS_URL: options.authority.jwksUrl,
        GOOGLE_CLOUD_PROJECT: projectId,
        GRPC_DEFAULT_SSL_ROOTS_FILE_PATH: certificates.caFile,
        // Loopback only: the contract's 0.0.0.0 would open the instance to the network.
        HOST: "127.0.0.1",
        ...(definition.vpcEgress ? { grpc_proxy: vpc.url } : {}),
        ...(options.authority.metadataHosts?.[name]
          ? { GCE_METADATA_HOST: options.authority.metadataHosts[name] }
          : {}),
        ...local.env,
        // Set by Cloud Run, whatever the configuration says (container contract).
        K_SERVICE: definition.name,
        K_REVISION: `${definition.name}-00001-loc`,
        K_CONFIGURATION: definition.name,
      };
      let serial = 0;
      pools.set(
        name,
        new InstancePool({
          service: name,
          maxConcurrency: definition.maxConcurrency,
          minInstances: definition.minInstances,
          maxInstances: definition.maxInstances,
          idleMs: options.scaling?.idleMs ?? 15 * 60_000,
          pendingMs: options.scaling?.pendingMs ?? 30_000,
          shutdownGraceMs: options.scaling?.shutdownGraceMs ?? shutdownGraceMs,
          startupProbe: { ...definition.startupProbe, ...local.startupProbe },
          livenessProbe: definition.livenessProbe && {
            ...definition.livenessProbe,
            ...local.livenessProbe,
          },
          launch: () => {
            serial += 1;
            const id = `${name}-${serial}`;
            return Instance.start({
              id,
              entry: local.entry,
              execArgv: local.execArgv,
              env,
              onLine:
                options.onLine && ((line, stream) => options.onLine?.(name, id, line, stream)),
            });
          },
          logger,
        }),
      );
    }
    await Promise.all([...pools.values()].map((pool) => pool.start()));
    logger.info(
      { event: "serving", services: Object.fromEntries(names.map((name) => [name, urlOf(name)])) },
      "cloud-run-local: serving",
    );

    return {
      services: Object.fromEntries(
        names.map((name) => [
          name,
          {
            name,
            url: urlOf(name),
            definition: definitions[name] as ServiceDefinition,
            instances: () => (pools.get(name) as InstancePool).instances(),
          },
        ]),
      ),
      caPem: certificates.caPem,
      caFile: certificates.caFile,
      stop: stopAll,
    };
  } catch (error) {
    await stopAll();
    throw error;
  }
}
