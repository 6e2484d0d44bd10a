/** Test helpers: HTTP/1.1 written by hand on a raw (or TLS) socket, and a publish on a connection of its own. */
import http from "node:http";
import https from "node:https";
import net from "node:net";
import tls from "node:tls";

const noop = (): void => {};

export interface Raw {
  readonly socket: net.Socket;
  readonly text: () => string;
  /** Ms from the connection being ready (TLS: handshake done) to its close. */
  readonly closed: Promise<number>;
}

/** An HTTP/1.1 connection we write by hand, over TLS (ALPN http/1.1) when the URL is https. */
export function rawHttp1(url: string, options: { handshake?: boolean; localAddress?: string } = {}): Promise<Raw> {
  const { hostname, port, protocol } = new URL(url);
  const secure = protocol === "https:" && options.handshake !== false;
  const socket = secure
    ? tls.connect({ host: hostname, port: Number(port), rejectUnauthorized: false, ALPNProtocols: ["http/1.1"] })
    : net.connect({ host: hostname, port: Number(port), ...(options.localAddress ? { localAddress: options.localAddress } : {}) });
  socket.on("error", noop);
  let received = "";
  socket.on("data", (chunk: Buffer) => (received += chunk.toString("latin1")));
  return new Promise((resolve, reject) => {
    socket.once(secure ? "secureConnect" : "connect", () => {
      const readyAt = Date.now();
      const closed = new Promise<number>((done) => socket.once("close", () => done(Date.now() - readyAt)));
      resolve({ socket, text: () => received, closed });
    });
    socket.once("close", () => reject(new Error("closed before it was ready")));
  });
}

/**
 * An SSE stream written by hand, ready (its `ready` event received). Its request is complete, so
 * requestTimeout must not end its response.
 */
export async function rawSse(url: string, channel: string): Promise<Raw> {
  const raw = await rawHttp1(url);
  raw.socket.write(`GET /api/stream?channel=${channel} HTTP/1.1\r\nhost: hub\r\naccept: text/event-stream\r\n\r\n`);
  const deadline = Date.now() + 5000;
  while (!raw.text().includes("event: ready")) {
    if (Date.now() > deadline) throw new Error(`no ready event in ${JSON.stringify(raw.text())}`);
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
  return raw;
}

/** The ids of the message events a {@link rawSse} stream received; the `ready` event carries the starting cursor as its id. */
export function rawSseIds(raw: Raw): string[] {
  return raw
    .text()
    .split("\n\n")
    .filter((event) => !event.includes("event: ready"))
    .flatMap((event) => [...event.matchAll(/^id: (.+)$/gm)].map((m) => m[1]!));
}

/**
 * Publishes on a connection of its own that closes after the answer (so the hub's socket count is only
 * the subscribers'); over TLS the hub's self-signed certificate is not checked.
 */
export function publishOnce(url: string, channel: string, data: unknown): Promise<string> {
  const body = JSON.stringify({ channel, data });
  const request = url.startsWith("https:") ? https.request : http.request;
  return new Promise((resolve, reject) => {
    const headers = { "content-type": "application/json", connection: "close" };
    const req = request(`${url}/api/messages`, { method: "POST", headers, agent: false, rejectUnauthorized: false }, (res) => {
      let text = "";
      res.on("data", (chunk: Buffer) => (text += chunk));
      res.on("end", () => (res.statusCode === 201 ? resolve((JSON.parse(text) as { id: string }).id) : reject(new Error(`publish: ${res.statusCode} ${text}`))));
    });
    req.on("error", reject);
    req.end(body);
  });
}
