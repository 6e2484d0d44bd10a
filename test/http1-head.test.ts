/**
 * The fast lane's request head (src/server/edge/http1/head.ts), table-driven: what it reads, and
 * every shape it must hand to node:http rather than read itself.
 */
import assert from "node:assert/strict";
import { once } from "node:events";
import net from "node:net";
import { test } from "node:test";
import { LaneResponse, Signals } from "../src/server/edge/http1/exchange.js";
import { freshProgress, HAND_OFF, INCOMPLETE, readHead, type RequestHead } from "../src/server/edge/http1/head.js";
import { Inbox } from "../src/server/edge/http1/inbox.js";

const ROUTE = { path: "/api/messages", maxBodyBytes: 1000, maxHeaderBytes: 1024 };
const POST = "POST /api/messages HTTP/1.1\r\nhost: hub\r\ncontent-type: application/json\r\ncontent-length: 2\r\n";

function read(text: string): ReturnType<typeof readHead> {
  return readHead(Buffer.from(text, "latin1"), ROUTE);
}

test("reads a publish and a poll: method, target, headers by lower-case name, head and body sizes", () => {
  const post = read(`${POST}X-Forwarded-For:  10.0.0.1 \t\r\n\r\n{}`) as RequestHead;
  assert.equal(post.method, "POST");
  assert.equal(post.target, "/api/messages");
  assert.equal(post.headers["x-forwarded-for"], "10.0.0.1", "optional whitespace around the value is not part of it");
  assert.equal(post.headers["content-type"], "application/json");
  assert.equal(post.bodyBytes, 2);
  assert.equal(post.headBytes, Buffer.byteLength(POST) + "X-Forwarded-For:  10.0.0.1 \t\r\n\r\n".length);
  assert.equal(post.close, false);
  assert.equal(Object.getPrototypeOf(post.headers), null, "a header named like an Object member is only data");

  const get = read("GET /api/messages?channel=a&since=0&wait=20 HTTP/1.1\r\nHost: hub\r\nConnection: keep-alive, Close\r\n\r\n") as RequestHead;
  assert.equal(get.method, "GET");
  assert.equal(get.target, "/api/messages?channel=a&since=0&wait=20");
  assert.equal(get.bodyBytes, 0);
  assert.equal(get.close, true, "connection: close among other options");
});

test("reads a head that starts after earlier bytes (a pipelined request)", () => {
  const first = `${POST}\r\n{}`;
  const both = Buffer.from(first + "GET /api/messages HTTP/1.1\r\nhost: hub\r\n\r\n", "latin1");
  const second = readHead(both.subarray(Buffer.byteLength(first)), ROUTE) as RequestHead;
  assert.equal(second.method, "GET");
  assert.equal(second.headBytes, both.length - Buffer.byteLength(first));
});

const INCOMPLETE_CASES: ReadonlyArray<readonly [string, string]> = [
  ["nothing yet", ""],
  ["part of the method", "PO"],
  ["part of the path", "GET /api/mess"],
  ["a request line without its end", "POST /api/messages?channel=a HTTP/1."],
  ["a head without its blank line", `${POST}`],
];

for (const [what, text] of INCOMPLETE_CASES) {
  test(`waits for more: ${what}`, () => assert.equal(read(text), INCOMPLETE));
}

