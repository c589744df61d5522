// Every decision the front end takes is one JSON line (instance started, ready, scaled in,
// request refused and why), so a user can watch autoscaling happen. Any pino-like logger fits;
// without one, pino writes the lines to stdout.
import pino from "pino";

/** Just what the front end logs with (a pino logger fits). */
export interface Logger {
  info(details: object, message: string): void;
  warn(details: object, message: string): void;
  error(details: object, message: string): void;
}

export function defaultLogger(): Logger {
  return pino({ base: { component: "cloud-run-local" }, messageKey: "message" });
}
