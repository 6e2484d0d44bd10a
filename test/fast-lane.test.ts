/**
 * The HTTP/1.1 fast lane (src/server/edge/http1/) on real sockets:
 * - parity: the same raw requests, sent to a hub with the lane and to one without, get the same answers
 *   (status, headers but Date, body but ids and times) and the same connection handling — requests the
 *   lane must not read (smuggling shapes, other routes) among them, handed to node:http;
 * - what only the lane does: publishes and polls answered without node:http's request events, pipelined
 *   requests answered in order, a connection handed to node:http part-way, a held poll whose client
 *   leaves, a body that stalls, a drain, a client that half-closes.
 */
import assert from "node:assert/strict";
import type { IncomingMessage } from "node:http";
import { after, before, describe, test } from "node:test";
import { serve, type RunningServer, type ServeOptions } from "../src/index.js";
import { eventually } from "./helpers/app.js";
import { rawHttp1 } from "./helpers/raw.js";

const KEY = "fast-lane-test-key-0123456789abcdef";
const APP = "https://app.example";
const OPTIONS: ServeOptions = {
  port: 0,
  host: "127.0.0.1",
  maxMessageBytes: 256,
  maxBatchBytes: 512,
  cors: { origins: [APP], credentials: true },
  auth: {
    rules: [
      { match: "locked.*", subscribe: "token", publish: "token" },
      { match: "*", subscribe: "anyone", publish: "anyone" },
    ],
    apiKeys: [KEY],
  },
};
const BOUNDED = { timeout: 20_000 } as const;

interface Answer {
  readonly status: number;
  /** Header lines, lower-cased names, sorted, Date left out. */
  readonly headers: readonly string[];
  readonly body: string;
}

/** Splits what a connection received into answers (every answer here has a Content-Length). */
function answers(text: string): Answer[] {
  const out: Answer[] = [];
  let rest = Buffer.from(text, "latin1");
  while (rest.length > 0) {
    const end = rest.indexOf("\r\n\r\n");
    if (end === -1) throw new Error(`an unfinished head: ${JSON.stringify(rest.toString("latin1"))}`);
    const lines = rest.subarray(0, end).toString("latin1").split("\r\n");
    const status = Number(lines[0]!.split(" ")[1]);
    const headers = lines
      .slice(1)
      .map((line) => {
        const colon = line.indexOf(":");
        return `${line.slice(0, colon).toLowerCase()}: ${line.slice(colon + 1).trim()}`;
      })
      .filter((line) => !line.startsWith("date: "))
      .sort();
    let body: string;
    if (headers.includes("transfer-encoding: chunked")) {
      // node:http's own refusals (no host) come chunked; they are empty here.
      const last = rest.indexOf("0\r\n\r\n", end + 4);
      body = rest.subarray(end + 4, last).toString("utf8");
      rest = rest.subarray(last + 5);
    } else {
      const length = Number(headers.find((line) => line.startsWith("content-length: "))?.slice(16) ?? 0);
      body = rest.subarray(end + 4, end + 4 + length).toString("utf8");
      rest = rest.subarray(end + 4 + length);
    }
    const plain = (text: string): string => text.replace(/\d{13}-\d+/g, "<id>").replace(/"time":\d+/g, '"time":<t>');
    out.push({ status, headers: headers.map(plain), body: plain(body) });
  }
  return out;
}

/** Writes `bytes` on a new connection; what came back once it closed or went quiet for `quietMs`. */
async function exchange(url: string, bytes: string, quietMs = 300): Promise<{ answers: Answer[]; closed: boolean; raw: string }> {
  const raw = await rawHttp1(url);
  let closed = false;
  void raw.closed.then(() => (closed = true));
  raw.socket.write(Buffer.from(bytes, "utf8"));
  let seen = -1;
  while (!closed && raw.text().length !== seen) {
    seen = raw.text().length;
    await new Promise((resolve) => setTimeout(resolve, quietMs));
  }
  raw.socket.destroy();
  return { answers: answers(raw.text()), closed, raw: raw.text() };
}