const HAND_OFF_CASES: ReadonlyArray<readonly [string, string]> = [
  ["another path", "GET /api/stream?channel=a HTTP/1.1\r\nhost: hub\r\n\r\n"],
  ["another path, known from its first bytes", "GET /healthz"],
  ["a path that only starts like the lane's", "GET /api/messagesX HTTP/1.1\r\nhost: hub\r\n\r\n"],
  ["a sub-path", "GET /api/messages/x HTTP/1.1\r\nhost: hub\r\n\r\n"],
  ["another method", "PUT /api/messages HTTP/1.1\r\nhost: hub\r\ncontent-length: 0\r\n\r\n"],
  ["HEAD", "HEAD /api/messages HTTP/1.1\r\nhost: hub\r\n\r\n"],
  ["OPTIONS (a CORS preflight)", "OPTIONS /api/messages HTTP/1.1\r\nhost: hub\r\n\r\n"],
  ["a lower-case method", "post /api/messages HTTP/1.1\r\nhost: hub\r\ncontent-length: 0\r\n\r\n"],
  ["HTTP/1.0", "GET /api/messages HTTP/1.0\r\nhost: hub\r\n\r\n"],
  ["an absolute-form target", "GET http://hub/api/messages HTTP/1.1\r\nhost: hub\r\n\r\n"],
  ["two spaces in the request line", "GET  /api/messages HTTP/1.1\r\nhost: hub\r\n\r\n"],
  ["a bare LF ending the request line", "GET /api/messages HTTP/1.1\nhost: hub\r\n\r\n"],
  ["a bare LF ending a header", "GET /api/messages HTTP/1.1\r\nhost: hub\nx: y\r\n\r\n"],
  ["a bare CR inside a header", "GET /api/messages HTTP/1.1\r\nhost: hub\rx\r\n\r\n"],
  ["a folded header (obs-fold)", "GET /api/messages HTTP/1.1\r\nhost: hub\r\nx-a: one\r\n two\r\n\r\n"],
  ["a space before the colon", "GET /api/messages HTTP/1.1\r\nhost : hub\r\n\r\n"],
  ["a header without a colon", "GET /api/messages HTTP/1.1\r\nhost hub\r\n\r\n"],
  ["a control byte in a value", "GET /api/messages HTTP/1.1\r\nhost: h\x01ub\r\n\r\n"],
  ["a non-ASCII byte in a value", "GET /api/messages HTTP/1.1\r\nhost: h\xe9\r\n\r\n"],
  ["a NUL in the target", "GET /api/messages?a=\x00 HTTP/1.1\r\nhost: hub\r\n\r\n"],
  ["a header named twice", "GET /api/messages HTTP/1.1\r\nhost: hub\r\nHost: other\r\n\r\n"],
  ["no host", "GET /api/messages HTTP/1.1\r\naccept: */*\r\n\r\n"],
  ["transfer-encoding", "POST /api/messages HTTP/1.1\r\nhost: hub\r\ntransfer-encoding: chunked\r\n\r\n"],
  ["transfer-encoding beside content-length", `${POST}transfer-encoding: chunked\r\n\r\n`],
  ["two content-lengths", `${POST}content-length: 2\r\n\r\n`],
  ["a content-length that is not plain digits", "POST /api/messages HTTP/1.1\r\nhost: hub\r\ncontent-length: +2\r\n\r\n"],
  ["a content-length list", "POST /api/messages HTTP/1.1\r\nhost: hub\r\ncontent-length: 2, 2\r\n\r\n"],
  ["a POST without content-length", "POST /api/messages HTTP/1.1\r\nhost: hub\r\n\r\n"],
  ["a body over the lane's bound", "POST /api/messages HTTP/1.1\r\nhost: hub\r\ncontent-length: 1001\r\n\r\n"],
  ["a GET with a body", "GET /api/messages HTTP/1.1\r\nhost: hub\r\ncontent-length: 3\r\n\r\n"],
  ["expect: 100-continue", `${POST}expect: 100-continue\r\n\r\n`],
  ["an upgrade", "GET /api/messages HTTP/1.1\r\nhost: hub\r\nupgrade: websocket\r\nconnection: upgrade\r\n\r\n"],
  ["connection: upgrade alone", "GET /api/messages HTTP/1.1\r\nhost: hub\r\nconnection: Upgrade\r\n\r\n"],
  ["a head over maxHeaderBytes", `GET /api/messages HTTP/1.1\r\nhost: hub\r\nx: ${"a".repeat(1100)}\r\n\r\n`],
  ["an unfinished head already over maxHeaderBytes", `GET /api/messages HTTP/1.1\r\nhost: hub\r\nx: ${"a".repeat(1100)}`],
  ["the HTTP/2 preface", "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"],
];

