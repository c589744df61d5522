// The call graph, from infra/topology.json: for each service, its identity (service account
// id) and who may invoke it: other services of the topology, each with the methods of this
// service it may call (`invoked_by`: caller → ["GetStats", …]), and identities from outside
// it (`external_invokers`, IAM member strings such as "user:ana@example.com"; set for the
// gateway; they may call every method). Terraform reads the same file for service accounts,
// run.invoker bindings (per service: Cloud Run's IAM has no per-method grant) and each
// service's AUTH_ALLOWED_INVOKERS (email=Method1|Method2), which the service enforces itself.
import { readFileSync } from "node:fs";
import { z } from "zod";
import type { AllowedInvoker } from "./server-auth.js";

const serviceName = z.string().regex(/^[a-z][a-z0-9-]*$/, "must be a lowercase service name");

export const topologySchema = z
  .object({
    services: z.record(
      serviceName,
      z.object({
        // GCP service account ids: 6 to 30 lowercase letters, digits and hyphens.
        service_account_id: z
          .string()
          .regex(
            /^[a-z][a-z0-9-]{4,28}[a-z0-9]$/,
            "must be a valid service account id (6-30 of a-z, 0-9, -)",
          ),
        invoked_by: z.record(
          serviceName,
          z
            .array(
              z.string().regex(/^[A-Z][A-Za-z0-9]*$/, "must be a method name such as GetStats"),
            )
            .min(1, "names the methods the caller may call (at least one)"),
        ),
        // Only members a service can also check itself, by the email in the token.
        external_invokers: z.array(
          z
            .string()
            .regex(
              /^(user|serviceAccount):[^\s@]+@[^\s@]+$/,
              "must be user:<email> or serviceAccount:<email> (groups and domains cannot be checked in the container)",
            ),
        ),
      }),
    ),
  })
  .superRefine((topology, ctx) => {
    for (const [name, service] of Object.entries(topology.services)) {
      for (const caller of Object.keys(service.invoked_by)) {
        if (!(caller in topology.services)) {
          ctx.addIssue({
            code: "custom",
            path: ["services", name, "invoked_by"],
            message: `unknown service ${JSON.stringify(caller)}`,
          });
        }
        if (caller === name) {
          ctx.addIssue({
            code: "custom",
            path: ["services", name, "invoked_by"],
            message: "a service does not invoke itself",
          });
        }
      }
    }
  });

export type Topology = z.infer<typeof topologySchema>;

export const topologyPath = new URL("../../../infra/topology.json", import.meta.url);

export function loadTopology(path: string | URL = topologyPath): Topology {
  let raw: unknown;
  try {
    raw = JSON.parse(readFileSync(path, "utf8"));
  } catch (error) {
    throw new Error(`${String(path)}: cannot read the topology: ${(error as Error).message}`);
  }
  const parsed = topologySchema.safeParse(raw);
  if (!parsed.success) {
    const issue = parsed.error.issues[0];
    throw new Error(`${String(path)}: ${issue?.path.join(".")}: ${issue?.message}`);
  }
  return parsed.data;
}

/** `<id>@<project>.iam.gserviceaccount.com`, as GCP names a service account. */
export function serviceAccountEmail(accountId: string, projectId: string): string {
  return `${accountId}@${projectId}.iam.gserviceaccount.com`;
}

/** Every caller → callee edge of the topology, sorted, as "caller→callee". */
export function topologyEdges(topology: Topology): string[] {
  return Object.entries(topology.services)
    .flatMap(([callee, service]) =>
      Object.keys(service.invoked_by).map((caller) => `${caller}→${callee}`),
    )
    .sort();
}

/** Every method each caller may call on each callee, sorted, as "caller→callee/Method". */
export function topologyMethodEdges(topology: Topology): string[] {
  return Object.entries(topology.services)
    .flatMap(([callee, service]) =>
      Object.entries(service.invoked_by).flatMap(([caller, methods]) =>
        methods.map((method) => `${caller}→${callee}/${method}`),
      ),
    )
    .sort();
}

/**
 * Who may invoke `service`: its callers' service accounts in the given project with the
 * methods each may call, then its external invokers (their IAM member prefix dropped; every
 * method).
 */
export function allowedInvokers(
  topology: Topology,
  service: string,
  projectId: string,
): AllowedInvoker[] {
  const entry = topology.services[service];
  if (!entry) throw new Error(`the topology has no service ${JSON.stringify(service)}`);
  return [
    ...Object.entries(entry.invoked_by).map(([caller, methods]) => ({
      email: serviceAccountEmail(
        topology.services[caller]?.service_account_id as string,
        projectId,
      ),
      methods,
    })),
    ...entry.external_invokers.map((member) => ({ email: member.slice(member.indexOf(":") + 1) })),
  ];
}

/** The emails of `allowedInvokers`, whatever their methods. */
export function allowedInvokerEmails(
  topology: Topology,
  service: string,
  projectId: string,
): string[] {
  return allowedInvokers(topology, service, projectId).map((invoker) => invoker.email);
}
