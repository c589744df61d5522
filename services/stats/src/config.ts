import { authEnv, authRules, endUserEnv, refusePublicAuth } from "@cloudrun-grpc/auth-client";
import { envSchema, integerVar, serverEnv } from "@cloudrun-grpc/runtime";
import { z } from "zod";
import { databaseTargetVar } from "./db/target.js";

export const statsConfigSchema = envSchema(
  {
    ...serverEnv,
    ...authEnv,
    ...endUserEnv,
    // Watch updates: a burst of changes within this window is sent as one update.
    STATS_WATCH_COALESCE_MS: integerVar(100, 0, 60_000),
    STATS_DATABASE_URL: databaseTargetVar,
    // The IAM database user with cloudsql://: the service account's email without
    // ".gserviceaccount.com" (e.g. stats-svc@my-project.iam).
    STATS_DATABASE_IAM_USER: z.string().optional(),
    STATS_DATABASE_POOL_MAX: integerVar(10, 1, 100),
    // Connecting, and every query, give up after this long (a stuck database never holds a call).
    STATS_DATABASE_TIMEOUT_MS: integerVar(5_000, 100, 120_000),
    // Counted event ids are remembered this long: a report retried later would count twice.
    STATS_EVENT_ID_RETENTION_HOURS: integerVar(168, 1, 24 * 365),
  },
  [
    ...authRules,
    // Never public: only the gateway may serve calls without a token.
    refusePublicAuth,
    {
      needs: ["STATS_DATABASE_URL", "STATS_DATABASE_IAM_USER"],
      check(config, ctx) {
        const iamUser = config.STATS_DATABASE_IAM_USER?.trim() ?? "";
        if (config.STATS_DATABASE_URL.kind === "cloudsql" && iamUser === "") {
          ctx.addIssue({
            code: "custom",
            path: ["STATS_DATABASE_IAM_USER"],
            message:
              "is required with cloudsql://: the IAM database user, the service account's email without .gserviceaccount.com",
          });
        }
        if (config.STATS_DATABASE_URL.kind !== "cloudsql" && iamUser !== "") {
          ctx.addIssue({
            code: "custom",
            path: ["STATS_DATABASE_IAM_USER"],
            message: "is only used with STATS_DATABASE_URL=cloudsql://…",
          });
        }
      },
    },
  ],
);

export type StatsConfig = z.infer<typeof statsConfigSchema>;
