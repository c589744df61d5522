export * from "./config.js";
export * from "./errors.js";
export * from "./logger.js";
export * from "./peer.js";
export * from "./readiness.js";
export * from "./server.js";
export * from "./streams.js";
export * from "./validation.js";
