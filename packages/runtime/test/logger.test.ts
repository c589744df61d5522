import assert from "node:assert/strict";
import { Writable } from "node:stream";
import { describe, test } from "node:test";
import { runInCall } from "../src/call-context.js";
import { createLogger, type LoggerSettings, prettyLineFormatter } from "../src/logger.js";

/** A logger writing into an array, one parsed object per line. */
function capture(settings: Partial<LoggerSettings> = {}) {
  const lines: string[] = [];
  const destination = new Writable({
    write(chunk, _encoding, done) {
      lines.push(...String(chunk).split("\n").filter(Boolean));
      done();
    },
  });
  const logger = createLogger({ service: "route", level: "debug", destination, ...settings });
  const entries = () => lines.map((line) => JSON.parse(line) as Record<string, unknown>);
  return { logger, lines, entries };
}

const trace = {
  traceId: "0af7651916cd43dd8448eb211c80319c",
  spanId: "b7ad6b7169203331",
  sampled: true,
};

describe("createLogger writes what Cloud Logging reads", () => {
  test("severity names, message, an RFC 3339 time and the service context", () => {
    const { logger, entries } = capture({ revision: "route-00042-abc" });
    logger.debug("d");
    logger.info({ port: 1 }, "i");
    logger.warn("w");
    logger.error("e");
    logger.fatal("f");
    const all = entries();
    assert.deepEqual(
      all.map((entry) => [entry.severity, entry.message]),
      [
        ["DEBUG", "d"],
        ["INFO", "i"],
        ["WARNING", "w"],
        ["ERROR", "e"],
        ["CRITICAL", "f"],
      ],
    );
    for (const entry of all) {
      assert.equal(entry.level, undefined, "no numeric pino level");
      assert.equal(entry.msg, undefined);
      assert.ok(!Number.isNaN(Date.parse(entry.time as string)), `time: ${entry.time}`);
      assert.deepEqual(entry.serviceContext, { service: "route", version: "route-00042-abc" });
    }
    assert.equal(all[1]?.port, 1);
  });

  test("lines written during a call carry its trace; a project id makes the full trace name", () => {
    const { logger, entries } = capture({ projectId: "my-project" });
    logger.info("outside");
    runInCall({ method: "/x.Y/Z", trace, endListeners: [] }, () => logger.info("inside"));
    const [outside, inside] = entries();
    assert.equal(outside?.["logging.googleapis.com/trace"], undefined);
    assert.equal(
      inside?.["logging.googleapis.com/trace"],
      "projects/my-project/traces/0af7651916cd43dd8448eb211c80319c",
    );
    assert.equal(inside?.["logging.googleapis.com/spanId"], "b7ad6b7169203331");
    assert.equal(inside?.["logging.googleapis.com/trace_sampled"], true);
    assert.equal(inside?.trace_id, undefined, "the OpenTelemetry names are replaced");
  });

  test("a line can name its own trace, which wins over the current call's", () => {
    const { logger, entries } = capture();
    runInCall({ method: "/x.Y/Z", trace, endListeners: [] }, () =>
      logger.info(
        {
          trace_id: "11111111111111111111111111111111",
          span_id: "2222222222222222",
          trace_flags: "00",
        },
        "other",
      ),
    );
    const [entry] = entries();
    assert.equal(entry?.["logging.googleapis.com/trace"], "11111111111111111111111111111111");
    assert.equal(entry?.["logging.googleapis.com/spanId"], "2222222222222222");
    assert.equal(entry?.["logging.googleapis.com/trace_sampled"], undefined);
  });

  test("an error's stack goes to stack_trace, where Error Reporting finds it", () => {
    const { logger, entries } = capture();
    logger.error({ err: new Error("boom") }, "handler failed");
    const [entry] = entries();
    assert.match(String(entry?.stack_trace), /^Error: boom\n\s+at /);
    assert.equal((entry?.err as { message?: string } | undefined)?.message, "boom");
  });

  test("tokens and authorization values are redacted wherever they sit", () => {
    const { logger, lines } = capture();
    const secret = "eyJhbGciOiJSUzI1NiJ9.secret-payload.signature";
    logger.info({ authorization: `Bearer ${secret}` }, "top");
    logger.info({ metadata: { authorization: `Bearer ${secret}` } }, "nested");
    logger.info({ "x-serverless-authorization": `Bearer ${secret}` }, "serverless");
    logger.info({ token: secret, call: { idToken: secret } }, "token fields");
    logger.info({ request: { headers: { Authorization: `Bearer ${secret}` } } }, "headers");
    const gaxiosLike = Object.assign(new Error("request failed"), {
      config: { headers: { Authorization: `Bearer ${secret}` } },
    });
    logger.error({ err: gaxiosLike }, "http error");
    assert.equal(lines.length, 6);
    for (const line of lines) assert.ok(!line.includes(secret), `leaked: ${line}`);
  });

  test("LOG_FORMAT=pretty writes the same entries for a terminal", () => {
    const { logger, lines } = capture({ format: "pretty" });
    runInCall({ method: "/x.Y/Z", trace, endListeners: [] }, () =>
      logger.warn({ port: 7 }, "hello"),
    );
    assert.equal(lines.length, 1);
    assert.match(lines[0] as string, /WARNING.*hello/);
    assert.match(lines[0] as string, /0af7651916cd43dd8448eb211c80319c/);
    assert.throws(() => JSON.parse(lines[0] as string));
  });

  test("the local stack's formatter turns a JSON line into the same pretty line", () => {
    const format = prettyLineFormatter();
    const line = JSON.stringify({
      severity: "ERROR",
      time: new Date().toISOString(),
      message: "m",
    });
    assert.match(format(line), /ERROR.*m$/);
    assert.equal(format("not json"), "not json");
  });
});
