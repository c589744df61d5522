// route's process: env → config → createRouteService → listen on $PORT → drain on SIGTERM.
import { runService } from "@cloudrun-grpc/runtime";
import { routeConfigSchema } from "./config.js";
import { createRouteService } from "./service.js";

await runService("route", routeConfigSchema, createRouteService);
