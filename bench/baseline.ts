/**
 * The baseline: about the least a Node process can do to serve the same wire contract, so Ladder's
 * figures have something to be read against. One node:http server (node:https or node:http2 for the TLS
 * patterns), one `ws` server, one channel's
 * history in an array; every publish is serialised once per pattern and written to every open response
 * or socket, with no per-subscriber bookkeeping, no resume checks, no slow-consumer policy and no
 * heartbeats. SSE streams and WebSockets are kept per channel (the many-small-channels shape); polls read one
 * history whatever their channel (the bench polls one channel). WebSocket publishes are acknowledged, as a
 * plain server that assigns an id and answers would.
 */
import { createServer, type IncomingMessage, type Server as HttpServer, type ServerResponse } from "node:http";
import { createSecureServer } from "node:http2";
import { createServer as createHttpsServer } from "node:https";
import type { AddressInfo, Socket } from "node:net";
import { WebSocketServer, type WebSocket } from "ws";

interface StoredMessage {
  readonly id: number;
  readonly channel: string;
  readonly data: unknown;
  readonly time: number;
}

interface HeldPoll {
  readonly res: ServerResponse;
  readonly timer: NodeJS.Timeout;
}

const HISTORY = 1000;
const MAX_LIMIT = 1000;
const MAX_BODY = 64 * 1024;

export interface BaselineServer {
  readonly url: string;
  held(): number;
  sockets(): number;
  close(): Promise<void>;
}

/** TLS for the `sse-tls` and `sse-h2` patterns: HTTP/1.1 only, or HTTP/2 with HTTP/1.1 as the fallback. */
export interface BaselineTls {
  readonly cert: string | Buffer;
  readonly key: string | Buffer;
  readonly http2: boolean;
  readonly maxConcurrentStreams: number;
}

