export * from "./stack.js";
