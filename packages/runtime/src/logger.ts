// One pino logger per process, writing JSON lines that Cloud Logging reads as structured
// entries: `severity`, `message`, `time`, `serviceContext` (service and revision, which Error
// Reporting groups by), `stack_trace` for errors, and the trace of the call being handled as
// `logging.googleapis.com/trace`, `…/spanId` and `…/trace_sampled`, so one query finds every
// line of a request across services.
//
// Why not Google's @google-cloud/pino-logging-gcp-config: it loads the whole Cloud Logging
// client (google-gax, a second grpc-js and google-auth-library), which measured +0.35 s of
// start-up and +30 MiB per process here, to produce the same few fields. This file writes
// the same shape, with the trace read the way that package reads it (trace_id, span_id,
// trace_flags from the log object or, by default, from the current call).
//
// LOG_FORMAT=pretty sends the same lines through pino-pretty for a terminal; nothing else
// changes.
import { createRequire } from "node:module";
import { type DestinationStream, type Logger, type LoggerOptions, pino } from "pino";
import { currentCall, traceFields } from "./call-context.js";

export type { Logger };

// pino's level labels → Cloud Logging's LogSeverity names.
const severityByLevel: Record<string, string> = {
  trace: "DEBUG",
  debug: "DEBUG",
  info: "INFO",
  warn: "WARNING",
  error: "ERROR",
  fatal: "CRITICAL",
};

export const logFormats = ["json", "pretty"] as const;
export type LogFormat = (typeof logFormats)[number];

export interface LoggerSettings {
  /** The service name; Cloud Run's K_SERVICE wins when set. */
  service: string;
  level: string;
  format?: LogFormat;
  /** Cloud Run's K_REVISION, when set: the `version` Error Reporting shows. */
  revision?: string;
  /** Makes trace fields `projects/<id>/traces/<trace>`, the form Cloud Logging links to Trace. */
  projectId?: string;
  /** Where lines go (tests); stdout by default. */
  destination?: DestinationStream;
}

/** Secrets are removed by path wherever they could appear in a log object. */
export const redactedPaths = [
  "authorization",
  '["x-serverless-authorization"]',
  "token",
  "idToken",
  "id_token",
  "access_token",
  "*.authorization",
  '*["x-serverless-authorization"]',
  "*.token",
  "*.idToken",
  "*.id_token",
  "*.access_token",
  "*.headers.authorization",
  "*.headers.Authorization",
  // Errors from HTTP clients (gaxios) carry the request, headers included.
  "err.config",
  "err.response.config",
];

const traceKey = "logging.googleapis.com/trace";
const spanKey = "logging.googleapis.com/spanId";
const sampledKey = "logging.googleapis.com/trace_sampled";

/** The pino options behind every logger; exported so the shape can be tested as it is. */
export function loggerOptions(settings: LoggerSettings): LoggerOptions {
  const tracePrefix = settings.projectId ? `projects/${settings.projectId}/traces/` : "";
  return {
    level: settings.level,
    messageKey: "message",
    base: {
      pid: process.pid,
      serviceContext: {
        service: settings.service,
        ...(settings.revision ? { version: settings.revision } : {}),
      },
    },
    timestamp: () => `,"time":"${new Date().toISOString()}"`,
    // The trace of the call whose work is logging, unless the line names its own.
    mixin: () => {
      const call = currentCall();
      return call ? { ...traceFields(call.trace) } : {};
    },
    formatters: {
      level: (label) => ({ severity: severityByLevel[label] ?? "DEFAULT" }),
      log: (entry) => {
        if (typeof entry.trace_id === "string") {
          entry[traceKey] = `${tracePrefix}${entry.trace_id}`;
          entry[spanKey] = entry.span_id;
          if (entry.trace_flags === "01") entry[sampledKey] = true;
          delete entry.trace_id;
          delete entry.span_id;
          delete entry.trace_flags;
        }
        // Error Reporting picks up ERROR entries by their stack.
        if (entry.err instanceof Error && entry.err.stack) entry.stack_trace = entry.err.stack;
        return entry;
      },
    },
    redact: { paths: redactedPaths, censor: "[redacted]" },
  };
}

