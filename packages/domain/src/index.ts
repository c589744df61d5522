export * from "./geometry.js";
export * from "./validation.js";
