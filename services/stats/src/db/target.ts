// Which PostgreSQL stats keeps its aggregates in, from STATS_DATABASE_URL (required):
//   postgres://… (postgresql://…)   a PostgreSQL server through node-postgres (the local stack
//                            starts one of its own from npm and passes its URL)
//   cloudsql://<project>:<region>:<instance>/<database>   Cloud SQL through the Cloud SQL
//                            connector with IAM database authentication as the service's own
//                            account (STATS_DATABASE_IAM_USER): no password anywhere
import { z } from "zod";

export type DatabaseTarget =
  | { kind: "postgres"; url: string }
  | { kind: "cloudsql"; instance: string; database: string };

export function parseDatabaseTarget(raw: string | undefined): DatabaseTarget {
  const value = raw?.trim() ?? "";
  if (value === "") {
    throw new Error(
      "is required: postgres://… or cloudsql://<project>:<region>:<instance>/<database> (the local stack, pnpm start, starts a PostgreSQL server of its own and sets it)",
    );
  }
  if (value.startsWith("postgres://") || value.startsWith("postgresql://")) {
    let url: URL;
    try {
      url = new URL(value);
    } catch {
      throw new Error("is not a valid postgres:// URL");
    }
    if (url.hostname === "") throw new Error("postgres:// URL needs a host");
    if (url.pathname.length <= 1) throw new Error("postgres:// URL needs a database name");
    return { kind: "postgres", url: value };
  }
  if (value.startsWith("cloudsql://")) {
    const match = /^cloudsql:\/\/([a-z][a-z0-9-:.]*:[a-z0-9-]+:[a-z0-9-]+)\/([^/?#\s]+)$/.exec(
      value,
    );
    if (!match) {
      throw new Error("must be cloudsql://<project>:<region>:<instance>/<database>");
    }
    return { kind: "cloudsql", instance: match[1] as string, database: match[2] as string };
  }
  const scheme = value.split(":")[0];
  throw new Error(
    `must be postgres://… or cloudsql://<project>:<region>:<instance>/<database>, got ${JSON.stringify(`${scheme}:…`)}`,
  );
}

/** STATS_DATABASE_URL parsed; the error message never repeats a password. */
export const databaseTargetVar = z
  .string()
  .optional()
  .transform((raw, ctx) => {
    try {
      return parseDatabaseTarget(raw);
    } catch (error) {
      ctx.addIssue({ code: "custom", message: (error as Error).message });
      return z.NEVER;
    }
  });

/** A target as logs may show it: no password. */
export function describeTarget(target: DatabaseTarget): string {
  switch (target.kind) {
    case "postgres": {
      const url = new URL(target.url);
      url.password = "";
      return `postgres ${url.host}${url.pathname}`;
    }
    case "cloudsql":
      return `cloudsql ${target.instance}/${target.database}`;
  }
}
