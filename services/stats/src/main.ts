// stats' process: env → config → createStatsService → listen on $PORT → drain on SIGTERM.
//
// The stop signals are caught before anything is loaded: stats' modules (grpc-js,
// drizzle, the Cloud SQL connector) take seconds to load on a busy machine, and until a
// listener exists Node's own handler ends the process at once on SIGTERM (exit 143, nothing
// drained, no log line). runService gets the signal that came meanwhile, if one did.
const stopSignal = new Promise<NodeJS.Signals>((resolve) => {
  process.on("SIGTERM", resolve);
  process.on("SIGINT", resolve);
});
const [{ runService }, { statsConfigSchema }, { createStatsService }] = await Promise.all([
  import("@cloudrun-grpc/runtime"),
  import("./config.js"),
  import("./service.js"),
]);
await runService("stats", statsConfigSchema, createStatsService, { stopSignal });
