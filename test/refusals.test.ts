/**
 * One refusal path: requests and upgrades are refused with the same status, code and headers (Retry-After
 * on 429/503, WWW-Authenticate on 401), and every refusal — the CORS preflight's included — is counted.
 */
import assert from "node:assert/strict";
import type { IncomingMessage } from "node:http";
import { test } from "node:test";
import { WebSocket } from "ws";
import { openSse, startHub } from "./helpers/server.js";

/** The answer to a WebSocket upgrade the server refuses: status, headers and the JSON error code. */
function refusedUpgrade(url: string, headers: Record<string, string> = {}): Promise<{ status: number; headers: IncomingMessage["headers"]; code: string }> {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(url.replace("http", "ws") + "/api/ws", { headers });
    ws.on("open", () => reject(new Error("the upgrade was accepted")));
    ws.on("error", () => undefined);
    ws.on("unexpected-response", (_req, res) => {
      let body = "";
      res.setEncoding("utf8");
      res.on("data", (chunk: string) => (body += chunk));
      res.on("end", () => {
        const code = (JSON.parse(body) as { error: { code: string } }).error.code;
        resolve({ status: res.statusCode ?? 0, headers: res.headers, code });
      });
    });
  });
}

async function refusals(url: string, code: string): Promise<number> {
  const text = await (await fetch(`${url}/metrics`)).text();
  const line = text.split("\n").find((l) => l.startsWith(`ladder_refusals_total{code="${code}"} `));
  return line ? Number(line.slice(line.lastIndexOf(" ") + 1)) : 0;
}

test("an upgrade refused while draining carries Retry-After, like a request refused then, and is counted", async () => {
  const running = await startHub({ metrics: true });
  try {
    await running.hub.drain(100);
    const upgrade = await refusedUpgrade(running.url);
    assert.equal(upgrade.status, 503);
    assert.equal(upgrade.code, "draining");
    assert.equal(upgrade.headers["retry-after"], "1");
    const stream = await fetch(`${running.url}/api/stream?channel=a`);
    assert.equal(stream.status, 503);
    assert.equal(stream.headers.get("retry-after"), "1");
    await stream.arrayBuffer();
    assert.equal(await refusals(running.url, "draining"), 2);
  } finally {
    await running.close();
  }
});

test("an upgrade past maxConnections carries Retry-After, like a stream refused then", async () => {
  const running = await startHub({ maxConnections: 1 });
  const sse = await openSse(`${running.url}/api/stream?channel=a`);
  try {
    const upgrade = await refusedUpgrade(running.url);
    assert.equal(upgrade.status, 429);
    assert.equal(upgrade.code, "too_many_connections");
    assert.equal(upgrade.headers["retry-after"], "1");
    const stream = await fetch(`${running.url}/api/stream?channel=b`);
    assert.equal(stream.status, 429);
    assert.equal(stream.headers.get("retry-after"), "1");
    await stream.arrayBuffer();
  } finally {
    sse.close();
    await running.close();
  }
});

test("an upgrade with a bad token is a 401 naming the Bearer scheme", async () => {
  const running = await startHub({ auth: { jwt: { secret: "s".repeat(32) } } });
  try {
    const upgrade = await refusedUpgrade(running.url, { authorization: "Bearer not-a-jwt" });
    assert.equal(upgrade.status, 401);
    assert.equal(upgrade.headers["www-authenticate"], "Bearer");
  } finally {
    await running.close();
  }
});

test("a CORS preflight from an origin not allowed is a 403 origin_not_allowed, counted with the other refusals", async () => {
  const running = await startHub({ metrics: true, cors: { origins: ["https://app.example"] } });
  try {
    const res = await fetch(`${running.url}/api/messages`, {
      method: "OPTIONS",
      headers: { origin: "https://evil.example", "access-control-request-method": "POST" },
    });
    assert.equal(res.status, 403);
    assert.equal(res.headers.get("access-control-allow-origin"), null);
    assert.equal(res.headers.get("vary"), "Origin");
    assert.equal(((await res.json()) as { error: { code: string } }).error.code, "origin_not_allowed");
    assert.equal(await refusals(running.url, "origin_not_allowed"), 1);
  } finally {
    await running.close();
  }
});
