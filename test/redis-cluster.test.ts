/**
 * The Redis engine on a Redis Cluster of three masters, started here on free loopback ports (temp
 * config and data directory, all removed at the end). Channels are picked so that each lives on a
 * different master; two engines (two hub nodes) publish, fan out, trim and resume across them, and a
 * hub over HTTP serves a resume from the cluster. Needs redis-server and redis-cli on PATH.
 */
import assert from "node:assert/strict";
import { spawn, spawnSync, type ChildProcess } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import type { Message } from "../src/protocol/index.js";
import { RedisEngine } from "../src/engines/redis.js";
import { serve } from "../src/index.js";
import { freePort, programAvailable, reachable, waitUntil } from "./helpers/brokers.js";

const available = (await programAvailable("redis-server")) && (await programAvailable("redis-cli"));

describe("redis engine on a three-master cluster", { skip: !available && "redis-server or redis-cli missing" }, () => {
  const dir = mkdtempSync(join(tmpdir(), "ladder-cluster-"));
  const servers: ChildProcess[] = [];
  const ports: number[] = [];
  /** One channel per master (the hash tag puts each on the master owning its slot), and another such set. */
  const channels: string[] = [];
  const trimChannels: string[] = [];
  let url = "";

  const cli = (...args: string[]): string => {
    const out = spawnSync("redis-cli", args, { encoding: "utf8", timeout: 20_000 });
    if (out.status !== 0) throw new Error(`redis-cli ${args.join(" ")}: ${out.stderr}${out.stdout}`);
    return out.stdout;
  };

  before(async () => {
    for (let i = 0; i < 3; i++) ports.push(await freePort());
    for (const port of ports) {
      const child = spawn(
        "redis-server",
        ["--port", String(port), "--bind", "127.0.0.1", "--cluster-enabled", "yes", "--cluster-config-file", join(dir, `nodes-${port}.conf`), "--dir", dir, "--save", "", "--appendonly", "no", "--daemonize", "no"],
        { stdio: "ignore" },
      );
      servers.push(child);
    }
    for (const port of ports) await waitUntil(`redis cluster node ${port}`, () => reachable(`redis://127.0.0.1:${port}`, 200));
    cli("--cluster", "create", ...ports.map((p) => `127.0.0.1:${p}`), "--cluster-replicas", "0", "--cluster-yes");
    for (const port of ports) {
      await waitUntil(`cluster_state:ok on ${port}`, () => /cluster_state:ok/.test(cli("-p", String(port), "CLUSTER", "INFO")), 20_000, 100);
    }
    // Pick channels whose slots belong to different masters.
    const nodes = cli("-p", String(ports[0]), "CLUSTER", "NODES");
    for (const [set, prefix] of [[channels, "cl"], [trimChannels, "trim"]] as const) {
      const owners = new Set<string>();
      for (let i = 0; set.length < 3 && i < 1000; i++) {
        const channel = `${prefix}.${i}`;
        const owner = ownerOf(nodes, Number(cli("-p", String(ports[0]), "CLUSTER", "KEYSLOT", `{${channel}}`).trim()));
        if (!owners.has(owner)) {
          owners.add(owner);
          set.push(channel);
        }
      }
      assert.equal(set.length, 3, "found a channel on each master");
    }
    url = `redis://127.0.0.1:${ports[0]}`;
  });

  after(async () => {
    await Promise.all(
      servers.map(
        (child) =>
          new Promise<void>((resolve) => {
            if (child.exitCode !== null) return resolve();
            child.once("exit", () => resolve());
            child.kill("SIGKILL");
          }),
      ),
    );
    rmSync(dir, { recursive: true, force: true });
  });

  test("two engines: publish on one, live on the other, in order, on every master", { timeout: 30_000 }, async () => {
    const a = new RedisEngine({ url, maxCount: 100, maxAgeMs: 60_000 });
    const b = new RedisEngine({ url, maxCount: 100, maxAgeMs: 60_000 });
    try {
      await Promise.all([a.whenReady(10_000), b.whenReady(10_000)]);
      const got = new Map<string, Message[]>();
      const unsubscribes = await Promise.all(channels.map((ch) => b.subscribe(ch, (m) => got.set(ch, [...(got.get(ch) ?? []), m]))));
      const published = new Map<string, string[]>();
      for (let i = 0; i < 20; i++) {
        for (const ch of channels) published.set(ch, [...(published.get(ch) ?? []), (await a.publish(ch, { i })).id]);
      }
      await waitUntil("live delivery on every channel", () => channels.every((ch) => (got.get(ch)?.length ?? 0) >= 20), 10_000);
      for (const ch of channels) {
        assert.deepEqual(got.get(ch)!.map((m) => m.id), published.get(ch), `live ${ch}`);
        const history = await b.read(ch, "0", 100);
        assert.deepEqual(history.messages.map((m) => m.id), published.get(ch), `history ${ch}`);
        const resumed = await b.read(ch, published.get(ch)![9]!, 100);
        assert.equal(resumed.gap, null);
        assert.deepEqual(resumed.messages.map((m) => (m.data as { i: number }).i), [10, 11, 12, 13, 14, 15, 16, 17, 18, 19]);
      }
      for (const unsubscribe of unsubscribes) unsubscribe();
    } finally {
      await Promise.all([a.close(), b.close()]);
    }
  });

  test("trimmed and unknown gaps are exact on every master", { timeout: 30_000 }, async () => {
    const engine = new RedisEngine({ url, maxCount: 5, maxAgeMs: 60_000 });
    try {
      await engine.whenReady(10_000);
      for (const trimmedChannel of trimChannels) {
        const ids: string[] = [];
        for (let i = 0; i < 12; i++) ids.push((await engine.publish(trimmedChannel, i)).id);
        const r = await engine.read(trimmedChannel, ids[2]!, 100);
        assert.deepEqual(r.gap, { channel: trimmedChannel, reason: "trimmed", since: ids[2], resume: ids[6] });
        assert.deepEqual(r.messages.map((m) => m.data), [7, 8, 9, 10, 11]);
        const future = await engine.read(trimmedChannel, "99999999999999-0", 10);
        assert.equal(future.gap?.reason, "unknown");
      }
    } finally {
      await engine.close();
    }
  });

  test("a hub over HTTP resumes from the cluster what another hub published", { timeout: 30_000 }, async () => {
    const [first, second] = await Promise.all([serve({ port: 0, engine: url }), serve({ port: 0, engine: url })]);
    try {
      await waitUntil("both hubs ready", () => first.hub.engine.ready() && second.hub.engine.ready(), 10_000);
      for (const ch of channels) {
        const ids: string[] = [];
        for (let i = 0; i < 5; i++) {
          const res = await fetch(`${first.url}/api/messages`, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ channel: ch, data: { i } }) });
          assert.equal(res.status, 201);
          ids.push(((await res.json()) as { id: string }).id);
        }
        const res = await fetch(`${second.url}/api/messages?channel=${ch}&since=${ids[1]}`);
        const body = (await res.json()) as Array<{ id: string }>;
        assert.deepEqual(body.map((m) => m.id), ids.slice(2));
        assert.equal(res.headers.get("ladder-cursor"), ids[4]);
      }
    } finally {
      await Promise.all([first.close(), second.close()]);
    }
  });
});

/** The node id of the master owning a slot, from CLUSTER NODES. */
function ownerOf(nodes: string, slot: number): string {
  for (const line of nodes.trim().split("\n")) {
    const fields = line.split(" ");
    if (!fields[2]?.includes("master")) continue;
    for (const range of fields.slice(8)) {
      const [lo, hi] = range.split("-").map(Number);
      if (slot >= lo! && slot <= (hi ?? lo)!) return fields[0]!;
    }
  }
  throw new Error(`no master owns slot ${slot}`);
}
