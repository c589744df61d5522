// Auth for the local stack, as on Cloud Run: one identity per service from infra/topology.json
// (plus a local client identity that may call the gateway), ID tokens from the local token
// authority through each service's GCE_METADATA_HOST, and each service told its own URL
// (the audience), the issuer, and its allowed invokers.
import {
  allowedInvokers,
  formatAllowedInvoker,
  loadTopology,
  serviceAccountEmail,
} from "@cloudrun-grpc/auth-client";
import { type LocalTokenAuthority, startLocalTokenAuthority } from "@cloudrun-grpc/local-authority";

export type Identity = "gateway" | "route" | "stats" | "client";

/** The project id in the local identities' emails. */
export const localProject = "local-project";

export interface StackAuth {
  authority: LocalTokenAuthority;
  /** Each identity's service account email. */
  emails: Record<Identity, string>;
  /**
   * The auth environment of a service listening at `url`. `publicGateway`: the gateway serves
   * calls without a token as the anonymous caller (AUTH_MODE=optional), as Terraform's
   * gateway_public makes it; other services ignore it (they are never public).
   */
  envFor(
    service: Exclude<Identity, "client">,
    url: string,
    options?: { publicGateway?: boolean },
  ): Record<string, string>;
  /** An ID token for `identity` with `audience`, asked of the authority as the metadata protocol does. */
  tokenFor(identity: Identity, audience: string): Promise<string>;
  close(): Promise<void>;
}

export async function startStackAuth(): Promise<StackAuth> {
  const topology = loadTopology();
  const accountOf = (service: string) => {
    const id = topology.services[service]?.service_account_id;
    if (!id) throw new Error(`infra/topology.json has no service ${JSON.stringify(service)}`);
    return serviceAccountEmail(id, localProject);
  };
  const emails: Record<Identity, string> = {
    gateway: accountOf("gateway"),
    route: accountOf("route"),
    stats: accountOf("stats"),
    client: serviceAccountEmail("local-client", localProject),
  };
  const authority = await startLocalTokenAuthority({ identities: emails });
  return {
    authority,
    emails,
    envFor(service, url, options) {
      // Each caller with the methods the topology grants it.
      const invokers = allowedInvokers(topology, service, localProject);
      // The gateway's external invokers: locally, the local client identity (every method).
      if (service === "gateway") invokers.push({ email: emails.client });
      const isPublic = service === "gateway" && options?.publicGateway === true;
      // The gateway passes its caller on as the end user; a service it invokes believes that
      // from the gateway's own identity only (the topology's edge, as Terraform sets it).
      const endUserFrom: Record<string, string> = {};
      if ("gateway" in (topology.services[service]?.invoked_by ?? {})) {
        endUserFrom.AUTH_END_USER_FROM = emails.gateway;
      }
      return {
        AUTH_MODE: isPublic ? "optional" : "verify",
        AUTH_AUDIENCES: url,
        AUTH_ALLOWED_INVOKERS: invokers.map(formatAllowedInvoker).join(","),
        AUTH_ISSUER: authority.issuer,
        AUTH_JWKS_URL: authority.jwksUrl,
        GCE_METADATA_HOST: authority.metadataHosts[service] as string,
        ...endUserFrom,
      };
    },
    async tokenFor(identity, audience) {
      const host = authority.metadataHosts[identity];
      const url = `http://${host}/computeMetadata/v1/instance/service-accounts/default/identity?format=full&audience=${encodeURIComponent(audience)}`;
      const response = await fetch(url, { headers: { "Metadata-Flavor": "Google" } });
      if (!response.ok) throw new Error(`the local token authority answered ${response.status}`);
      return response.text();
    },
    close: () => authority.close(),
  };
}
