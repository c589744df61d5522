// One pino logger per process, in the shape Cloud Logging reads: `severity` and `message`.
import { type Logger, pino } from "pino";

// pino's level labels → Cloud Logging's LogSeverity names.
const severityByLevel: Record<string, string> = {
  trace: "DEBUG",
  debug: "DEBUG",
  info: "INFO",
  warn: "WARNING",
  error: "ERROR",
  fatal: "CRITICAL",
};

export type { Logger };

export function createLogger(service: string, level: string): Logger {
  return pino({
    level,
    messageKey: "message",
    base: {
      service,
      // Set by Cloud Run; absent locally.
      ...(process.env.K_REVISION ? { revision: process.env.K_REVISION } : {}),
    },
    timestamp: pino.stdTimeFunctions.isoTime,
    formatters: {
      level: (label) => ({ severity: severityByLevel[label] ?? "DEFAULT" }),
    },
    redact: {
      paths: [
        "authorization",
        "*.authorization",
        "metadata.authorization",
        '["x-serverless-authorization"]',
        '*["x-serverless-authorization"]',
      ],
      censor: "[redacted]",
    },
  });
}
