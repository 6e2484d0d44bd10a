/**
 * A TCP proxy in front of the hub that misbehaves the way real networks do: it can cut every connection,
 * refuse WebSocket upgrades (a proxy that drops them), hold SSE responses (a network that buffers them),
 * refuse SSE outright, or freeze (stop forwarding without closing). Loopback only.
 */
import { connect, createServer, type Server, type Socket } from "node:net";
import type { AddressInfo } from "node:net";

export interface ProxyRules {
  refuseUpgrades: boolean;
  /** `refuse`: answer 502 to GET /api/stream; `buffer`: forward the request but hold the response. */
  sse: "pass" | "refuse" | "buffer";
  /** Stop forwarding in both directions, keeping sockets open. */
  frozen: boolean;
  /** Refuse every new connection (the hub is "down"). */
  down: boolean;
}

export interface Proxy {
  readonly url: string;
  readonly rules: ProxyRules;
  /** Destroys every open connection (both sides). */
  cutAll(): void;
  readonly connections: () => number;
  close(): Promise<void>;
}

const BAD_GATEWAY = "HTTP/1.1 502 Bad Gateway\r\ncontent-type: text/plain\r\ncontent-length: 7\r\nconnection: close\r\n\r\nblocked";

export async function startProxy(targetUrl: string): Promise<Proxy> {
  const target = new URL(targetUrl);
  const rules: ProxyRules = { refuseUpgrades: false, sse: "pass", frozen: false, down: false };
  const pairs = new Set<[Socket, Socket]>();
  const server: Server = createServer((client) => {
    if (rules.down) {
      client.destroy();
      return;
    }
    const upstream = connect(Number(target.port), target.hostname);
    const pair: [Socket, Socket] = [client, upstream];
    pairs.add(pair);
    let holdResponses = false;
    const end = (): void => {
      client.destroy();
      upstream.destroy();
      pairs.delete(pair);
    };
    client.on("error", end);
    upstream.on("error", end);
    client.on("close", end);
    upstream.on("close", end);
    client.on("data", (chunk: Buffer) => {
      if (rules.frozen) return;
      const text = chunk.toString("latin1");
      if (rules.refuseUpgrades && /\r\nupgrade:\s*websocket/i.test(text)) {
        client.end(BAD_GATEWAY);
        upstream.destroy();
        return;
      }
      if (/^GET [^ ]*\/api\/stream/m.test(text)) {
        if (rules.sse === "refuse") {
          client.end(BAD_GATEWAY);
          upstream.destroy();
          return;
        }
        if (rules.sse === "buffer") holdResponses = true;
      }
      upstream.write(chunk);
    });
    upstream.on("data", (chunk: Buffer) => {
      if (rules.frozen || holdResponses) return;
      client.write(chunk);
    });
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address() as AddressInfo;
  const proxy: Proxy = {
    url: `http://127.0.0.1:${port}`,
    rules,
    cutAll() {
      for (const [a, b] of [...pairs]) {
        a.destroy();
        b.destroy();
      }
      pairs.clear();
    },
    connections: () => pairs.size,
    async close() {
      proxy.cutAll();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
  return proxy;
}
