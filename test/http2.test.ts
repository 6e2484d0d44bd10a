/**
 * The hub core over HTTP/2 with a node:http2 client: TLS with ALPN (h2, HTTP/1.1 as the fallback on the
 * same port), and prior-knowledge h2c. Publish, poll, long-poll (held, answered, released on RST_STREAM),
 * SSE receive/drop/resume with Last-Event-ID and the gap event, heartbeats, bounded buffers under HTTP/2
 * flow control, no HTTP/1.1 connection headers, wss on the TLS port, and GOAWAY on a graceful drain —
 * from serve().close() and from SIGTERM to a real `ladder serve --tls-self-signed`.
 */
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { X509Certificate } from "node:crypto";
import { get as httpsGet } from "node:https";
import { constants, type IncomingHttpHeaders } from "node:http2";
import { connect as tlsConnect } from "node:tls";
import { after, before, describe, test } from "node:test";
import { generate } from "selfsigned";
import { WebSocket } from "ws";
import { CURSOR_HEADER, GAP_HEADER, type Gap, type Message } from "../src/protocol/index.js";
import { serve, type RunningServer } from "../src/index.js";
import { connectH2, type H2Client } from "./helpers/h2.js";
import { sleep } from "./helpers/server.js";

const CONNECTION_HEADERS = ["connection", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade"];

function assertNoConnectionHeaders(headers: IncomingHttpHeaders): void {
  for (const name of CONNECTION_HEADERS) assert.equal(headers[name], undefined, `HTTP/2 response carries ${name}`);
}

async function until(check: () => boolean, timeoutMs: number, what: string): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out: ${what}`);
    await sleep(10);
  }
}

let seq = 0;
const channel = (): string => `h2c${++seq}`;

describe("HTTP/2 over TLS (ALPN h2)", { timeout: 30_000 }, () => {
  let running: RunningServer;
  let client: H2Client;
  before(async () => {
    running = await serve({ port: 0, host: "127.0.0.1", tls: "self-signed", historySize: 5, heartbeatMs: 200 });
    client = await connectH2(running.url, { ca: running.tls!.cert });
  });
  after(async () => {
    await client.close();
    await running.close();
  });

  test("negotiates h2 by ALPN with the served development certificate; HTTP/1.1 stays the fallback on the port", async () => {
    assert.match(running.url, /^https:\/\/127\.0\.0\.1:\d+$/);
    assert.deepEqual(running.protocols, ["h2", "http/1.1"]);
    assert.equal(client.session.alpnProtocol, "h2");
    assert.equal(running.tls!.selfSigned, true);
    assert.equal(new X509Certificate(running.tls!.cert).fingerprint256, running.tls!.fingerprint256);
    const h1 = await new Promise<{ status: number; version: string }>((resolve, reject) => {
      httpsGet(`${running.url}/healthz`, { ca: running.tls!.cert }, (res) => {
        res.resume();
        res.on("end", () => resolve({ status: res.statusCode!, version: res.httpVersion }));
      }).on("error", reject);
    });
    assert.deepEqual(h1, { status: 200, version: "1.1" });
  });

  test("publish and poll: the same answers as over HTTP/1.1, without HTTP/1.1 connection headers", async () => {
    const ch = channel();
    const a = await client.publish({ n: 1 }, ch);
    const b = await client.publish({ n: 2 }, ch);
    const all = await client.request(`/api/messages?channel=${ch}&since=0`);
    assert.equal(all.status, 200);
    assertNoConnectionHeaders(all.headers);
    assert.equal(all.headers["content-type"], "application/json; charset=utf-8");
    assert.deepEqual((JSON.parse(all.body) as Message[]).map((m) => [m.id, m.data]), [[a.id, { n: 1 }], [b.id, { n: 2 }]]);
    assert.equal(all.headers[CURSOR_HEADER], b.id);
    const after = await client.request(`/api/messages?channel=${ch}&since=${a.id}`);
    assert.deepEqual((JSON.parse(after.body) as Message[]).map((m) => m.id), [b.id]);
    // A trimmed cursor: the gap header, as on HTTP/1.1.
    const ids: string[] = [];
    for (let i = 0; i < 7; i++) ids.push((await client.publish(i, ch)).id);
    const gapped = await client.request(`/api/messages?channel=${ch}&since=${a.id}`);
    assert.equal((JSON.parse(String(gapped.headers[GAP_HEADER])) as Gap).reason, "trimmed");
  });

  test("error answers drop HTTP/1.1-only headers (the upgrade hint on /api/ws) instead of failing the stream", async () => {
    const ws = await client.request("/api/ws");
    assert.equal(ws.status, 400);
    assertNoConnectionHeaders(ws.headers);
    assert.equal((JSON.parse(ws.body) as { error: { code: string } }).error.code, "bad_request");
    const missing = await client.request("/nope");
    assert.equal(missing.status, 404);
  });

  test("a refused publish whose body was never finished resets that stream only; the session goes on, no warning", async () => {
    const warnings: Error[] = [];
    const onWarning = (warning: Error): void => {
      warnings.push(warning);
    };
    process.on("warning", onWarning);
    try {
      const stream = client.session.request({ ":method": "POST", ":path": "/api/messages", "content-type": "text/plain" });
      stream.on("error", () => {});
      stream.write("a body that never ends");
      const head = await new Promise<IncomingHttpHeaders>((resolve) => stream.once("response", resolve));
      assert.equal(head[":status"], 415);
      assertNoConnectionHeaders(head);
      stream.resume();
      await new Promise<void>((resolve) => stream.once("close", () => resolve()));
      assert.equal((await client.request("/healthz")).status, 200, "the session still carries requests");
      await sleep(50);
      assert.deepEqual(warnings.map((w) => w.message), []);
    } finally {
      process.off("warning", onWarning);
    }
  });

  test("long-poll: held until a message exists, then answered at once", async () => {
    const ch = channel();
    const started = Date.now();
    const pending = client.request(`/api/messages?channel=${ch}&since=0&wait=10`);
    await until(() => running.hub.stats().byKind["long-poll"] === 1, 2000, "long-poll held");
    const m = await client.publish({ late: true }, ch);
    const answer = await pending;
    assert.equal(answer.status, 200);
    assert.deepEqual((JSON.parse(answer.body) as Message[]).map((x) => x.id), [m.id]);
    assert.ok(Date.now() - started < 3000);
  });

  test("long-poll: a client that resets its stream (RST_STREAM) releases the held request at once; the session stays", async () => {
    const ch = channel();
    const before = running.hub.stats();
    const stream = client.session.request({ ":path": `/api/messages?channel=${ch}&wait=20` });
    stream.on("error", () => {});
    await until(() => running.hub.stats().byKind["long-poll"] === before.byKind["long-poll"] + 1, 2000, "long-poll held");
    assert.equal(running.hub.stats().channels, before.channels + 1);
    stream.close(constants.NGHTTP2_CANCEL);
    await until(() => running.hub.stats().byKind["long-poll"] === before.byKind["long-poll"], 2000, "long-poll released");
    await until(() => running.hub.stats().channels === before.channels, 2000, "channel subscription released");
    assert.equal(client.session.closed, false);
    assert.equal((await client.request("/healthz")).status, 200);
  });

  test("SSE: headers fit HTTP/2, events carry exactly the published data", async () => {
    const ch = channel();
    const sse = client.sse(`/api/stream?channel=${ch}`);
    const headers = await sse.headers;
    assert.equal(headers[":status"], 200);
    assert.match(String(headers["content-type"]), /^text\/event-stream/);
    assert.equal(headers["cache-control"], "no-cache");
    assertNoConnectionHeaders(headers);
    await sse.waitForText("event: ready");
    const a = await client.publish({ price: 142.1 }, ch);
    const b = await client.publish({ price: 142.35 }, ch);
    const events = await sse.waitFor(2);
    assert.deepEqual(events.map((e) => [e.id, JSON.parse(e.data)]), [[a.id, { price: 142.1 }], [b.id, { price: 142.35 }]]);
    assert.ok(sse.raw().startsWith("retry: 2000\n\n"));
    sse.cancel();
  });

  test("SSE: drop (RST_STREAM), publish more, resume with Last-Event-ID: exactly the missed messages; the stream is released", async () => {
    const ch = channel();
    const baseline = running.hub.stats().byKind.sse;
    const s1 = client.sse(`/api/stream?channel=${ch}`);
    await s1.waitForText("event: ready");
    const a = await client.publish("a", ch);
    await s1.waitFor(1);
    s1.cancel();
    assert.equal(await s1.ended, constants.NGHTTP2_CANCEL);
    await until(() => running.hub.stats().byKind.sse === baseline, 2000, "reset stream released by the hub");
    const missed = [await client.publish("b", ch), await client.publish("c", ch)];
    const s2 = client.sse(`/api/stream?channel=${ch}`, { "last-event-id": a.id });
    const events = await s2.waitFor(2);
    assert.deepEqual(events.map((e) => e.id), missed.map((m) => m.id));
    const d = await client.publish("d", ch);
    assert.equal((await s2.waitFor(3))[2]!.id, d.id);
    await sleep(100);
    assert.equal(s2.events.filter((e) => e.event !== "ready").length, 3, "no duplicates");
    s2.cancel();
  });

  test("SSE: the gap event on a resume from before retained history", async () => {
    const ch = channel();
    const ids: string[] = [];
    for (let i = 0; i < 8; i++) ids.push((await client.publish(i, ch)).id);
    const sse = client.sse(`/api/stream?channel=${ch}`, { "last-event-id": ids[0]! });
    const events = await sse.waitFor(6);
    assert.equal(events[0]!.event, "gap");
    assert.deepEqual(JSON.parse(events[0]!.data), { channel: ch, reason: "trimmed", since: ids[0], resume: ids[2] });
    assert.equal(events[0]!.id, ids[2]);
    assert.deepEqual(events.slice(1).map((e) => JSON.parse(e.data)), [3, 4, 5, 6, 7]);
    sse.cancel();
  });

  test("SSE: heartbeat comments keep an idle stream alive", async () => {
    const sse = client.sse(`/api/stream?channel=${channel()}`);
    await sse.waitForText(":\n\n", 3000);
    sse.cancel();
  });

  test("ten SSE streams and a poll share one connection: all deliver, the poll answers at once", async () => {
    const channels = Array.from({ length: 10 }, () => channel());
    const streams = channels.map((ch) => client.sse(`/api/stream?channel=${ch}`));
    for (const s of streams) await s.waitForText("event: ready");
    const started = Date.now();
    const poll = await client.request(`/api/messages?channel=${channels[0]}`);
    assert.equal(poll.status, 200);
    assert.ok(Date.now() - started < 1000);
    const sent = await Promise.all(channels.map((ch, i) => client.publish({ i }, ch)));
    for (const [i, s] of streams.entries()) assert.equal((await s.waitFor(1))[0]!.id, sent[i]!.id);
    for (const s of streams) s.cancel();
  });

  test("wss: a ws client joins and receives over the TLS port while HTTP/2 streams run on it", async () => {
    const ch = channel();
    const sse = client.sse(`/api/stream?channel=${ch}`);
    await sse.waitForText("event: ready");
    const ws = new WebSocket(`${running.url.replace(/^https/, "wss")}/api/ws`, { rejectUnauthorized: false });
    const frames: Array<Record<string, unknown>> = [];
    ws.on("message", (data) => frames.push(JSON.parse(String(data)) as Record<string, unknown>));
    await new Promise<void>((resolve, reject) => {
      ws.once("open", () => resolve());
      ws.once("error", reject);
    });
    ws.send(JSON.stringify({ type: "join", room: ch }));
    await until(() => frames.some((f) => f.type === "joined"), 3000, "joined");
    const m = await client.publish({ over: "h2" }, ch);
    await until(() => frames.some((f) => f.type === "message"), 3000, "message frame");
    assert.deepEqual(frames.find((f) => f.type === "message"), { type: "message", room: ch, id: m.id, data: { over: "h2" }, time: frames.find((f) => f.type === "message")!.time });
    assert.equal((await sse.waitFor(1))[0]!.id, m.id);
    await new Promise<void>((resolve) => {
      ws.once("close", () => resolve());
      ws.close();
    });
    sse.cancel();
  });
});

test("slow consumer over HTTP/2: a stream whose reader stops is cut (RST_STREAM CANCEL) by its own backlog; its sibling on the same connection goes on", { timeout: 15_000 }, async () => {
  const running = await serve({ port: 0, host: "127.0.0.1", tls: "self-signed", maxBufferedBytes: 64 * 1024 });
  const client = await connectH2(running.url);
  try {
    const slow = client.sse("/api/stream?channel=slow");
    // A paused stream stops returning HTTP/2 flow-control credit, so its data stays queued on the server.
    slow.stream.pause();
    const fast = client.sse("/api/stream?channel=fast");
    await fast.waitForText("event: ready");
    await until(() => running.hub.stats().byKind.sse === 2, 2000, "both streams open");
    const blob = "x".repeat(16 * 1024);
    let published = 0;
    for (; published < 400 && running.hub.stats().byKind.sse === 2; published++) {
      await running.hub.publish("slow", { published, blob });
      await running.hub.publish("fast", { published });
      await new Promise((resolve) => setImmediate(resolve));
    }
    assert.ok(published < 400, `the slow stream was dropped after ${published} messages (64 KiB window + 64 KiB bound)`);
    assert.equal(await slow.ended, constants.NGHTTP2_CANCEL);
    assert.equal(running.hub.stats().byKind.sse, 1);
    const last = await running.hub.publish("fast", { last: true });
    await fast.waitFor(published + 1);
    assert.equal(fast.events.filter((e) => e.event !== "ready").at(-1)!.id, last.id, "the sibling stream received everything");
    assert.equal(client.session.closed, false);
    fast.cancel();
  } finally {
    await client.close();
    await running.close();
  }
});

test("provided certificate and key; TLS with http2 off speaks HTTP/1.1 only; a bad certificate fails serve()", { timeout: 15_000 }, async () => {
  const pems = await generate([{ name: "commonName", value: "localhost" }], {
    keyType: "ec",
    algorithm: "sha256",
    extensions: [{ name: "subjectAltName", altNames: [{ type: 7, ip: "127.0.0.1" }] }],
  });
  const running = await serve({ port: 0, host: "127.0.0.1", tls: { cert: pems.cert, key: pems.private }, http2: false });
  try {
    assert.equal(running.tls!.selfSigned, false);
    assert.deepEqual(running.protocols, ["http/1.1"]);
    const { port } = new URL(running.url);
    const alpn = await new Promise<string | false>((resolve, reject) => {
      const socket = tlsConnect({ host: "127.0.0.1", port: Number(port), ca: pems.cert, ALPNProtocols: ["h2", "http/1.1"] }, () => {
        resolve(socket.alpnProtocol ?? false);
        socket.destroy();
      });
      socket.on("error", reject);
    });
    assert.notEqual(alpn, "h2");
    const status = await new Promise<number>((resolve, reject) => {
      httpsGet(`${running.url}/healthz`, { ca: pems.cert }, (res) => {
        res.resume();
        resolve(res.statusCode!);
      }).on("error", reject);
    });
    assert.equal(status, 200);
  } finally {
    await running.close();
  }
  await assert.rejects(serve({ port: 0, tls: { cert: "not a certificate", key: pems.private } }), /tls.cert is not a PEM certificate/);
  const other = await generate([{ name: "commonName", value: "other" }], { keyType: "ec" });
  await assert.rejects(serve({ port: 0, tls: { cert: pems.cert, key: other.private } }), /tls.key is not a PEM private key of tls.cert/);
  await assert.rejects(serve({ port: 0, tls: "self-signed", h2c: true }), /h2c is for cleartext/);
});

test("h2c: prior-knowledge cleartext HTTP/2 beside HTTP/1.1 and WebSocket on one port", { timeout: 15_000 }, async () => {
  const running = await serve({ port: 0, host: "127.0.0.1", h2c: true, heartbeatMs: 200 });
  const client = await connectH2(running.url);
  try {
    assert.match(running.url, /^http:\/\//);
    assert.deepEqual(running.protocols, ["h2c", "http/1.1"]);
    const sse = client.sse("/api/stream?channel=clear");
    await sse.waitForText("event: ready");
    const m = await client.publish({ clear: true }, "clear");
    assert.equal((await sse.waitFor(1))[0]!.id, m.id);
    const polled = await client.request("/api/messages?channel=clear&since=0");
    assertNoConnectionHeaders(polled.headers);
    assert.deepEqual((JSON.parse(polled.body) as Message[]).map((x) => x.id), [m.id]);
    // HTTP/1.1 on the same port: fetch, and a WebSocket upgrade.
    const h1 = await fetch(`${running.url}/api/messages?channel=clear&since=0`);
    assert.deepEqual(((await h1.json()) as Message[]).map((x) => x.id), [m.id]);
    const ws = new WebSocket(`${running.url.replace(/^http/, "ws")}/api/ws`);
    const pong = await new Promise<Record<string, unknown>>((resolve, reject) => {
      ws.once("open", () => ws.send(JSON.stringify({ type: "ping", ref: 1 })));
      ws.once("message", (data) => resolve(JSON.parse(String(data)) as Record<string, unknown>));
      ws.once("error", reject);
    });
    assert.equal(pong.type, "pong");
    ws.terminate();
    sse.cancel();
  } finally {
    await client.close();
    await running.close();
  }
});

test("graceful drain over HTTP/2: GOAWAY, the held poll answered, the SSE stream ended (not reset), then the connection closes", { timeout: 15_000 }, async () => {
  const running = await serve({ port: 0, host: "127.0.0.1", tls: "self-signed" });
  const client = await connectH2(running.url);
  const goaway = new Promise<number>((resolve) => client.session.once("goaway", (code: number) => resolve(code)));
  const sessionClosed = new Promise<void>((resolve) => client.session.once("close", () => resolve()));
  const sse = client.sse("/api/stream?channel=drain");
  await sse.waitForText("event: ready");
  const m = await client.publish(1, "drain");
  const held = client.request(`/api/messages?channel=drain&since=${m.id}&wait=20`);
  await until(() => running.hub.stats().byKind["long-poll"] === 1, 2000, "long-poll held");
  const started = Date.now();
  await running.close();
  assert.ok(Date.now() - started < 2000, `drained in ${Date.now() - started} ms`);
  assert.equal(await goaway, constants.NGHTTP2_NO_ERROR);
  const answer = await held;
  assert.equal(answer.status, 200);
  assert.deepEqual(JSON.parse(answer.body), []);
  assert.equal(await sse.ended, 0, "the stream ended with END_STREAM, so EventSource reconnects and resumes");
  await sessionClosed;
});

test("SIGTERM to a real `ladder serve --tls-self-signed`: fingerprint printed, GOAWAY to HTTP/2 clients, exit 0", { timeout: 15_000 }, async () => {
  const child = spawn(process.execPath, ["bin/ladder.js", "serve", "--port", "0", "--tls-self-signed", "--log-level", "warn"], {
    stdio: ["ignore", "pipe", "inherit"],
  });
  const exited = new Promise<number | null>((resolve) => child.once("exit", (code) => resolve(code)));
  try {
    const { url, fingerprint } = await new Promise<{ url: string; fingerprint: string }>((resolve, reject) => {
      let out = "";
      const timer = setTimeout(() => reject(new Error(`no start within 10 s: ${out}`)), 10_000);
      child.stdout.on("data", (d: Buffer) => {
        out += d.toString();
        const u = /listening on (https:\/\/\S+)/.exec(out);
        const f = /"fingerprint256":"([0-9A-F:]{95})"/.exec(out);
        if (u && f) {
          clearTimeout(timer);
          resolve({ url: u[1]!, fingerprint: f[1]! });
        }
      });
      child.once("exit", () => reject(new Error(`exited early: ${out}`)));
    });
    const client = await connectH2(url);
    assert.equal(client.session.alpnProtocol, "h2");
    const socket = client.session.socket as import("node:tls").TLSSocket;
    assert.equal(socket.getPeerCertificate().fingerprint256, fingerprint, "the printed fingerprint is the served certificate's");
    const goaway = new Promise<number>((resolve) => client.session.once("goaway", (code: number) => resolve(code)));
    const sse = client.sse("/api/stream");
    await sse.waitForText("event: ready");
    const m = await client.publish("before");
    assert.equal((await sse.waitFor(1))[0]!.id, m.id);
    child.kill("SIGTERM");
    assert.equal(await goaway, constants.NGHTTP2_NO_ERROR);
    assert.equal(await sse.ended, 0);
    assert.equal(await exited, 0);
    await client.close();
  } finally {
    child.kill("SIGKILL");
  }
});
