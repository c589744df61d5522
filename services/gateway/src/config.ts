import { peerUrlVar, serverEnv } from "@cloudrun-grpc/runtime";
import { z } from "zod";

export const gatewayConfigSchema = z.object({
  ...serverEnv,
  ROUTE_URL: peerUrlVar("the route service"),
  STATS_URL: peerUrlVar("the stats service"),
});

export type GatewayConfig = z.infer<typeof gatewayConfigSchema>;
