export * from "./commands.js";
export { connectGateway } from "./connect.js";
