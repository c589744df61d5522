// Config comes only from the environment, parsed by one zod schema per service at start.
// A bad value stops the process with one line per bad variable, naming it.
import { z } from "zod";
import { type LogFormat, logFormats } from "./logger.js";
import { parsePeerUrl } from "./peer.js";
import { type TelemetryEnv, telemetryEnv } from "./telemetry-config.js";

export class ConfigError extends Error {
  constructor(readonly problems: string[]) {
    super(`invalid configuration:\n${problems.map((line) => `  ${line}`).join("\n")}`);
    this.name = "ConfigError";
  }
}

/**
 * Parses `env` with `schema`; throws ConfigError listing every bad variable, one line each
 * (two problems of one variable, say from its own parser and from a rule, share its line).
 */
export function parseConfig<Schema extends z.ZodType>(
  schema: Schema,
  env: Record<string, string | undefined>,
): z.infer<Schema> {
  const result = schema.safeParse(env);
  if (result.success) return result.data;
  const byVariable = new Map<string, string[]>();
  for (const issue of result.error.issues) {
    const variable = issue.path.join(".");
    byVariable.set(variable, [...(byVariable.get(variable) ?? []), issue.message]);
  }
  throw new ConfigError(
    [...byVariable].map(([variable, messages]) => `${variable}: ${messages.join("; ")}`),
  );
}

/**
 * A rule across variables (e.g. AUTH_AUDIENCES is required unless AUTH_MODE=off). It runs
 * whenever every variable in `needs` parsed, whatever else failed; when one of them failed,
 * that variable's own line says why and the rule, which would have to guess, is skipped.
 * auth-client's rules have this shape too, without depending on this package.
 */
export interface EnvRule<Config> {
  needs: readonly (keyof Config & string)[];
  check(config: Config, ctx: z.RefinementCtx<Config>): void;
}

/**
 * A service's environment schema: one parser per variable, then the rules across them. zod 4
 * skips an object's refinements once any field has failed, so a bad STATS_URL used to hide a
 * missing AUTH_AUDIENCES until it was fixed; these rules run with `when: () => true` (zod 4's
 * way to run a refinement over a partly failed object: $ZodSuperRefineParams.when), guarded by
 * `needs`, so one start reports every bad variable.
 */
export function envSchema<Shape extends z.ZodRawShape>(
  shape: Shape,
  rules: readonly EnvRule<z.output<z.ZodObject<Shape>>>[] = [],
) {
  return z.object(shape).superRefine(
    (config, ctx) => {
      // Taken before any rule runs: a rule's own finding does not hide another rule.
      const failed = new Set(ctx.issues.map((issue) => issue.path?.[0]));
      for (const rule of rules) {
        if (rule.needs.some((name) => failed.has(name))) continue;
        rule.check(config, ctx);
      }
    },
    { when: () => true },
  );
}

/** The CLI form of parseConfig: prints each problem on its own line and exits with status 2. */
export function loadConfigOrExit<Schema extends z.ZodType>(
  serviceName: string,
  schema: Schema,
  env: Record<string, string | undefined> = process.env,
): z.infer<Schema> {
  try {
    return parseConfig(schema, env);
  } catch (error) {
    if (!(error instanceof ConfigError)) throw error;
    for (const problem of error.problems) {
      process.stderr.write(`${serviceName}: config error: ${problem}\n`);
    }
    process.exit(2);
  }
}

/** A whole number from the environment within [min, max], with a default when unset or empty. */
export function integerVar(fallback: number, min: number, max: number) {
  return numberVar(fallback, min, max, { integer: true });
}

/** `$PORT` as Cloud Run sets it; 0 asks the OS for a free port (tests and the local stack). */
export const portVar = integerVar(8080, 0, 65535);

/** The address to listen on; Cloud Run needs 0.0.0.0, tests use 127.0.0.1. */
export const hostVar = z
  .string()
  .optional()
  .transform((raw) => (raw === undefined || raw.trim() === "" ? "0.0.0.0" : raw.trim()));

export const logLevels = ["fatal", "error", "warn", "info", "debug", "trace", "silent"] as const;

export const logLevelVar = z
  .string()
  .optional()
  .transform((raw, ctx) => {
    const level = raw === undefined || raw.trim() === "" ? "info" : raw.trim().toLowerCase();
    if ((logLevels as readonly string[]).includes(level))
      return level as (typeof logLevels)[number];
    ctx.addIssue({
      code: "custom",
      message: `must be one of ${logLevels.join(", ")}, got ${JSON.stringify(raw)}`,
    });
    return z.NEVER;
  });

/** A number from the environment within [min, max], with a default when unset or empty. */
export function numberVar(fallback: number, min: number, max: number, { integer = false } = {}) {
  const what = integer ? "a whole number" : "a number";
  return z
    .string()
    .optional()
    .transform((raw, ctx) => {
      if (raw === undefined || raw.trim() === "") return fallback;
      const value = Number(raw.trim());
      const wellFormed = integer ? /^-?\d+$/.test(raw.trim()) : Number.isFinite(value);
      if (!wellFormed || value < min || value > max) {
        ctx.addIssue({
          code: "custom",
          message: `must be ${what} from ${min} to ${max}, got ${JSON.stringify(raw)}`,
        });
        return z.NEVER;
      }
      return value;
    });
}