for (const [what, text] of HAND_OFF_CASES) {
  test(`hands off to node:http: ${what}`, () => assert.equal(read(text), HAND_OFF));
}

test("a head exactly at maxHeaderBytes is read; one byte over is handed off", () => {
  const start = "GET /api/messages HTTP/1.1\r\nhost: hub\r\nx: ";
  const fill = ROUTE.maxHeaderBytes - start.length - 4;
  assert.notEqual(read(`${start}${"a".repeat(fill)}\r\n\r\n`), HAND_OFF);
  assert.equal(read(`${start}${"a".repeat(fill + 1)}\r\n\r\n`), HAND_OFF);
});

test("the lane's response refuses a header node:http would refuse (CR LF injection, a bad name, non-ASCII)", async () => {
  // A real socket pair: nothing is written, as every header is checked before the write.
  const server = net.createServer();
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const client = net.connect((server.address() as net.AddressInfo).port, "127.0.0.1");
  const [socket] = (await once(server, "connection")) as [net.Socket];
  try {
    const owner = { closing: false, responded: () => assert.fail("nothing may be answered"), abandoned: () => {} };
    const res = new LaneResponse(socket, owner, false, "", new Signals());
    assert.throws(() => res.setHeader("x-a", "one\r\nset-cookie: evil=1"), TypeError);
    assert.throws(() => res.setHeader("bad name", "v"), TypeError);
    assert.throws(() => res.setHeader("x-a", "caf\u00e9"), TypeError);
    assert.throws(() => res.sendJson(200, "{}", { "x-b": "a\nb" }), TypeError);
    assert.equal(socket.bytesWritten, 0);
  } finally {
    client.destroy();
    socket.destroy();
    server.close();
  }
});

test("a head read a byte at a time: waits until its last byte, then reads as in one piece; hands off as soon as it can tell", () => {
  const text = `${POST}x-long: ${"v".repeat(300)}\r\n\r\n`;
  const bytes = Buffer.from(text, "latin1");
  const progress = freshProgress();
  for (let n = 1; n < bytes.length; n++) assert.equal(readHead(bytes.subarray(0, n), ROUTE, progress), INCOMPLETE, `after ${n} bytes`);
  assert.deepEqual(readHead(bytes, ROUTE, progress), readHead(bytes, ROUTE));

  const other = Buffer.from("GET /healthz HTTP/1.1\r\nhost: hub\r\n\r\n", "latin1");
  const looking = freshProgress();
  let handedAt = -1;
  for (let n = 1; n <= other.length && handedAt === -1; n++) if (readHead(other.subarray(0, n), ROUTE, looking) === HAND_OFF) handedAt = n;
  assert.equal(handedAt, "GET /h".length, "handed off at the first byte that is not the lane's path");
});

test("the inbox gathers pieces in order, consumes from the front, and never rewrites bytes already handed out", () => {
  const inbox = new Inbox();
  inbox.append(Buffer.from("ab"));
  assert.equal(inbox.bytes!.toString(), "ab");
  inbox.append(Buffer.from("cd"));
  inbox.append(Buffer.from("ef"));
  assert.equal(inbox.bytes!.toString(), "abcdef");
  const handed = inbox.bytes!.subarray(0, 3);
  inbox.consume(3);
  for (let i = 0; i < 2000; i++) inbox.append(Buffer.from("x"));
  assert.equal(handed.toString(), "abc", "a body handed to a handler keeps its bytes");
  assert.equal(inbox.bytes!.toString(), "def" + "x".repeat(2000));
  inbox.consume(inbox.bytes!.length);
  assert.equal(inbox.bytes, null);
  inbox.append(Buffer.from("z"));
  assert.equal(inbox.take()!.toString(), "z");
  assert.equal(inbox.bytes, null);
});
