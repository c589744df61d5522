import { authEnv, authRules, endUserEnv, refusePublicAuth } from "@cloudrun-grpc/auth-client";
import { envSchema, integerVar, peerUrlVar, serverEnv } from "@cloudrun-grpc/runtime";
import { z } from "zod";

export const routeConfigSchema = envSchema(
  {
    ...serverEnv,
    ...authEnv,
    ...endUserEnv,
    STATS_URL: peerUrlVar("the stats service"),
    // Bounds on one call's work: past them the call ends with RESOURCE_EXHAUSTED.
    ROUTE_MAX_POINTS: integerVar(100_000, 1, 10_000_000),
    // Each note is answered with the earlier notes at its place, so answers grow with notes².
    CHAT_MAX_NOTES: integerVar(1_000, 1, 100_000),
    // Another feature data set than the bundled one (a JSON file of the same shape), e.g. a
    // large one for the tests and the bench of long ListFeatures streams.
    ROUTE_FEATURES_FILE: z.string().min(1).optional(),
  },
  // Never public: only the gateway may serve calls without a token.
  [...authRules, refusePublicAuth],
);

export type RouteConfig = z.infer<typeof routeConfigSchema>;
