/** A ready-to-run node:http server around a hub, with a graceful drain on SIGTERM/SIGINT. */
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { LadderError } from "../protocol/index.js";
import { rejectUpgrade } from "./http.js";
import { Hub } from "./hub.js";
import type { HubOptions } from "./options.js";

export interface ServeOptions extends HubOptions {
  readonly port?: number;
  readonly host?: string;
  /** Extra request handling for paths the hub does not own (the demo page, static files). */
  readonly fallback?: (req: import("node:http").IncomingMessage, res: import("node:http").ServerResponse) => void;
}

export interface RunningServer {
  readonly hub: Hub;
  readonly server: Server;
  readonly url: string;
  /** Drains the hub, then closes the server. */
  close(): Promise<void>;
}

export async function serve(options: ServeOptions = {}): Promise<RunningServer> {
  const hub = new Hub(options);
  const server = createServer();
  server.on("request", (req, res) => hub.handleRequest(req, res, options.fallback ? () => options.fallback!(req, res) : undefined));
  server.on("upgrade", (req, socket, head) => {
    if (!hub.handleUpgrade(req, socket, head)) rejectUpgrade(socket, new LadderError("not_found", "no WebSocket endpoint here"));
  });
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(options.port ?? 8080, options.host ?? "127.0.0.1", () => {
      server.off("error", reject);
      resolve();
    });
  });
  const address = server.address() as AddressInfo;
  const host = address.family === "IPv6" ? `[${address.address}]` : address.address;
  let closing: Promise<void> | null = null;
  return {
    hub,
    server,
    url: `http://${host}:${address.port}`,
    close() {
      closing ??= (async () => {
        const closed = new Promise<void>((resolve) => server.close(() => resolve()));
        await hub.drain();
        await hub.close();
        server.closeAllConnections();
        await closed;
      })();
      return closing;
    },
  };
}
