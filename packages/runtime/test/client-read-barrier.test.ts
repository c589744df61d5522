// The client-read barrier on real HTTP/2 connections: calls waiting at once share PINGs, a
// closed session answers false at once, and a peer that never acknowledges is given up on.
import assert from "node:assert/strict";
import http2 from "node:http2";
import { connect } from "node:net";
import { after, test } from "node:test";
import { clientReadBarrier } from "../src/client-read-barrier.js";

const servers: http2.Http2Server[] = [];
after(() => {
  for (const server of servers) server.close();
});

/** An h2c server on loopback; resolves with its port and each new session. */
async function server(): Promise<{ port: number; sessions: http2.ServerHttp2Session[] }> {
  const sessions: http2.ServerHttp2Session[] = [];
  const h2 = http2.createServer();
  servers.push(h2);
  h2.on("session", (session) => sessions.push(session));
  const port = await new Promise<number>((resolve) =>
    h2.listen(0, "127.0.0.1", () => resolve((h2.address() as { port: number }).port)),
  );
  return { port, sessions };
}

async function until(condition: () => boolean): Promise<void> {
  const giveUpAt = Date.now() + 5_000;
  while (!condition()) {
    assert.ok(Date.now() < giveUpAt, "timed out");
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
}

test("calls waiting at once share the PING in flight and the next one", async () => {
  const { port, sessions } = await server();
  const client = http2.connect(`http://127.0.0.1:${port}`);
  let pingsReceived = 0;
  client.on("ping", () => {
    pingsReceived += 1;
  });
  try {
    await until(() => sessions.length === 1);
    const session = sessions[0] as http2.ServerHttp2Session;
    const passed = await Promise.all(Array.from({ length: 20 }, () => clientReadBarrier(session)));
    assert.deepEqual(new Set(passed), new Set([true]));
    // The first waiter's PING, then one more for all who came while it was in flight.
    assert.ok(pingsReceived <= 2, `${pingsReceived} PINGs for 20 waiters`);
    assert.equal(await clientReadBarrier(session), true, "and later ones get theirs");
  } finally {
    client.close();
  }
});

test("a closed session answers false at once", async () => {
  const { port, sessions } = await server();
  const client = http2.connect(`http://127.0.0.1:${port}`);
  await until(() => sessions.length === 1);
  const session = sessions[0] as http2.ServerHttp2Session;
  session.destroy();
  assert.equal(await clientReadBarrier(session), false);
  client.close();
});

test("a peer that never acknowledges the PING is given up on after the timeout", async () => {
  const { port, sessions } = await server();
  // A client that speaks just enough HTTP/2 to be connected, and ignores every frame after.
  const socket = connect({ host: "127.0.0.1", port });
  await new Promise((resolve) => socket.once("connect", resolve));
  const settings = Buffer.from([0, 0, 0, 0x4, 0, 0, 0, 0, 0]);
  const settingsAck = Buffer.from([0, 0, 0, 0x4, 0x1, 0, 0, 0, 0]);
  socket.write(
    Buffer.concat([Buffer.from("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"), settings, settingsAck]),
  );
  socket.on("data", () => {});
  socket.on("error", () => {});
  try {
    await until(() => sessions.length === 1);
    const startedAt = Date.now();
    assert.equal(await clientReadBarrier(sessions[0] as http2.ServerHttp2Session, 200), false);
    assert.ok(Date.now() - startedAt >= 150, "it waited for the ACK first");
  } finally {
    socket.destroy();
  }
});
