import { peerUrlVar, serverEnv } from "@cloudrun-grpc/runtime";
import { z } from "zod";

export const routeConfigSchema = z.object({
  ...serverEnv,
  STATS_URL: peerUrlVar("the stats service"),
});

export type RouteConfig = z.infer<typeof routeConfigSchema>;
