import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { z } from "zod";
import {
  ConfigError,
  envSchema,
  integerVar,
  parseConfig,
  peerUrlVar,
  serverEnv,
} from "../src/config.js";

const schema = z.object({ ...serverEnv, PEER_URL: peerUrlVar("the peer") });
const peer = { PEER_URL: "http://127.0.0.1:50052" };

/** The ConfigError that parsing `env` throws. */
function problemsOf(env: Record<string, string | undefined>): string[] {
  try {
    parseConfig(schema, env);
  } catch (error) {
    assert.ok(error instanceof ConfigError, `expected a ConfigError, got ${String(error)}`);
    return error.problems;
  }
  assert.fail(`expected ${JSON.stringify(env)} to be rejected`);
}

describe("parseConfig with serverEnv and peerUrlVar", () => {
  test("missing variables take their defaults", () => {
    const config = parseConfig(schema, peer);
    assert.deepEqual(config, {
      PORT: 8080,
      HOST: "0.0.0.0",
      LOG_LEVEL: "info",
      LOG_FORMAT: "json",
      LOG_RPC_SAMPLE_RATE: 0.1,
      LOG_RPC_SLOW_MS: 500,
      CHANNELZ_ENABLED: false,
      SHUTDOWN_GRACE_MS: 6000,
      // Telemetry: nothing exported until an endpoint or TELEMETRY_EXPORT says where.
      OTEL_SDK_DISABLED: false,
      OTEL_EXPORTER_OTLP_PROTOCOL: "http/protobuf",
      OTEL_TRACES_SAMPLER: "parentbased_traceidratio",
      OTEL_TRACES_SAMPLER_ARG: 0.01,
      OTEL_BSP_SCHEDULE_DELAY: 5000,
      OTEL_METRICS_EXPORTER: "otlp",
      OTEL_METRIC_EXPORT_INTERVAL: 60000,
      PEER_URL: { url: "http://127.0.0.1:50052", target: "127.0.0.1:50052", secure: false },
    });
  });

  test("telemetry variables are checked, one line each, naming the allowed values", () => {
    assert.deepEqual(
      problemsOf({
        ...peer,
        TELEMETRY_EXPORT: "stackdriver",
        OTEL_EXPORTER_OTLP_ENDPOINT: "localhost:4318",
        OTEL_EXPORTER_OTLP_PROTOCOL: "grpc",
        OTEL_TRACES_SAMPLER: "jaeger_remote",
        OTEL_TRACES_SAMPLER_ARG: "2",
      }).map((line) => line.split(":")[0]),
      [
        "TELEMETRY_EXPORT",
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        "OTEL_EXPORTER_OTLP_PROTOCOL",
        "OTEL_TRACES_SAMPLER",
        "OTEL_TRACES_SAMPLER_ARG",
      ],
    );
    const [protocol] = problemsOf({ ...peer, OTEL_EXPORTER_OTLP_PROTOCOL: "grpc" });
    assert.match(String(protocol), /http\/protobuf, http\/json/);
    const config = parseConfig(schema, {
      ...peer,
      TELEMETRY_EXPORT: "Google-Cloud",
      OTEL_EXPORTER_OTLP_ENDPOINT: "http://127.0.0.1:4318/",
      OTEL_TRACES_SAMPLER_ARG: "0.25",
    });
    assert.equal(config.TELEMETRY_EXPORT, "google-cloud");
    assert.equal(config.OTEL_EXPORTER_OTLP_ENDPOINT, "http://127.0.0.1:4318");
    assert.equal(config.OTEL_TRACES_SAMPLER_ARG, 0.25);
  });

  test("LOG_FORMAT and LOG_RPC_SAMPLE_RATE are checked, with the allowed values named", () => {
    assert.throws(
      () => parseConfig(schema, { ...peer, LOG_FORMAT: "xml", LOG_RPC_SAMPLE_RATE: "1.5" }),
      (error: ConfigError) => {
        assert.deepEqual(error.problems, [
          'LOG_FORMAT: must be one of json, pretty, got "xml"',
          'LOG_RPC_SAMPLE_RATE: must be a number from 0 to 1, got "1.5"',
        ]);
        return true;
      },
    );
    const config = parseConfig(schema, {
      ...peer,
      LOG_FORMAT: "Pretty",
      LOG_RPC_SAMPLE_RATE: "0.25",
    });
    assert.equal(config.LOG_FORMAT, "pretty");
    assert.equal(config.LOG_RPC_SAMPLE_RATE, 0.25);
  });

  test("empty and blank values take the defaults too", () => {
    const config = parseConfig(schema, {
      ...peer,
      PORT: "",
      HOST: "  ",
      LOG_LEVEL: "",
      SHUTDOWN_GRACE_MS: " ",
    });
    assert.equal(config.PORT, 8080);
    assert.equal(config.HOST, "0.0.0.0");
    assert.equal(config.LOG_LEVEL, "info");
    assert.equal(config.SHUTDOWN_GRACE_MS, 6000);
  });

  test("set values are parsed and trimmed", () => {
    const config = parseConfig(schema, {
      ...peer,
      PORT: " 0 ",
      HOST: "127.0.0.1",
      LOG_LEVEL: "WARN",
      SHUTDOWN_GRACE_MS: "600000",
    });
    assert.equal(config.PORT, 0);
    assert.equal(config.HOST, "127.0.0.1");
    assert.equal(config.LOG_LEVEL, "warn");
    assert.equal(config.SHUTDOWN_GRACE_MS, 600_000);
  });

  test("PORT accepts the whole range 0 to 65535", () => {
    assert.equal(parseConfig(schema, { ...peer, PORT: "65535" }).PORT, 65535);
    assert.equal(parseConfig(schema, { ...peer, PORT: "1" }).PORT, 1);
  });

  for (const port of ["abc", "70000", "65536", "-1", "80.5", "1e3", "8080x"]) {
    test(`PORT=${JSON.stringify(port)} is rejected with one line naming PORT`, () => {
      const problems = problemsOf({ ...peer, PORT: port });
      assert.equal(problems.length, 1);
      assert.match(problems[0] ?? "", /^PORT: /);
      assert.ok(problems[0]?.includes(JSON.stringify(port)), problems[0]);
    });
  }

  test("an unknown LOG_LEVEL is rejected", () => {
    const problems = problemsOf({ ...peer, LOG_LEVEL: "verbose" });
    assert.equal(problems.length, 1);
    assert.match(problems[0] ?? "", /^LOG_LEVEL: .*"verbose"/);
  });

  test("a missing or empty peer URL is reported as required", () => {
    for (const value of [undefined, "", "   "]) {
      const problems = problemsOf({ PEER_URL: value });
      assert.equal(problems.length, 1);
      assert.match(problems[0] ?? "", /^PEER_URL: is required: the URL of the peer/);
    }
  });

  test("a peer URL with another scheme is rejected", () => {
    const problems = problemsOf({ PEER_URL: "ftp://x" });
    assert.equal(problems.length, 1);
    assert.match(problems[0] ?? "", /^PEER_URL: .*http:.*https:/);
  });

  test("a peer URL with a path is rejected", () => {
    const problems = problemsOf({ PEER_URL: "https://stats.example.com/v1" });
    assert.equal(problems.length, 1);
    assert.match(problems[0] ?? "", /^PEER_URL: must be an origin without path/);
  });

  test("a peer URL that is not a URL is rejected", () => {
    const problems = problemsOf({ PEER_URL: "stats:50052:x" });
    assert.equal(problems.length, 1);
    assert.match(problems[0] ?? "", /^PEER_URL: /);
  });

  test("several bad variables give one line per variable, each starting with its name", () => {
    const problems = problemsOf({
      PORT: "70000",
      LOG_LEVEL: "loud",
      SHUTDOWN_GRACE_MS: "-1",
      PEER_URL: "ftp://x",
    });
    assert.equal(problems.length, 4);
    const names = problems.map((line) => line.slice(0, line.indexOf(":")));
    assert.deepEqual(names.sort(), ["LOG_LEVEL", "PEER_URL", "PORT", "SHUTDOWN_GRACE_MS"]);
  });

  test("the ConfigError message lists every problem on its own line", () => {
    try {
      parseConfig(schema, { PORT: "abc" });
      assert.fail("expected a ConfigError");
    } catch (error) {
      assert.ok(error instanceof ConfigError);
      assert.equal(error.name, "ConfigError");
      assert.equal(error.problems.length, 2);
      const lines = error.message.split("\n");
      assert.equal(lines[0], "invalid configuration:");
      assert.deepEqual(
        lines.slice(1),
        error.problems.map((problem) => `  ${problem}`),
      );
    }
  });
});

