/**
 * Clients that get the TLS port wrong, each refused cleanly while everyone else carries on: plain HTTP
 * (and plain garbage) sent to the TLS port, a broken handshake, HTTP/1.1 garbage after a good handshake
 * (with ALPN h2 and with http/1.1), and HTTP/2 clients that open more streams than the port allows.
 * After each, bystanders — an HTTP/2 SSE stream and a wss WebSocket opened before the misbehaviour —
 * still receive what is published.
 */
import assert from "node:assert/strict";
import { get as httpGet } from "node:http";
import { constants } from "node:http2";
import { connect as netConnect } from "node:net";
import { connect as tlsConnect, type TLSSocket } from "node:tls";
import { after, before, test } from "node:test";
import { WebSocket } from "ws";
import { serve, type RunningServer } from "../src/index.js";
import { connectH2, FRAME, frame, getRequestFrame, H2_PREFACE, parseFrames, type H2Client, type H2Sse, type ParsedFrame } from "./helpers/h2.js";
import { sleep } from "./helpers/server.js";

const LIMIT = 4;
const TIMEOUT = { timeout: 15_000 };

let running: RunningServer;
let port: number;
let bystander: H2Client;
let bystanderSse: H2Sse;
let bystanderWs: WebSocket;
const wsFrames: Array<Record<string, unknown>> = [];
let rounds = 0;

before(async () => {
  running = await serve({ port: 0, host: "127.0.0.1", tls: "self-signed", maxConcurrentStreams: LIMIT });
  port = Number(new URL(running.url).port);
  bystander = await connectH2(running.url, { ca: running.tls!.cert });
  bystanderSse = bystander.sse("/api/stream?channel=bystander");
  await bystanderSse.waitForText("event: ready");
  bystanderWs = new WebSocket(`${running.url.replace(/^https/, "wss")}/api/ws`, { rejectUnauthorized: false });
  bystanderWs.on("message", (data) => wsFrames.push(JSON.parse(String(data)) as Record<string, unknown>));
  await new Promise<void>((resolve, reject) => {
    bystanderWs.once("open", () => resolve());
    bystanderWs.once("error", reject);
  });
  bystanderWs.send(JSON.stringify({ type: "join", room: "bystander" }));
  await until(() => wsFrames.some((f) => f.type === "joined"), 3000, "bystander joined");
});

after(async () => {
  bystanderWs.terminate();
  bystanderSse.cancel();
  await bystander.close();
  await running.close();
});

async function until(check: () => boolean, timeoutMs: number, what: string): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out: ${what}`);
    await sleep(10);
  }
}

/** Publishes one message; the bystanders opened before the test must both receive it. */
async function assertBystandersReceive(): Promise<void> {
  rounds++;
  const m = await running.hub.publish("bystander", { round: rounds });
  const events = await bystanderSse.waitFor(rounds, 3000);
  assert.equal(events.at(-1)!.id, m.id, "the HTTP/2 bystander received");
  await until(() => wsFrames.some((f) => f.type === "message" && f.id === m.id), 3000, "the wss bystander received");
  // And a brand-new HTTP/2 connection is served.
  const fresh = await connectH2(running.url);
  assert.equal((await fresh.request("/healthz")).status, 200);
  await fresh.close();
}

interface RawConnection {
  readonly received: () => Buffer;
  /** Resolves true when the server closed the connection within `ms`, false otherwise. */
  closedWithin(ms: number): Promise<boolean>;
  write(data: Buffer | string): void;
  destroy(): void;
}

function track(socket: TLSSocket | import("node:net").Socket): RawConnection {
  let received = Buffer.alloc(0);
  socket.on("data", (chunk: Buffer) => (received = Buffer.concat([received, chunk])));
  socket.on("error", () => {});
  const closed = new Promise<void>((resolve) => socket.once("close", () => resolve()));
  return {
    received: () => received,
    closedWithin: (ms) =>
      new Promise<boolean>((resolve) => {
        const timer = setTimeout(() => resolve(false), ms);
        void closed.then(() => {
          clearTimeout(timer);
          resolve(true);
        });
      }),
    write: (data) => socket.write(data),
    destroy: () => socket.destroy(),
  };
}

async function tlsRaw(alpn: string[]): Promise<RawConnection & { alpn: string | false }> {
  const socket = tlsConnect({ host: "127.0.0.1", port, rejectUnauthorized: false, ALPNProtocols: alpn });
  const connection = track(socket);
  await new Promise<void>((resolve, reject) => {
    socket.once("secureConnect", () => resolve());
    socket.once("error", reject);
  });
  return { ...connection, alpn: socket.alpnProtocol ?? false };
}

test("plain http:// sent to the TLS port gets a 400 that says so; plain garbage is cut off", TIMEOUT, async () => {
  const answer = await new Promise<{ status: number; body: string }>((resolve, reject) => {
    httpGet(`http://127.0.0.1:${port}/api/messages`, (res) => {
      let body = "";
      res.on("data", (d: Buffer) => (body += d.toString()));
      res.on("end", () => resolve({ status: res.statusCode!, body }));
    }).on("error", reject);
  });
  assert.equal(answer.status, 400);
  assert.match(answer.body, /this port speaks TLS: use https:\/\//);
  const garbage = track(netConnect(port, "127.0.0.1"));
  garbage.write(Buffer.from([0x00, 0xff, 0x13, 0x37, 0x0a, 0x0d]));
  assert.equal(await garbage.closedWithin(2000), true, "garbage connection closed");
  assert.equal(garbage.received().length, 0, "nothing answered to garbage");
  await assertBystandersReceive();
});

