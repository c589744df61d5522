import { authEnv, authRules } from "@cloudrun-grpc/auth-client";
import { envSchema, peerAddressesVar, peerUrlVar, serverEnv } from "@cloudrun-grpc/runtime";
import type { z } from "zod";

export const gatewayConfigSchema = envSchema(
  {
    ...serverEnv,
    ...authEnv,
    ROUTE_URL: peerUrlVar("the route service"),
    // Local runs and tests: several route instances behind one URL (see withAddresses).
    ROUTE_ADDRESSES: peerAddressesVar(),
    STATS_URL: peerUrlVar("the stats service"),
  },
  authRules,
);

export type GatewayConfig = z.infer<typeof gatewayConfigSchema>;
