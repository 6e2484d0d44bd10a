/** What the client and the hub both name: the delivery patterns and where the hub serves them by default. */

/** The four delivery patterns, top rung first: the order the client climbs down, the kinds the hub counts. */
export const TRANSPORTS = ["websocket", "sse", "long-poll", "poll"] as const;
export type TransportName = (typeof TRANSPORTS)[number];

export interface HubPaths {
  readonly messages: string;
  readonly stream: string;
  readonly websocket: string;
  readonly presence: string;
}

/** The hub's paths unless configured otherwise, and so the client's, the CLI's and the demo's. */
export const DEFAULT_PATHS: HubPaths = { messages: "/api/messages", stream: "/api/stream", websocket: "/api/ws", presence: "/api/presence" };