test("a broken TLS handshake (a ClientHello that is not one) ends that connection only", TIMEOUT, async () => {
  const broken = track(netConnect(port, "127.0.0.1"));
  // A handshake record header announcing 5 bytes, then bytes that are no ClientHello.
  broken.write(Buffer.from([0x16, 0x03, 0x01, 0x00, 0x05, 0xde, 0xad, 0xbe, 0xef, 0x00]));
  assert.equal(await broken.closedWithin(2000), true, "broken handshake closed");
  // A client that does not trust the certificate gives up on its side; the server just loses it.
  const distrustful = tlsConnect({ host: "127.0.0.1", port, ALPNProtocols: ["h2"] });
  const error = await new Promise<Error>((resolve) => distrustful.once("error", resolve));
  assert.match((error as NodeJS.ErrnoException).code ?? "", /SELF_SIGNED|UNABLE_TO_VERIFY|CERT/);
  await assertBystandersReceive();
});

test("HTTP/1.1 garbage after a good handshake: GOAWAY and close with ALPN h2; 400 and close with ALPN http/1.1", TIMEOUT, async () => {
  const h2 = await tlsRaw(["h2"]);
  assert.equal(h2.alpn, "h2");
  h2.write("GET / HTTP/1.1\r\nHost: x\r\n\r\n");
  assert.equal(await h2.closedWithin(2000), true, "h2 connection with a bad preface closed");
  const frames = parseFrames(h2.received()).frames;
  assert.ok(frames.some((f) => f.type === FRAME.GOAWAY && f.errorCode !== constants.NGHTTP2_NO_ERROR), `a GOAWAY with an error: ${JSON.stringify(frames)}`);

  const h1 = await tlsRaw(["http/1.1"]);
  assert.equal(h1.alpn, "http/1.1");
  h1.write("\x01\x02 this is not a request line\r\n\r\n");
  assert.equal(await h1.closedWithin(2000), true, "HTTP/1.1 connection with garbage closed");
  assert.match(h1.received().toString("latin1"), /^HTTP\/1\.1 400 Bad Request\r\n/);
  await assertBystandersReceive();
});

test(`streams past maxConcurrentStreams (${LIMIT}): REFUSED_STREAM for the extra ones, the others are served`, TIMEOUT, async () => {
  // A client that sends its requests before it has read the server's SETTINGS: the extra streams are refused
  // one by one (RST_STREAM REFUSED_STREAM, safe to retry), the connection and its first streams go on.
  const eager = await tlsRaw(["h2"]);
  const ids = [1, 3, 5, 7, 9, 11];
  eager.write(Buffer.concat([H2_PREFACE, frame(FRAME.SETTINGS, 0, 0), ...ids.map((id) => getRequestFrame(id, "/api/stream?channel=eager", `127.0.0.1:${port}`))]));
  const seen = (): ParsedFrame[] => parseFrames(eager.received()).frames;
  await until(() => seen().filter((f) => f.type === FRAME.RST_STREAM).length >= 2 && seen().filter((f) => f.type === FRAME.HEADERS).length >= LIMIT, 3000, "answers and refusals");
  const refused = seen().filter((f) => f.type === FRAME.RST_STREAM).map((f) => [f.streamId, f.errorCode]);
  assert.deepEqual(refused, [[9, constants.NGHTTP2_REFUSED_STREAM], [11, constants.NGHTTP2_REFUSED_STREAM]]);
  assert.deepEqual(seen().filter((f) => f.type === FRAME.HEADERS).map((f) => f.streamId), [1, 3, 5, 7], "the first four got their response headers");
  assert.equal(await eager.closedWithin(200), false, "the connection stays open");
  await until(() => running.hub.stats().byKind.sse >= 1 + LIMIT, 2000, "four eager streams open in the hub");

  // A client that ignores the limit after acknowledging it breaks the protocol: its connection is closed.
  const rude = await tlsRaw(["h2"]);
  rude.write(Buffer.concat([H2_PREFACE, frame(FRAME.SETTINGS, 0, 0)]));
  await until(() => parseFrames(rude.received()).frames.some((f) => f.type === FRAME.SETTINGS && f.flags === 0), 2000, "server SETTINGS");
  rude.write(frame(FRAME.SETTINGS, 0x1, 0)); // ACK: the limit now applies
  await sleep(50);
  rude.write(Buffer.concat(ids.map((id) => getRequestFrame(id, "/api/stream?channel=rude", `127.0.0.1:${port}`))));
  assert.equal(await rude.closedWithin(3000), true, "a client past an acknowledged limit is disconnected");

  // A well-behaved client sees the limit in SETTINGS and queues its extra streams itself.
  const polite = await connectH2(running.url);
  await until(() => polite.session.remoteSettings.maxConcurrentStreams === LIMIT, 2000, "limit announced");
  polite.session.setMaxListeners(20);
  const streams = Array.from({ length: LIMIT + 1 }, (_, i) => polite.sse(`/api/stream?channel=polite${i}`));
  for (const s of streams.slice(0, LIMIT)) await s.waitForText("event: ready");
  await sleep(100);
  assert.equal(streams[LIMIT]!.raw(), "", "the fifth stream waits for a free slot");
  streams[0]!.cancel();
  await streams[LIMIT]!.waitForText("event: ready");
  for (const s of streams) s.cancel();
  await polite.close();

  eager.destroy();
  await until(() => running.hub.stats().byKind.sse === 1, 3000, "only the bystander's stream is left");
  await assertBystandersReceive();
});