describe("integerVar", () => {
  const count = z.object({ COUNT: integerVar(5, 1, 10) });

  test("takes the fallback when unset and accepts both bounds", () => {
    assert.equal(parseConfig(count, {}).COUNT, 5);
    assert.equal(parseConfig(count, { COUNT: "1" }).COUNT, 1);
    assert.equal(parseConfig(count, { COUNT: "10" }).COUNT, 10);
  });

  test("rejects one beyond each bound", () => {
    for (const value of ["0", "11"]) {
      assert.throws(
        () => parseConfig(count, { COUNT: value }),
        (error: unknown) =>
          error instanceof ConfigError &&
          error.problems.length === 1 &&
          error.problems[0] === `COUNT: must be a whole number from 1 to 10, got "${value}"`,
      );
    }
  });
});

describe("envSchema: rules across variables", () => {
  // LOW must not exceed HIGH; MODE=strict needs NAME.
  const ranged = envSchema(
    {
      LOW: integerVar(0, 0, 100),
      HIGH: integerVar(100, 0, 100),
      MODE: z.enum(["strict", "lax"]).optional(),
      NAME: z.string().optional(),
      PORT: serverEnv.PORT,
    },
    [
      {
        needs: ["LOW", "HIGH"],
        check(config, ctx) {
          if (config.LOW > config.HIGH)
            ctx.addIssue({ code: "custom", path: ["LOW"], message: "must not exceed HIGH" });
        },
      },
      {
        needs: ["MODE", "NAME"],
        check(config, ctx) {
          if (config.MODE === "strict" && !config.NAME)
            ctx.addIssue({ code: "custom", path: ["NAME"], message: "is required" });
        },
      },
    ],
  );
  const problems = (env: Record<string, string>) => {
    try {
      parseConfig(ranged, env);
    } catch (error) {
      assert.ok(error instanceof ConfigError, String(error));
      return error.problems;
    }
    assert.fail(`expected ${JSON.stringify(env)} to be rejected`);
  };

  test("a rule runs although another variable failed (zod 4 alone would skip it)", () => {
    assert.deepEqual(problems({ PORT: "x", LOW: "50", HIGH: "10", MODE: "strict" }), [
      'PORT: must be a whole number from 0 to 65535, got "x"',
      "LOW: must not exceed HIGH",
      "NAME: is required",
    ]);
  });

  test("a rule whose own variable failed is skipped: that variable's line says why", () => {
    assert.deepEqual(problems({ LOW: "50", HIGH: "high", MODE: "strict" }), [
      'HIGH: must be a whole number from 0 to 100, got "high"',
      "NAME: is required",
    ]);
    const mode = problems({ MODE: "stern" });
    assert.equal(mode.length, 1, mode.join("\n"));
    assert.match(mode[0] ?? "", /^MODE: /);
  });

  test("two problems of one variable share its line", () => {
    const twice = envSchema({ A: z.string().optional() }, [
      {
        needs: ["A"],
        check: (_, ctx) => ctx.addIssue({ code: "custom", path: ["A"], message: "one" }),
      },
      {
        needs: ["A"],
        check: (_, ctx) => ctx.addIssue({ code: "custom", path: ["A"], message: "two" }),
      },
    ]);
    assert.throws(
      () => parseConfig(twice, {}),
      (error: ConfigError) => {
        assert.deepEqual(error.problems, ["A: one; two"]);
        return true;
      },
    );
  });

  test("a good environment passes every rule", () => {
    assert.deepEqual(parseConfig(ranged, { LOW: "1", HIGH: "2", MODE: "strict", NAME: "n" }), {
      LOW: 1,
      HIGH: 2,
      MODE: "strict",
      NAME: "n",
      PORT: 8080,
    });
  });
});