function post(body: string, extra = "", contentType = "application/json"): string {
  return `POST /api/messages HTTP/1.1\r\nhost: hub\r\ncontent-type: ${contentType}\r\ncontent-length: ${Buffer.byteLength(body)}\r\n${extra}\r\n${body}`;
}

/** Raw requests and the statuses they are answered with, in order; the connection closes after them when `closes`. */
const PARITY: ReadonlyArray<{ what: string; bytes: string; statuses: readonly number[]; closes?: boolean; keptByLane?: boolean }> = [
  { what: "a publish", bytes: post('{"channel":"open","data":{"n":1}}'), statuses: [201] },
  { what: "a publish whose data is not ASCII", bytes: post('{"channel":"open","data":"é ✓ 😀"}'), statuses: [201] },
  { what: "a publish with an idempotency key, twice", bytes: post('{"channel":"open","data":1,"key":"k1"}') + post('{"channel":"open","data":1,"key":"k1"}'), statuses: [201, 200] },
  { what: "a batch", bytes: post('{"channel":"open","messages":[{"data":1},{"channel":"bad channel!","data":2}]}'), statuses: [200] },
  { what: "a publish that asks to close", bytes: post('{"channel":"open","data":2}', "connection: close\r\n"), statuses: [201], closes: true },
  // node:http closes here because the hub leaves the body unread; the lane has read it whole, so the
  // connection can carry the next request. The one difference, and on purpose.
  { what: "the wrong content type", bytes: post("{}", "", "text/plain"), statuses: [415], keptByLane: true },
  { what: "a body that is not JSON", bytes: post("{nope"), statuses: [400] },
  { what: "a body without data", bytes: post('{"channel":"open"}'), statuses: [400] },
  { what: "data over maxMessageBytes", bytes: post(JSON.stringify({ channel: "open", data: "x".repeat(300) })), statuses: [413] },
  { what: "a body over the batch bound (handed off)", bytes: post(JSON.stringify({ channel: "open", data: "x".repeat(600) })), statuses: [413], closes: true },
  { what: "a publish to a locked channel without a token", bytes: post('{"channel":"locked.a","data":1}'), statuses: [401] },
  { what: "a publish to a locked channel with the API key", bytes: post('{"channel":"locked.a","data":1}', `authorization: Bearer ${KEY}\r\n`), statuses: [201] },
  { what: "a publish from an allowed origin (CORS headers)", bytes: post('{"channel":"open","data":3}', `origin: ${APP}\r\n`), statuses: [201] },
  { what: "a publish from another origin", bytes: post('{"channel":"open","data":4}', "origin: https://evil.example\r\n"), statuses: [201] },
  { what: "a poll", bytes: "GET /api/messages?channel=open&since=0&limit=3 HTTP/1.1\r\nhost: hub\r\n\r\n", statuses: [200] },
  { what: "a poll with a bad limit", bytes: "GET /api/messages?channel=open&limit=zero HTTP/1.1\r\nhost: hub\r\n\r\n", statuses: [400] },
  { what: "a poll of a locked channel without a token", bytes: "GET /api/messages?channel=locked.a HTTP/1.1\r\nhost: hub\r\n\r\n", statuses: [401] },
  { what: "a poll with an expired wait (held, then empty)", bytes: "GET /api/messages?channel=quiet&since=now&wait=0.2 HTTP/1.1\r\nhost: hub\r\n\r\n", statuses: [200] },
  { what: "pipelined: two publishes and a health check", bytes: post('{"channel":"open","data":5}') + post('{"channel":"open","data":6}') + "GET /healthz HTTP/1.1\r\nhost: hub\r\n\r\n", statuses: [201, 201, 200] },
  { what: "pipelined: a health check, then a publish (node:http's from the start)", bytes: "GET /healthz HTTP/1.1\r\nhost: hub\r\n\r\n" + post('{"channel":"open","data":7}'), statuses: [200, 201] },
  { what: "HEAD of the messages path", bytes: "HEAD /api/messages?channel=open HTTP/1.1\r\nhost: hub\r\n\r\n", statuses: [200] },
  { what: "a CORS preflight", bytes: `OPTIONS /api/messages HTTP/1.1\r\nhost: hub\r\norigin: ${APP}\r\naccess-control-request-method: POST\r\n\r\n`, statuses: [204] },
  { what: "another method", bytes: "PUT /api/messages HTTP/1.1\r\nhost: hub\r\ncontent-length: 0\r\n\r\n", statuses: [405], closes: true },
  { what: "content-length and transfer-encoding together", bytes: 'POST /api/messages HTTP/1.1\r\nhost: hub\r\ncontent-type: application/json\r\ncontent-length: 4\r\ntransfer-encoding: chunked\r\n\r\n0\r\n\r\n', statuses: [400], closes: true },
  { what: "two content-lengths", bytes: 'POST /api/messages HTTP/1.1\r\nhost: hub\r\ncontent-type: application/json\r\ncontent-length: 2\r\ncontent-length: 3\r\n\r\n{}', statuses: [400], closes: true },
  { what: "a chunked publish", bytes: 'POST /api/messages HTTP/1.1\r\nhost: hub\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n1b\r\n{"channel":"open","data":8}\r\n0\r\n\r\n', statuses: [201] },
  { what: "no host", bytes: "GET /api/messages?channel=open HTTP/1.1\r\naccept: */*\r\n\r\n", statuses: [400], closes: true },
  { what: "a folded header", bytes: "GET /api/messages?channel=open HTTP/1.1\r\nhost: hub\r\nx-a: one\r\n two\r\n\r\n", statuses: [400], closes: true },
  { what: "a head over maxHeaderBytes", bytes: `GET /api/messages?channel=open HTTP/1.1\r\nhost: hub\r\nx-big: ${"a".repeat(17_000)}\r\n\r\n`, statuses: [431], closes: true },
  { what: "a publish with expect: 100-continue", bytes: post('{"channel":"open","data":9}', "expect: 100-continue\r\n"), statuses: [100, 201] },
];