const requireHere = createRequire(import.meta.url);

/** Lines formatted by pino-pretty (loaded only when asked for), written synchronously. */
export function prettyDestination(destination?: DestinationStream): DestinationStream {
  const format = prettyLineFormatter();
  // sync spelled out: pino.destination(1) alone is asynchronous.
  const out = destination ?? pino.destination({ dest: 1, sync: true });
  return {
    write: (chunk: string) => {
      for (const line of chunk.split("\n")) if (line) out.write(`${format(line)}\n`);
    },
  };
}

/** Formats one JSON log line for a terminal (the local stack shows its services' lines so). */
export function prettyLineFormatter(): (line: string) => string {
  const { prettyFactory } = requireHere("pino-pretty") as {
    prettyFactory: (options: object) => (line: string) => string;
  };
  const format = prettyFactory(prettyOptions);
  // pino-pretty passes a line that is not JSON through; its result ends with a newline.
  return (line) => format(line).replace(/\n$/, "");
}

/** How pino-pretty reads these lines: Cloud Logging's keys instead of pino's. */
export const prettyOptions = {
  messageKey: "message",
  timestampKey: "time",
  translateTime: "HH:MM:ss.l",
  levelKey: "severity",
  customLevels: "DEFAULT:0,DEBUG:20,INFO:30,WARNING:40,ERROR:50,CRITICAL:60",
  useOnlyCustomProps: true,
  // Dots in key names escaped: pino-pretty reads "a.b" as a path.
  ignore: ["pid", "hostname", "serviceContext", spanKey, sampledKey, "stack_trace"]
    .map((key) => key.replaceAll(".", "\\."))
    .join(","),
  singleLine: true,
};

// The asynchronous stdout of each logger createLogger made, for writeOutLogs.
const asyncStdout = new WeakMap<Logger, ReturnType<typeof pino.destination>>();

export function createLogger(settings: LoggerSettings): Logger {
  const options = loggerOptions(settings);
  if (settings.format === "pretty") return pino(options, prettyDestination(settings.destination));
  if (settings.destination) return pino(options, settings.destination);
  // Asynchronous: a busy process's lines go out together, one write per batch rather than one
  // blocking write per line. Before the process exits on purpose, writeOutLogs waits for them.
  const stdout = pino.destination({ dest: 1, sync: false });
  const logger = pino(options, stdout);
  asyncStdout.set(logger, stdout);
  return logger;
}

/**
 * Calls `done` once every line the logger has taken so far is written, in order (at once for a
 * synchronous destination), or after `timeoutMs` if stdout's reader does not keep up: what a
 * process does before process.exit, so its last lines are neither lost nor reordered.
 *
 * Not logger.flush(cb): sonic-boom (4.2.1, index.js `flush`) calls cb at once when minLength
 * is 0, as here, while a write may still be under way on libuv's thread pool; process.exit
 * then has pino write the newer lines synchronously (sonic-boom's flushSync skips the chunk
 * in flight), so they can land before the older ones, and the chunk in flight can be lost.
 * This way uses only sonic-boom's public behaviour: an empty write joins the queue, and
 * 'drain' is emitted once the queue is empty and nothing is being written.
 */
export function writeOutLogs(logger: Logger, timeoutMs: number, done: () => void): void {
  const stdout = asyncStdout.get(logger);
  if (!stdout) {
    done();
    return;
  }
  let called = false;
  const finish = () => {
    if (called) return;
    called = true;
    clearTimeout(timer);
    stdout.off("drain", finish);
    done();
  };
  // Late because the event loop was blocked (a busy machine, a long synchronous step), the
  // timer would beat a write that has finished meanwhile: setImmediate lets the poll phase
  // deliver its completion (and 'drain') first.
  const timer = setTimeout(() => setImmediate(finish), timeoutMs);
  stdout.on("drain", finish);
  stdout.write("");
}

/** A logger that writes nothing (unit tests of code that takes a logger). */
export function silentLogger(): Logger {
  return pino({ level: "silent" });
}
