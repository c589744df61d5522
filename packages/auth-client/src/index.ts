export * from "./config.js";
export * from "./end-user.js";
export * from "./interceptors.js";
export * from "./server-auth.js";
export * from "./tokens.js";
export * from "./topology.js";
export * from "./verify.js";