export async function startBaseline(port = 0, host = "127.0.0.1", tls: BaselineTls | null = null): Promise<BaselineServer> {
  const history: StoredMessage[] = [];
  let nextId = 1;
  const streams = new Map<string, Set<ServerResponse>>();
  let streamCount = 0;
  const polls = new Set<HeldPoll>();
  const sockets = new Set<Socket>();
  const joined = new Map<string, Set<WebSocket>>();
  let joinedCount = 0;
  const add = <T>(map: Map<string, Set<T>>, channel: string, member: T): void => {
    let set = map.get(channel);
    if (!set) map.set(channel, (set = new Set()));
    set.add(member);
  };
  const remove = <T>(map: Map<string, Set<T>>, channel: string, member: T): boolean => {
    const set = map.get(channel);
    if (!set || !set.delete(member)) return false;
    if (set.size === 0) map.delete(channel);
    return true;
  };

  const json = (res: ServerResponse, status: number, body: string): void => {
    res.writeHead(status, { "content-type": "application/json; charset=utf-8", "content-length": Buffer.byteLength(body), "cache-control": "no-store" });
    res.end(body);
  };

  const after = (since: number, limit: number): StoredMessage[] => {
    if (history.length === 0) return [];
    const first = history[0]!.id;
    const start = Math.max(0, since + 1 - first);
    return history.slice(start, start + limit);
  };

  const broadcast = (message: StoredMessage): void => {
    const sse = streams.get(message.channel);
    if (sse) {
      const event = `id: ${message.id}\ndata: ${JSON.stringify(message.data)}\n\n`;
      for (const res of sse) res.write(event);
    }
    const sockets = joined.get(message.channel);
    if (sockets) {
      const frame = JSON.stringify({ type: "message", room: message.channel, id: String(message.id), data: message.data, time: message.time });
      for (const ws of sockets) ws.send(frame);
    }
    if (polls.size > 0) {
      const body = JSON.stringify([{ id: String(message.id), channel: message.channel, data: message.data, time: message.time }]);
      for (const poll of polls) {
        clearTimeout(poll.timer);
        json(poll.res, 200, body);
      }
      polls.clear();
    }
  };

  const accept = (channel: string, data: unknown): StoredMessage => {
    const message: StoredMessage = { id: nextId++, channel, data, time: Date.now() };
    history.push(message);
    if (history.length > HISTORY) history.shift();
    broadcast(message);
    return message;
  };

  const publish = (req: IncomingMessage, res: ServerResponse): void => {
    const chunks: Buffer[] = [];
    let size = 0;
    req.on("data", (chunk: Buffer) => {
      size += chunk.length;
      if (size <= MAX_BODY) chunks.push(chunk);
    });
    req.on("end", () => {
      let body: { channel?: unknown; data?: unknown };
      try {
        if (size > MAX_BODY) throw new Error("too large");
        body = JSON.parse(Buffer.concat(chunks).toString("utf8")) as typeof body;
      } catch {
        json(res, 400, '{"error":{"code":"bad_json"}}');
        return;
      }
      const message = accept(typeof body.channel === "string" ? body.channel : "general", body.data);
      json(res, 201, `{"id":"${message.id}","channel":${JSON.stringify(message.channel)}}`);
    });
  };

  const poll = (res: ServerResponse, url: URL): void => {
    const since = Number(url.searchParams.get("since") ?? "0") || 0;
    const limit = Math.min(MAX_LIMIT, Number(url.searchParams.get("limit") ?? "100") || 100);
    const waitMs = Math.min(30, Number(url.searchParams.get("wait") ?? "0") || 0) * 1000;
    const messages = after(since, limit);
    if (messages.length > 0 || waitMs === 0) {
      json(res, 200, JSON.stringify(messages.map((m) => ({ id: String(m.id), channel: m.channel, data: m.data, time: m.time }))));
      return;
    }
    const held: HeldPoll = {
      res,
      timer: setTimeout(() => {
        polls.delete(held);
        json(res, 200, "[]");
      }, waitMs),
    };
    polls.add(held);
    res.once("close", () => {
      if (polls.delete(held)) clearTimeout(held.timer);
    });
  };

  const stream = (req: IncomingMessage, res: ServerResponse, url: URL): void => {
    const channel = url.searchParams.get("channel") ?? "general";
    req.socket.setNoDelay(true);
    // HTTP/2 forbids connection headers.
    const keepAlive: Record<string, string> = req.httpVersionMajor === 1 ? { connection: "keep-alive" } : {};
    res.writeHead(200, { "content-type": "text/event-stream; charset=utf-8", "cache-control": "no-cache", ...keepAlive });
    res.write("retry: 2000\n\n");
    add(streams, channel, res);
    streamCount++;
    res.once("close", () => {
      if (remove(streams, channel, res)) streamCount--;
    });
  };

  const handler = (req: IncomingMessage, res: ServerResponse): void => {
    const url = new URL(req.url ?? "/", "http://baseline.invalid");
    if (url.pathname === "/api/messages" && req.method === "POST") publish(req, res);
    else if (url.pathname === "/api/messages" && req.method === "GET") poll(res, url);
    else if (url.pathname === "/api/stream" && req.method === "GET") stream(req, res, url);
    else json(res, 404, '{"error":{"code":"not_found"}}');
  };
  // With HTTP/2 the handler gets node:http2's compatibility objects, which answer every call made here as
  // node:http's do; the casts only tell TypeScript so. HTTP/1.1 stays the fallback for the publisher and ws.
  const server: HttpServer =
    tls === null
      ? createServer(handler)
      : tls.http2
        ? (createSecureServer(
            { cert: tls.cert, key: tls.key, allowHTTP1: true, settings: { maxConcurrentStreams: tls.maxConcurrentStreams } },
            handler as unknown as Parameters<typeof createSecureServer>[1],
          ) as unknown as HttpServer)
        : createHttpsServer({ cert: tls.cert, key: tls.key }, handler);
  server.on("connection", (socket: Socket) => {
    sockets.add(socket);
    socket.once("close", () => sockets.delete(socket));
  });

  const wss = new WebSocketServer({ server, path: "/api/ws", perMessageDeflate: false, clientTracking: false });
  wss.on("connection", (ws) => {
    const rooms = new Set<string>();
    ws.on("message", (data) => {
      let frame: { type?: unknown; room?: unknown; data?: unknown; ref?: unknown };
      try {
        frame = JSON.parse(String(data)) as typeof frame;
      } catch {
        return;
      }
      if (typeof frame.room !== "string") return;
      if (frame.type === "join") {
        if (!rooms.has(frame.room)) {
          rooms.add(frame.room);
          add(joined, frame.room, ws);
          joinedCount++;
        }
        ws.send(JSON.stringify({ type: "joined", room: frame.room, cursor: String(nextId - 1) }));
      } else if (frame.type === "publish") {
        const message = accept(frame.room, frame.data);
        ws.send(JSON.stringify({ type: "ack", ref: frame.ref, id: String(message.id), room: message.channel }));
      }
    });
    const leave = (): void => {
      for (const room of rooms) if (remove(joined, room, ws)) joinedCount--;
      rooms.clear();
    };
    ws.on("close", leave);
    ws.on("error", leave);
  });

  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(port, host, () => resolve());
  });
  const address = server.address() as AddressInfo;
  return {
    url: `${tls ? "https" : "http"}://${address.address}:${address.port}`,
    held: () => streamCount + polls.size + joinedCount,
    sockets: () => sockets.size,
    close: async () => {
      for (const poll of polls) clearTimeout(poll.timer);
      wss.close();
      for (const socket of sockets) socket.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}
