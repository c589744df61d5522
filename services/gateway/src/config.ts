import { authEnv, checkAuthConfig } from "@cloudrun-grpc/auth-client";
import { peerAddressesVar, peerUrlVar, serverEnv } from "@cloudrun-grpc/runtime";
import { z } from "zod";

export const gatewayConfigSchema = z
  .object({
    ...serverEnv,
    ...authEnv,
    ROUTE_URL: peerUrlVar("the route service"),
    // Local runs and tests: several route instances behind one URL (see withAddresses).
    ROUTE_ADDRESSES: peerAddressesVar(),
    STATS_URL: peerUrlVar("the stats service"),
  })
  .superRefine(checkAuthConfig);

export type GatewayConfig = z.infer<typeof gatewayConfigSchema>;
