export * from "./calls.js";
export * from "./fault-proxy.js";
export * from "./in-process-auth.js";
export * from "./in-process-service.js";
export * from "./ports.js";
export * from "./postgres.js";
export * from "./wait.js";
