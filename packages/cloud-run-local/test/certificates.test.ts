// The edge's certificates must verify in every run: one CA and one server certificate a run,
// made fresh each time, so a rare bad encoding fails a whole run's TLS clients at random.
import assert from "node:assert/strict";
import { X509Certificate } from "node:crypto";
import { test } from "node:test";
import { makeEdgeCertificates } from "../src/index.js";

test("each run's CA and server certificate parse, chain, and carry minimal positive serials", () => {
  for (let run = 0; run < 10; run += 1) {
    const certificates = makeEdgeCertificates();
    try {
      // OpenSSL refuses a DER INTEGER with a needless leading zero ("illegal padding").
      const ca = new X509Certificate(certificates.caPem);
      const server = new X509Certificate(certificates.certPem);
      assert.ok(server.checkIssued(ca), "the server certificate names the CA as its issuer");
      assert.ok(server.verify(ca.publicKey), "and is signed by its key");
      assert.ok(ca.ca && !server.ca);
      assert.equal(server.checkHost("localhost"), "localhost");
      assert.equal(server.checkIP("127.0.0.1"), "127.0.0.1");
      for (const serial of [ca.serialNumber, server.serialNumber]) {
        // 16 bytes, the first 0x01–0x7f: positive, with no padding byte.
        assert.match(serial, /^[0-7][0-9A-F]{31}$/i, `serial ${serial}`);
      }
    } finally {
      certificates.dispose();
    }
  }
});
