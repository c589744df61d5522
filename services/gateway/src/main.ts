// gateway's process: env → config → createGatewayService → listen on $PORT → drain on SIGTERM.
import { runService } from "@cloudrun-grpc/runtime";
import { gatewayConfigSchema } from "./config.js";
import { createGatewayService } from "./service.js";

await runService("gateway", gatewayConfigSchema, createGatewayService);
