import { authEnv, checkAuthConfig } from "@cloudrun-grpc/auth-client";
import { integerVar, serverEnv } from "@cloudrun-grpc/runtime";
import { z } from "zod";

export const statsConfigSchema = z
  .object({
    ...serverEnv,
    ...authEnv,
    // Watch updates: a burst of changes within this window is sent as one update.
    STATS_WATCH_COALESCE_MS: integerVar(100, 0, 60_000),
  })
  .superRefine(checkAuthConfig);

export type StatsConfig = z.infer<typeof statsConfigSchema>;
