export * from "./cloud-run-stack.js";
export * from "./embedded-postgres.js";
export * from "./facts.js";
export * from "./local-auth.js";
export * from "./stack.js";
