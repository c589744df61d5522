import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { parsePeerUrl } from "../src/peer.js";

describe("parsePeerUrl", () => {
  test("http with a port is an insecure host:port target", () => {
    assert.deepEqual(parsePeerUrl("http://127.0.0.1:50052"), {
      url: "http://127.0.0.1:50052",
      target: "127.0.0.1:50052",
      secure: false,
    });
  });

  test("http without a port uses :80", () => {
    assert.deepEqual(parsePeerUrl("http://stats"), {
      url: "http://stats",
      target: "stats:80",
      secure: false,
    });
  });

  test("https without a port is a secure :443 target; url is the origin without trailing slash", () => {
    assert.deepEqual(parsePeerUrl("https://stats-xyz.a.run.app/"), {
      url: "https://stats-xyz.a.run.app",
      target: "stats-xyz.a.run.app:443",
      secure: true,
    });
  });

  test("https with an explicit port keeps it", () => {
    assert.deepEqual(parsePeerUrl("https://stats.example.com:8443"), {
      url: "https://stats.example.com:8443",
      target: "stats.example.com:8443",
      secure: true,
    });
  });

  test("an IPv6 literal keeps its brackets in the target", () => {
    assert.equal(parsePeerUrl("http://[::1]:50052").target, "[::1]:50052");
  });

  test("rejects credentials", () => {
    assert.throws(() => parsePeerUrl("https://user:secret@stats.example.com"), /credentials/);
    assert.throws(() => parsePeerUrl("https://user@stats.example.com"), /credentials/);
  });

  test("rejects a query", () => {
    assert.throws(() => parsePeerUrl("https://stats.example.com?region=eu"), /without path, query/);
  });

  test("rejects a path", () => {
    assert.throws(() => parsePeerUrl("https://stats.example.com/api"), /without path, query/);
  });

  test("rejects a fragment", () => {
    assert.throws(() => parsePeerUrl("https://stats.example.com#top"), /without path, query/);
  });

  test("rejects other schemes and non-URLs", () => {
    assert.throws(() => parsePeerUrl("ftp://x"), /must use http: \(h2c\) or https: \(TLS\)/);
    assert.throws(() => parsePeerUrl("127.0.0.1:50052"), /must/);
    assert.throws(() => parsePeerUrl("not a url"), /must be a URL/);
  });
});