export const logFormatVar = z
  .string()
  .optional()
  .transform((raw, ctx) => {
    const format = raw === undefined || raw.trim() === "" ? "json" : raw.trim().toLowerCase();
    if ((logFormats as readonly string[]).includes(format)) return format as LogFormat;
    ctx.addIssue({
      code: "custom",
      message: `must be one of ${logFormats.join(", ")}, got ${JSON.stringify(raw)}`,
    });
    return z.NEVER;
  });

/** true/false (also 1/0, yes/no, on/off), with a default when unset or empty. */
export function booleanVar(fallback: boolean) {
  return z
    .string()
    .optional()
    .transform((raw, ctx) => {
      const value = raw?.trim().toLowerCase() ?? "";
      if (value === "") return fallback;
      if (["true", "1", "yes", "on"].includes(value)) return true;
      if (["false", "0", "no", "off"].includes(value)) return false;
      ctx.addIssue({
        code: "custom",
        message: `must be true or false, got ${JSON.stringify(raw)}`,
      });
      return z.NEVER;
    });
}

/** An optional plain value: unset or blank is undefined. */
const optionalText = z
  .string()
  .optional()
  .transform((raw) => (raw === undefined || raw.trim() === "" ? undefined : raw.trim()));

/** A required peer URL: `http://host:port` (h2c, local) or `https://host` (TLS, Cloud Run). */
export function peerUrlVar(what: string) {
  return z
    .string()
    .optional()
    .transform((raw, ctx) => {
      if (raw === undefined || raw.trim() === "") {
        ctx.addIssue({
          code: "custom",
          message: `is required: the URL of ${what}, e.g. http://127.0.0.1:50052 or https://<service>.run.app`,
        });
        return z.NEVER;
      }
      try {
        return parsePeerUrl(raw.trim());
      } catch (error) {
        ctx.addIssue({ code: "custom", message: (error as Error).message });
        return z.NEVER;
      }
    });
}

/**
 * Optional instance addresses for a peer (`ip:port,ip:port`): calls are spread over them
 * while the peer's URL stays its identity and token audience (see withAddresses).
 */
export function peerAddressesVar() {
  return z
    .string()
    .optional()
    .transform((raw, ctx) => {
      const addresses = (raw ?? "")
        .split(",")
        .map((part) => part.trim())
        .filter(Boolean);
      const bad = addresses.filter((address) => {
        const match = /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3}):(\d{1,5})$/.exec(address);
        return (
          !match ||
          match.slice(1, 5).some((octet) => Number(octet) > 255) ||
          Number(match[5]) > 65535 ||
          Number(match[5]) === 0
        );
      });
      if (bad.length > 0) {
        ctx.addIssue({
          code: "custom",
          message: `must be IPv4 ip:port addresses separated by commas, got ${JSON.stringify(bad[0])}`,
        });
        return z.NEVER;
      }
      return addresses;
    });
}

/** What every service reads: where to listen, how to log, how long to drain. */
export const serverEnv = {
  PORT: portVar,
  HOST: hostVar,
  LOG_LEVEL: logLevelVar,
  /** json (Cloud Logging) or pretty (a terminal). */
  LOG_FORMAT: logFormatVar,
  /**
   * Share of traces whose successful calls get a log line (rpc-log.ts's keepOkLine): failures,
   * unary calls slower than LOG_RPC_SLOW_MS and traces sampled by their caller always do.
   */
  LOG_RPC_SAMPLE_RATE: numberVar(0.1, 0, 1),
  LOG_RPC_SLOW_MS: integerVar(500, 0, 3_600_000),
  /** The project whose Cloud Trace the trace ids belong to (set by Terraform). */
  GOOGLE_CLOUD_PROJECT: optionalText,
  /** Serve channelz (call counts per server, channel and socket) for grpcdebug and tests. */
  CHANNELZ_ENABLED: booleanVar(false),
  /** Set by Cloud Run: the service's name and revision, for the logs. */
  K_SERVICE: optionalText,
  K_REVISION: optionalText,
  // Cloud Run sends SIGTERM and kills the instance 10 s later. A stop takes the grace plus up
  // to 2.1 s more (0.1 s for the last statuses, at least 1 s of afterShutdown, up to 1 s to
  // write out the logs), so 6 s leaves 1.9 s spare (infra's shutdown_grace_ms default too).
  SHUTDOWN_GRACE_MS: integerVar(6000, 0, 600_000),
  /** Traces and RPC metrics (telemetry-config.ts): off unless an exporter is configured. */
  ...telemetryEnv,
};

export interface ServerEnv extends TelemetryEnv {
  PORT: number;
  HOST: string;
  LOG_LEVEL: (typeof logLevels)[number];
  LOG_FORMAT: LogFormat;
  LOG_RPC_SAMPLE_RATE: number;
  LOG_RPC_SLOW_MS: number;
  GOOGLE_CLOUD_PROJECT: string | undefined;
  CHANNELZ_ENABLED: boolean;
  K_SERVICE: string | undefined;
  K_REVISION: string | undefined;
  SHUTDOWN_GRACE_MS: number;
}