describe("fast lane: the same answers as node:http", { concurrency: 1 }, () => {
  let lane: RunningServer;
  let node: RunningServer;
  let nodeRequestsOnLaneHub = 0;
  before(async () => {
    lane = await serve(OPTIONS);
    node = await serve({ ...OPTIONS, fastLane: false });
    lane.server.on("request", () => nodeRequestsOnLaneHub++);
  });
  after(async () => {
    await lane?.close();
    await node?.close();
  });

  for (const { what, bytes, statuses, closes = false, keptByLane = false } of PARITY) {
    test(what, BOUNDED, async () => {
      // 100 Continue has no Content-Length: the parser here reads it as an empty answer, on both sides alike.
      const [fast, slow] = await Promise.all([exchange(lane.url, bytes), exchange(node.url, bytes)]);
      assert.deepEqual(
        fast.answers.map((a) => a.status),
        statuses,
        `lane answered ${JSON.stringify(fast.raw.slice(0, 400))}`,
      );
      if (keptByLane) {
        const connectionless = (answers: Answer[]): Answer[] => answers.map((a) => ({ ...a, headers: a.headers.filter((h) => !/^(connection|keep-alive): /.test(h)) }));
        assert.deepEqual(connectionless(fast.answers), connectionless(slow.answers), "the lane's answers are node:http's");
        assert.ok(fast.answers.every((a) => a.headers.includes("connection: keep-alive")));
        assert.equal(fast.closed, false, "the lane keeps the connection");
        assert.equal(slow.closed, true, "node:http closes it");
        return;
      }
      assert.deepEqual(fast.answers, slow.answers, "the lane's answers are node:http's");
      assert.equal(fast.closed, closes, `the lane's connection ${closes ? "closes" : "stays open"}`);
      assert.equal(slow.closed, closes, `node:http's connection ${closes ? "closes" : "stays open"}`);
    });
  }

  test("a publish over the rate limit: 429 with Retry-After, as on node:http", BOUNDED, async () => {
    const limited = { port: 0, host: "127.0.0.1", limits: { publishPerSecond: 1, publishBurst: 2 } } as const;
    const [fastHub, nodeHub] = [await serve(limited), await serve({ ...limited, fastLane: false })];
    try {
      const three = post('{"channel":"open","data":1}').repeat(3);
      const [fast, slow] = await Promise.all([exchange(fastHub.url, three), exchange(nodeHub.url, three)]);
      assert.deepEqual(
        fast.answers.map((a) => a.status),
        [201, 201, 429],
      );
      assert.ok(fast.answers[2]!.headers.some((h) => h.startsWith("retry-after: ")));
      assert.deepEqual(fast.answers, slow.answers);
    } finally {
      await fastHub.close();
      await nodeHub.close();
    }
  });

  test("and node:http saw only the requests the lane handed over", () => {
    // Handed over: the two health checks, the HEAD, the preflight, the PUT, the oversized body, the chunked
    // publish, the expect — each is one request event (the malformed ones never become requests).
    const handed = ["pipelined: two publishes", "pipelined: a health check", "HEAD", "preflight", "another method", "batch bound", "chunked", "expect"];
    const expected = handed.length + 1; /* the publish after the health check rides node:http's connection */
    assert.equal(nodeRequestsOnLaneHub, expected);
  });
});

