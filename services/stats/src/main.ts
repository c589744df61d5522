// stats' process: env → config → createStatsService → listen on $PORT → drain on SIGTERM.
import { runService } from "@cloudrun-grpc/runtime";
import { statsConfigSchema } from "./config.js";
import { createStatsService } from "./service.js";

await runService("stats", statsConfigSchema, createStatsService);
