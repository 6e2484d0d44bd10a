/**
 * ladder/react in jsdom with React 19 StrictMode, against a real hub: one client subscription per channel
 * however many components use it and however often they re-render, each message rendered and handed to
 * onMessage once, presence live, the connection state shown, and everything released on unmount.
 */
import assert from "node:assert/strict";
import { test } from "node:test";
import { JSDOM } from "jsdom";
import { WebSocket } from "ws";
import { createClient, type WebSocketConstructor } from "../src/client/index.js";
import { sleep, startHub, publish } from "./helpers/server.js";

const dom = new JSDOM("<!doctype html><div id=root></div>");
Object.assign(globalThis, { window: dom.window, document: dom.window.document, navigator: dom.window.navigator, IS_REACT_ACT_ENVIRONMENT: true });
const React = await import("react");
const { createRoot } = await import("react-dom/client");
const { LadderProvider, useChannel, useConnectionState, usePresence } = await import("../src/react/index.js");
const h = React.createElement;

interface Price {
  readonly bid: number;
}

test("StrictMode: one subscription per channel, each message once, presence and state live, released on unmount", async () => {
  const running = await startHub({ presence: ["room"] });
  const client = createClient<{ prices: Price }>({ url: running.url, transport: ["websocket"], WebSocket: WebSocket as unknown as WebSocketConstructor, clientId: "me" });
  const subscribe = client.subscribe.bind(client);
  const calls: string[] = [];
  const subs: Array<{ readonly active: boolean }> = [];
  client.subscribe = ((channel: string, options?: object) => {
    calls.push(channel);
    const sub = subscribe(channel, options);
    subs.push(sub);
    return sub;
  }) as typeof client.subscribe;
  const handled: number[] = [];
  let renders = 0;

  function Prices(props: { readonly tag: string; readonly onBid?: (bid: number) => void }): React.ReactElement {
    renders++;
    const { messages, state } = useChannel<Price, { prices: Price }, "prices">("prices", { onMessage: (m) => props.onBid?.(m.data.bid) });
    return h("p", { id: props.tag }, `${state}:${messages.map((m) => m.data.bid).join(",")}`);
  }
  function Room(): React.ReactElement {
    const members = usePresence("room");
    const { transport } = useConnectionState();
    return h("p", { id: "room" }, `${transport}:${members.map((m) => m.client).join(",")}`);
  }
  function App(props: { readonly n: number }): React.ReactElement {
    // A new onMessage function every render: no re-subscription for it.
    return h(LadderProvider<{ prices: Price }>, { client, children: [h(Prices, { key: "a", tag: "a", onBid: (bid) => handled.push(bid + props.n * 0) }), h(Prices, { key: "b", tag: "b" }), h(Room, { key: "r" })] });
  }

  // StrictMode at the root: React 19 double-invokes effects only in a tree that is strict from its root.
  const root = createRoot(dom.window.document.getElementById("root")!);
  const text = (id: string): string => dom.window.document.getElementById(id)?.textContent ?? "";
  const until = async (what: string, ok: () => boolean): Promise<void> => {
    const deadline = Date.now() + 5000;
    while (!ok()) {
      if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}: a=${text("a")} room=${text("room")}`);
      await React.act(() => sleep(20));
    }
  };
  try {
    await React.act(async () => root.render(h(React.StrictMode, null, h(App, { n: 0 }))));
    await until("connected", () => text("a").startsWith("connected:") && text("room") === "websocket:me");
    // Fast re-renders with new props.
    for (let n = 1; n <= 20; n++) await React.act(async () => root.render(h(React.StrictMode, null, h(App, { n }))));
    await React.act(async () => {
      for (const bid of [1, 2, 3]) await publish(running.url, { bid }, "prices");
    });
    await until("three prices", () => text("a") === "connected:1,2,3" && text("b") === "connected:1,2,3");
    await React.act(() => sleep(100));
    assert.equal(text("a"), "connected:1,2,3", "no message twice");
    assert.deepEqual(handled, [1, 2, 3], "onMessage once per message");
    assert.deepEqual(calls.filter((c) => c === "prices"), ["prices"], "one client subscription for two components, StrictMode and 20 re-renders");
    assert.deepEqual(calls.filter((c) => c === "room"), ["room"]);
    assert.ok(renders > 20);
    await React.act(async () => root.unmount());
    await sleep(20);
    assert.deepEqual(subs.map((s) => s.active), subs.map(() => false), "every subscription released on unmount");
  } finally {
    client.close();
    await running.close();
  }
});
