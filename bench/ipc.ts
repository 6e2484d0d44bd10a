/** Messages between the bench (parent) and a server child over the Node IPC channel. */

/**
 * `nchan`: nginx with the Nchan module (bench/nchan.ts), when installed; not a Node child. `floor`: a raw
 * `node:net` server for the sse, websocket and long-poll patterns and single HTTP publishes only
 * (bench/floor.ts, bench/floor-stream.ts), never run by default.
 */
export type Impl = "ladder" | "baseline" | "nchan" | "floor";

export interface ServerStats {
  /** Subscribers held open: SSE streams, joined WebSockets, held long-polls. */
  readonly held: number;
  /** Open TCP connections accepted by the HTTP server. */
  readonly sockets: number;
  readonly rssKb: number;
  readonly heapUsed: number;
  readonly external: number;
  /** process.cpuUsage() of the server, µs (a cross-check of /proc/<pid>/stat). */
  readonly cpuUserUs: number;
  readonly cpuSystemUs: number;
}

export type ParentToChild = { readonly type: "gc" | "stats"; readonly ref: number };

export type ChildToParent =
  | { readonly type: "ready"; readonly url: string; readonly impl: Impl }
  | { readonly type: "gc-done"; readonly ref: number; readonly gc: boolean }
  | { readonly type: "stats"; readonly ref: number; readonly stats: ServerStats }
  | { readonly type: "fatal"; readonly message: string };