describe("fast lane: connections", { concurrency: 1 }, () => {
  const LIMITS = { headersTimeoutMs: 400, requestTimeoutMs: 800, keepAliveTimeoutMs: 1000 };
  let running: RunningServer;
  const seenByNode: string[] = [];
  before(async () => {
    running = await serve({ port: 0, host: "127.0.0.1", ...LIMITS });
    running.server.on("request", (req: IncomingMessage) => seenByNode.push(`${req.method} ${req.url}`));
  });
  after(() => running?.close());

  test("a publisher's keep-alive connection stays on the lane: many publishes, one socket, no node:http request", BOUNDED, async () => {
    const raw = await rawHttp1(running.url);
    for (let i = 0; i < 20; i++) {
      const before = raw.text().length;
      raw.socket.write(post(JSON.stringify({ channel: "keep", data: i })));
      await eventually(() => raw.text().length > before && raw.text().endsWith("}"), 5000, `answer ${i}`);
    }
    const all = answers(raw.text());
    assert.equal(all.length, 20);
    assert.ok(all.every((a) => a.status === 201 && a.headers.includes("connection: keep-alive")));
    assert.deepEqual(seenByNode, [], "node:http saw none of them");
    raw.socket.destroy();
  });

  test("pipelined behind a held poll, a publish waits its turn: answers go out in request order", BOUNDED, async () => {
    const raw = await rawHttp1(running.url);
    const sentAt = Date.now();
    raw.socket.write("GET /api/messages?channel=order&since=now&wait=0.5 HTTP/1.1\r\nhost: hub\r\n\r\n" + post('{"channel":"order","data":"x"}'));
    await eventually(() => answers(raw.text()).length === 2, 5000, "both answers");
    const [poll, publish] = answers(raw.text());
    assert.equal(poll!.status, 200);
    assert.equal(poll!.body, "[]", "the poll was answered by its wait, before the publish behind it ran");
    assert.equal(publish!.status, 201);
    assert.ok(Date.now() - sentAt >= 450, "the publish waited for the poll");
    raw.socket.destroy();
  });

  test("a held poll whose client leaves is released at once", BOUNDED, async () => {
    const raw = await rawHttp1(running.url);
    raw.socket.write("GET /api/messages?channel=leaver&since=now&wait=20 HTTP/1.1\r\nhost: hub\r\n\r\n");
    await eventually(() => running.hub.stats().byKind["long-poll"] === 1, 5000, "the poll held");
    raw.socket.destroy();
    await eventually(() => running.hub.stats().byKind["long-poll"] === 0, 2000, "the poll released");
  });

  test("a held poll is answered by a publish, and the connection then carries the next request", BOUNDED, async () => {
    const raw = await rawHttp1(running.url);
    raw.socket.write("GET /api/messages?channel=wake&since=now&wait=20 HTTP/1.1\r\nhost: hub\r\n\r\n");
    await eventually(() => running.hub.stats().byKind["long-poll"] === 1, 5000, "the poll held");
    await running.hub.publish("wake", { hello: 1 });
    await eventually(() => answers(raw.text()).length === 1, 5000, "the poll answered");
    raw.socket.write(post('{"channel":"wake","data":2}'));
    await eventually(() => answers(raw.text()).length === 2, 5000, "the publish answered");
    const [poll, publish] = answers(raw.text());
    assert.equal(poll!.status, 200);
    assert.match(poll!.body, /"data":\{"hello":1\}/);
    assert.equal(publish!.status, 201);
    raw.socket.destroy();
  });

  test("a body that stalls gets 408 at requestTimeoutMs and the connection closes", BOUNDED, async () => {
    const raw = await rawHttp1(running.url);
    raw.socket.write("POST /api/messages HTTP/1.1\r\nhost: hub\r\ncontent-type: application/json\r\ncontent-length: 40\r\n\r\n{\"chan");
    const elapsed = await raw.closed;
    assert.match(raw.text(), /^HTTP\/1\.1 408 /);
    assert.match(raw.text(), /"request_timeout"/);
    assert.ok(elapsed >= LIMITS.requestTimeoutMs * 0.9 && elapsed <= LIMITS.requestTimeoutMs + 1000, `closed after ${elapsed} ms`);
  });

  test("a publish sent a byte per write is read whole and answered; so is a batch in many pieces", BOUNDED, async () => {
    const nodeBefore = seenByNode.length;
    const raw = await rawHttp1(running.url);
    raw.socket.setNoDelay(true);
    const bytes = Buffer.from(post('{"channel":"trickle","data":"é"}'));
    for (const byte of bytes) {
      raw.socket.write(Buffer.of(byte));
      await new Promise((resolve) => setImmediate(resolve));
    }
    await eventually(() => answers(raw.text()).length === 1, 5000, "the trickled publish answered");
    const messages = Array.from({ length: 200 }, (_, i) => ({ data: "y".repeat(200) + i }));
    const batch = Buffer.from(post(JSON.stringify({ channel: "trickle", messages })));
    for (let at = 0; at < batch.length; at += 1000) {
      raw.socket.write(batch.subarray(at, at + 1000));
      await new Promise((resolve) => setImmediate(resolve));
    }
    await eventually(() => answers(raw.text()).length === 2, 5000, "the batch answered");
    const [one, many] = answers(raw.text());
    assert.equal(one!.status, 201);
    assert.equal(many!.status, 200);
    assert.equal((JSON.parse(many!.body) as { results: unknown[] }).results.length, 200);
    assert.deepEqual(seenByNode.slice(nodeBefore), [], "both on the lane: node:http saw neither");
    raw.socket.destroy();
  });

  test("a client that sends its request and half-closes still gets its answer", BOUNDED, async () => {
    const raw = await rawHttp1(running.url);
    raw.socket.end(post('{"channel":"half","data":1}'));
    await raw.closed;
    assert.equal(answers(raw.text())[0]?.status, 201);
  });

  test("a client that reads nothing while it pipelines is not read without bound, as on node:http", { timeout: 60_000 }, async () => {
    /** Publishes written before the server stopped reading (the socket pushed back for a second). */
    const flood = async (url: string): Promise<number> => {
      const raw = await rawHttp1(url);
      raw.socket.pause();
      const burst = post('{"channel":"flood","data":"' + "x".repeat(100) + '"}').repeat(100);
      let written = 0;
      const startedAt = Date.now();
      // Bounded in time too: the kernel's buffers may grow, and drain in trickles, before they stop.
      for (let i = 0; i < 3000 && Date.now() - startedAt < 8000; i++) {
        if (!raw.socket.write(burst)) {
          const drained = await Promise.race([new Promise((resolve) => raw.socket.once("drain", () => resolve(true))), new Promise((resolve) => setTimeout(() => resolve(false), 1000))]);
          if (!drained) break;
        }
        written += 100;
      }
      raw.socket.destroy();
      return written;
    };
    // Default limits: a peer blocked for requestTimeoutMs is cut, and the flood must stop before that.
    const fast = await serve({ port: 0, host: "127.0.0.1" });
    const node = await serve({ port: 0, host: "127.0.0.1", fastLane: false });
    try {
      const [lane, slow] = [await flood(fast.url), await flood(node.url)];
      // What the kernel's buffers on both sides hold decides both figures; without back-pressure the lane
      // would read all 300,000.
      assert.ok(lane < 300_000, `the lane read all ${lane} publishes nobody read the answers of`);
      assert.ok(lane <= slow * 2, `the lane read ${lane} publishes before it stopped, node:http ${slow}`);
    } finally {
      await fast.close();
      await node.close();
    }
  });

  test("a client that stops reading its answers is cut at requestTimeoutMs", BOUNDED, async () => {
    const raw = await rawHttp1(running.url);
    raw.socket.pause();
    const burst = post('{"channel":"stall","data":"' + "x".repeat(100) + '"}').repeat(100);
    const startedAt = Date.now();
    let blockedAt = 0;
    // Until the socket pushes back for 600 ms (the kernel's buffers may first grow, and drain in trickles).
    while (Date.now() - startedAt < 10_000 && !raw.socket.destroyed) {
      if (!raw.socket.write(burst)) {
        const drained = await Promise.race([new Promise((resolve) => raw.socket.once("drain", () => resolve(true))), new Promise((resolve) => setTimeout(() => resolve(false), 600))]);
        if (!drained) {
          blockedAt = Date.now();
          break;
        }
      }
    }
    assert.ok(blockedAt > 0, "the server stopped reading");
    const closedAfter = (await raw.closed) + startedAt - blockedAt;
    assert.ok(closedAfter <= LIMITS.requestTimeoutMs + 1000, `cut ${closedAfter} ms after it stopped reading`);
  });

  test("close(): an idle lane connection is closed, a held poll is answered with connection: close", BOUNDED, async () => {
    const own = await serve({ port: 0, host: "127.0.0.1" });
    const idle = await rawHttp1(own.url);
    idle.socket.write(post('{"channel":"d","data":1}'));
    await eventually(() => answers(idle.text()).length === 1, 5000, "the publish answered");
    const held = await rawHttp1(own.url);
    held.socket.write("GET /api/messages?channel=d2&since=now&wait=20 HTTP/1.1\r\nhost: hub\r\n\r\n");
    await eventually(() => own.hub.stats().byKind["long-poll"] === 1, 5000, "the poll held");
    const startedAt = Date.now();
    await own.close();
    assert.ok(Date.now() - startedAt < 3000, "close() did not wait on the lane's connections");
    await idle.closed;
    await held.closed;
    const [answer] = answers(held.text());
    assert.equal(answer?.status, 200);
    assert.ok(answer!.headers.includes("connection: close"), "the held poll's answer closes its connection");
  });
});
