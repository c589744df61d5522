// pnpm bench's arguments: section names (everything started locally), or --gateway URL to
// measure a gateway that runs elsewhere (a Cloud Run deployment, `pnpm start --cloud-run`'s
// front end, or `pnpm start`'s plain h2c gateway) with the unary and streams rows only.
import type { TokenChoice } from "./remote-token.js";

export const sections = [
  "unary",
  "streams",
  "rest",
  "ablation",
  "long-streams",
  "stats-reads",
  "payload",
  "all",
] as const;
export type SectionName = (typeof sections)[number];

/** The sections whose rows `--gateway` can run: the gateway rows of unary and streams. */
const remoteSections = ["unary", "streams"] as const;
export type RemoteSection = (typeof remoteSections)[number];

export type BenchArgs =
  | { kind: "local"; sections: SectionName[] }
  | {
      kind: "remote";
      /** The gateway's origin: what is dialled, and the ID token's audience. */
      gateway: string;
      sections: RemoteSection[];
      token: TokenChoice;
      /** h2load connections; each concurrency is split evenly over them. */
      connections: number;
    };

/** A wrong command line: main prints the message and exits 2. */
export class UsageError extends Error {}

const usage = `pnpm bench [${sections.join("|")}] ...  or  pnpm bench --gateway <https://host[:port]> [unary] [streams] [--token <jwt> | --no-token] [--connections N]`;

/** An origin (scheme, host, port) with nothing else: what Cloud Run's tokens have as audience. */
export function parseGatewayUrl(raw: string): string {
  let url: URL;
  try {
    url = new URL(raw);
  } catch {
    throw new UsageError(`--gateway ${JSON.stringify(raw)} is not a URL: give https://host[:port]`);
  }
  if (url.protocol !== "https:" && url.protocol !== "http:") {
    throw new UsageError(`--gateway ${raw}: the scheme must be https or http, not ${url.protocol}`);
  }
  if (url.username || url.password || url.pathname !== "/" || url.search || url.hash) {
    throw new UsageError(
      `--gateway ${raw}: give the gateway's origin only (${url.origin}), with no path, query or credentials`,
    );
  }
  return url.origin;
}

export function parseBenchArgs(
  argv: string[],
  env: Record<string, string | undefined>,
  concurrencies: number[],
): BenchArgs {
  const named: string[] = [];
  let gateway: string | undefined;
  let token: string | undefined;
  let noToken = false;
  let connections: string | undefined;
  for (let index = 0; index < argv.length; index += 1) {
    const arg = argv[index] as string;
    const [flag, inline] = arg.startsWith("--") ? arg.split(/=(.*)/s, 2) : [arg, undefined];
    const value = () => {
      const found = inline ?? argv[++index];
      if (found === undefined || found === "")
        throw new UsageError(`${flag} needs a value\n${usage}`);
      return found;
    };
    if (flag === "--gateway") gateway = value();
    else if (flag === "--token") token = value();
    else if (flag === "--no-token") noToken = true;
    else if (flag === "--connections") connections = value();
    else if (arg.startsWith("-")) throw new UsageError(`unknown option ${arg}\n${usage}`);
    else if ((sections as readonly string[]).includes(arg)) named.push(arg);
    else throw new UsageError(`unknown section ${arg}: ${usage}`);
  }

  if (gateway === undefined) {
    const remoteOnly = [
      token !== undefined && "--token",
      noToken && "--no-token",
      connections !== undefined && "--connections",
    ].filter(Boolean);
    if (remoteOnly.length > 0) {
      throw new UsageError(`${remoteOnly.join(", ")} only go with --gateway\n${usage}`);
    }
    return { kind: "local", sections: named as SectionName[] };
  }

  const origin = parseGatewayUrl(gateway);
  const local = named.filter((name) => !(remoteSections as readonly string[]).includes(name));
  if (local.length > 0) {
    throw new UsageError(
      `--gateway runs the gateway's unary and streams rows only: ${local.join(", ")} measure(s) processes and baselines started on this machine; run them without --gateway`,
    );
  }
  const given = token ?? env.BENCH_TOKEN;
  if (noToken && token !== undefined)
    throw new UsageError("--token and --no-token exclude each other");
  const choice: TokenChoice = noToken
    ? { kind: "none" }
    : given
      ? { kind: "given", token: given }
      : { kind: "adc" };
  const count = Number(connections ?? 1);
  if (!Number.isInteger(count) || count < 1) {
    throw new UsageError(`--connections ${connections}: a whole number ≥ 1`);
  }
  const uneven = concurrencies.filter((concurrency) => concurrency % count !== 0);
  if (uneven.length > 0) {
    throw new UsageError(
      `--connections ${count}: BENCH_CONCURRENCY ${uneven.join(", ")} cannot be split evenly over ${count} connections`,
    );
  }
  return {
    kind: "remote",
    gateway: origin,
    sections: named.length === 0 ? [...remoteSections] : (named as RemoteSection[]),
    token: choice,
    connections: count,
  };
}
