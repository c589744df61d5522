export * from "./local-auth.js";
export * from "./stack.js";
