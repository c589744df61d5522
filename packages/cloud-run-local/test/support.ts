// What the front end's tests share: a Terraform root of their own (the real grpc-service
// module, small numbers), the stand-in container, real ID tokens from the local authority,
// gRPC clients that trust the front ends' CA, and the front end's log lines.
import { mkdtempSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import type { LocalTokenAuthority } from "@cloudrun-grpc/local-authority";
import * as grpc from "@grpc/grpc-js";
import type { Logger } from "../src/index.js";

export const fixture = fileURLToPath(new URL("./fixtures/container.mjs", import.meta.url));
const realModules = fileURLToPath(new URL("../../../infra/modules", import.meta.url));

const email = (id: string) => `${id}@local-project.iam.gserviceaccount.com`;

/** The identities the tests mint tokens for. */
export const identities = {
  tester: email("tester"),
  front: email("front-svc"),
  stranger: email("stranger"),
};

// Each module names the real grpc-service module; only the numbers differ from infra/.
function service(name: string, settings: string): string {
  return `
module "${name}" {
  source             = "./modules/grpc-service"
  project_id         = var.project_id
  region             = "europe-west1"
  name               = "${name}"
  service_account_id = local.topology.${name}.service_account_id
  image              = "unused-locally"
  health_service     = "test.Echo"
${settings.includes("invokers") ? "" : "  invokers           = {}\n"}${settings}
}
`;
}

/** A Terraform root for the tests, in a temporary folder (removed by the returned function). */
export function makeTestInfra(): { dir: string; remove(): void } {
  const dir = mkdtempSync(join(tmpdir(), "cloud-run-local-infra-"));
  symlinkSync(realModules, join(dir, "modules"));
  writeFileSync(
    join(dir, "topology.json"),
    JSON.stringify({
      services: {
        front: {
          service_account_id: "front-svc",
          invoked_by: {},
          external_invokers: [`serviceAccount:${identities.tester}`],
        },
        back: {
          service_account_id: "back-svc",
          invoked_by: { front: ["Echo"] },
          external_invokers: [],
        },
        open: { service_account_id: "open-svc", invoked_by: {}, external_invokers: [] },
        scaled: {
          service_account_id: "scaled-svc",
          invoked_by: {},
          external_invokers: [`serviceAccount:${identities.tester}`],
        },
        late: {
          service_account_id: "late-svc",
          invoked_by: {},
          external_invokers: [`serviceAccount:${identities.tester}`],
        },
        slow: {
          service_account_id: "slow-svc",
          invoked_by: {},
          external_invokers: [`serviceAccount:${identities.tester}`],
        },
      },
    }),
  );
  writeFileSync(
    join(dir, "variables.tf"),
    `variable "project_id" {
  type = string
}
variable "log_level" {
  type    = string
  default = "debug"
}
variable "vpc" {
  default = { network = "n", subnetwork = "s" }
}
`,
  );
  writeFileSync(
    join(dir, "main.tf"),
    [
      `locals {\n  topology = jsondecode(file("\${path.module}/topology.json")).services\n}\n`,
      service(
        "front",
        `  ingress         = "INGRESS_TRAFFIC_ALL"
  max_concurrency = 1
  max_instances   = 3
  vpc_egress      = var.vpc
  env             = { LOG_LEVEL = var.log_level, DATABASE = "cloudsql://\${google_sql_database_instance.x.connection_name}" }
  peers           = { PEER_URL = module.back.url }`,
      ),
      service(
        "back",
        `  ingress  = "INGRESS_TRAFFIC_INTERNAL_ONLY"
  invokers = { front = module.front.service_account_member }`,
      ),
      service(
        "open",
        `  ingress = "INGRESS_TRAFFIC_ALL"
  public  = true`,
      ),
      service(
        "scaled",
        `  ingress         = "INGRESS_TRAFFIC_ALL"
  max_concurrency = 50
  min_instances   = 1
  max_instances   = 2`,
      ),
      service(
        "late",
        `  ingress       = "INGRESS_TRAFFIC_ALL"
  max_instances = 1`,
      ),
      service(
        "slow",
        `  ingress                 = "INGRESS_TRAFFIC_ALL"
  request_timeout_seconds = 1`,
      ),
    ].join(""),
  );
  return { dir, remove: () => rmSync(dir, { recursive: true, force: true }) };
}

/** Fast probes for tests (Terraform's startup probe runs every 4 s). */
export const quickProbes = {
  startupProbe: { periodSeconds: 0.05 },
  livenessProbe: { periodSeconds: 0.1 },
};

/** An ID token for `identity` with `audience`, asked of the authority as a service asks it. */
export async function tokenFor(
  authority: LocalTokenAuthority,
  identity: keyof typeof identities,
  audience: string,
): Promise<string> {
  const host = authority.metadataHosts[identity];
  const response = await fetch(
    `http://${host}/computeMetadata/v1/instance/service-accounts/default/identity?format=full&audience=${encodeURIComponent(audience)}`,
    { headers: { "Metadata-Flavor": "Google" } },
  );
  assertOk(response.ok, `the authority answered ${response.status}`);
  return response.text();
}

function assertOk(condition: boolean, message: string): asserts condition {
  if (!condition) throw new Error(message);
}

// The stand-in's methods, JSON both ways (as in fixtures/container.mjs).
const json = {
  serialize: (value: unknown) => Buffer.from(JSON.stringify(value)),
  deserialize: (buffer: Buffer) => JSON.parse(buffer.toString("utf8") || "{}"),
};
const method = (name: string, requestStream: boolean, responseStream: boolean) => ({
  path: `/test.Echo/${name}`,
  requestStream,
  responseStream,
  requestSerialize: json.serialize,
  requestDeserialize: json.deserialize,
  responseSerialize: json.serialize,
  responseDeserialize: json.deserialize,
});
const EchoClient = grpc.makeGenericClientConstructor(
  {
    Echo: method("Echo", false, false),
    Hold: method("Hold", true, true),
    Sleep: method("Sleep", false, false),
    Forward: method("Forward", false, false),
    Sicken: method("Sicken", false, false),
  },
  "Echo",
);

export type Answer = Record<string, unknown>;

export interface EchoClient extends grpc.Client {
  call(
    name: "Echo" | "Sleep" | "Forward" | "Sicken",
    request: object,
    metadata?: Record<string, string>,
    timeoutMs?: number,
  ): Promise<Answer>;
  hold(metadata?: Record<string, string>): grpc.ClientDuplexStream<object, Answer>;
}

/** A client of the stand-in at a front end's URL, over TLS trusting `caPem`: one connection. */
export function echoClient(url: string, caPem: string): EchoClient {
  const client = new EchoClient(
    new URL(url).host,
    grpc.credentials.createSsl(Buffer.from(caPem)),
  ) as unknown as EchoClient & Record<string, (...args: unknown[]) => unknown>;
  const metadataOf = (headers: Record<string, string>) => {
    const metadata = new grpc.Metadata();
    for (const [key, value] of Object.entries(headers)) metadata.set(key, value);
    return metadata;
  };
  client.call = (name, request, headers = {}, timeoutMs = 15_000) =>
    new Promise((resolve, reject) => {
      client[name]?.call(
        client,
        request,
        metadataOf(headers),
        { deadline: Date.now() + timeoutMs },
        (error: Error | null, answer: Answer) => (error ? reject(error) : resolve(answer)),
      );
    });
  client.hold = (headers = {}) =>
    client.Hold?.call(client, metadataOf(headers)) as unknown as grpc.ClientDuplexStream<
      object,
      Answer
    >;
  return client;
}

/** Opens a Hold stream and waits for its first answer: the pid of the instance serving it. */
export async function holdOpen(client: EchoClient, headers: Record<string, string>) {
  const stream = client.hold(headers);
  const errors: grpc.ServiceError[] = [];
  stream.on("error", (error: grpc.ServiceError) => errors.push(error));
  const ended = new Promise<grpc.StatusObject>((resolve) => stream.on("status", resolve));
  const first = new Promise<number>((resolve, reject) => {
    stream.once("data", (answer: Answer) => resolve(answer.pid as number));
    stream.once("error", reject);
  });
  // A refused stream has no first answer: its status says why (`ended`).
  first.catch(() => {});
  stream.write({});
  return { stream, pid: first, ended, errors };
}

export interface LogLine {
  level: "info" | "warn" | "error";
  message: string;
  /** When it was logged (ms since the epoch). */
  at: number;
  [key: string]: unknown;
}

/** A logger that keeps the front end's lines for the test to read. */
export function collectingLogger(): { logger: Logger; lines: LogLine[] } {
  const lines: LogLine[] = [];
  const at = (level: LogLine["level"]) => (details: object, message: string) => {
    lines.push({ level, message, at: Date.now(), ...details });
  };
  return { logger: { info: at("info"), warn: at("warn"), error: at("error") }, lines };
}

/** Waits until `condition` holds (polling), or fails saying what it waited for. */
export async function waitFor(
  condition: () => boolean,
  what: string,
  timeoutMs = 10_000,
): Promise<void> {
  const giveUpAt = Date.now() + timeoutMs;
  while (!condition()) {
    if (Date.now() > giveUpAt) throw new Error(`gave up waiting (${timeoutMs} ms) for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}
