/**
 * The CLI at run time, real processes only: failures a user meets (port in use, hub down, a refusal) as
 * one `ladder: …` line with exit code 1; `publish` from an argument, a file or stdin; `tail` one message
 * per line, resuming across a hub restart and saying where messages were lost; /metrics when it is off.
 */
import assert from "node:assert/strict";
import { spawn, spawnSync, type ChildProcessWithoutNullStreams } from "node:child_process";
import { mkdtempSync, writeFileSync } from "node:fs";
import { createServer, type Server } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";
import { listeningUrl } from "./helpers/cli.js";

const bin = "bin/ladder.js";

function ladder(args: string[], input?: string): { status: number | null; stdout: string; stderr: string } {
  return spawnSync(process.execPath, [bin, ...args], { encoding: "utf8", timeout: 15_000, input });
}

function assertOneLine(stderr: string, message: RegExp, what: string): void {
  const lines = stderr.trimEnd().split("\n");
  assert.equal(lines.length, 1, `${what}: one line, got:\n${stderr}`);
  assert.match(lines[0]!, message, what);
}

/** A TCP port nothing listens on: taken, then given back. */
async function freePort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address() as { port: number };
  await new Promise((resolve) => server.close(resolve));
  return port;
}

interface Hub {
  readonly child: ChildProcessWithoutNullStreams;
  readonly url: string;
  stop(): Promise<void>;
}

async function startHub(args: string[]): Promise<Hub> {
  const child = spawn(process.execPath, [bin, "serve", "--log-level", "warn", ...args]);
  const url = await listeningUrl(child);
  const stop = async (): Promise<void> => {
    if (child.exitCode !== null) return;
    const exited = new Promise((resolve) => child.once("exit", resolve));
    child.kill("SIGTERM");
    await exited;
  };
  return { child, url, stop };
}

/** Collects a child's output and waits for what a test expects in it. */
function watch(stream: NodeJS.ReadableStream): { text: () => string; until: (pattern: RegExp, timeoutMs?: number) => Promise<string> } {
  let text = "";
  const waiters = new Set<() => void>();
  stream.on("data", (d: Buffer) => {
    text += d.toString();
    for (const wake of waiters) wake();
  });
  return {
    text: () => text,
    until: (pattern, timeoutMs = 15_000) =>
      new Promise((resolve, reject) => {
        const check = (): void => {
          if (pattern.test(text)) {
            waiters.delete(check);
            clearTimeout(timer);
            resolve(text);
          }
        };
        const timer = setTimeout(() => {
          waiters.delete(check);
          reject(new Error(`timed out waiting for ${pattern} in:\n${text}`));
        }, timeoutMs);
        waiters.add(check);
        check();
      }),
  };
}

test("a port in use, a hub that is down, a refusal: one line each, exit code 1", async () => {
  const holder: Server = createServer();
  await new Promise<void>((resolve) => holder.listen(0, "127.0.0.1", resolve));
  const busy = (holder.address() as { port: number }).port;
  try {
    const out = ladder(["serve", "--port", String(busy), "--no-demo"]);
    assert.equal(out.status, 1, out.stderr);
    assertOneLine(out.stderr, new RegExp(`^ladder: port ${busy} on 127.0.0.1 is already in use: .*--port`), "port in use");
  } finally {
    await new Promise((resolve) => holder.close(resolve));
  }
  const down = `http://127.0.0.1:${await freePort()}`;
  const publish = ladder(["publish", "prices", "1", "--url", down]);
  assert.equal(publish.status, 1);
  assertOneLine(publish.stderr, new RegExp(`^ladder: cannot reach the hub at ${down} \\(ECONNREFUSED\\): is ladder serve running there\\? Point to it with --url$`), "publish, hub down");
  const tail = ladder(["tail", "prices", "--url", down]);
  assert.equal(tail.status, 1);
  assertOneLine(tail.stderr, /^ladder: cannot reach the hub at .* \(ECONNREFUSED\)/, "tail, hub down");

  const hub = await startHub(["--port", "0", "--no-demo", "--max-message-bytes", "1024"]);
  try {
    const big = ladder(["publish", "prices", JSON.stringify("x".repeat(2000)), "--url", hub.url]);
    assert.equal(big.status, 1);
    assertOneLine(big.stderr, /^ladder: the hub refused the message: 413 payload_too_large: /, "refused");
  } finally {
    await hub.stop();
  }
});

test("publish: JSON from the argument, a file or stdin; --string sends text as it is", async () => {
  const hub = await startHub(["--port", "0", "--no-demo"]);
  try {
    const dir = mkdtempSync(join(tmpdir(), "ladder-publish-"));
    const file = join(dir, "data.json");
    writeFileSync(file, '{"from": "file"}');
    const runs: Array<[string[], string | undefined]> = [
      [["publish", "p", '{"price": 1}'], undefined],
      [["publish", "p", "{price: 1}", "--string"], undefined],
      [["publish", "p", "--data-file", file], undefined],
      [["publish", "p", "--data-file", "-"], '[1, 2]'],
      [["publish", "p", "--data-file", "-", "--string"], "plain text"],
    ];
    for (const [args, input] of runs) {
      const out = ladder([...args, "--url", hub.url], input);
      assert.equal(out.status, 0, `${args.join(" ")}: ${out.stderr}`);
      assert.match(out.stdout, /"channel":"p"/);
    }
    const res = await fetch(`${hub.url}/api/messages?channel=p`);
    const data = ((await res.json()) as Array<{ data: unknown }>).map((m) => m.data);
    assert.deepEqual(data, [{ price: 1 }, "{price: 1}", { from: "file" }, [1, 2], "plain text"]);
    const both = ladder(["publish", "p", "1", "--data-file", file, "--url", hub.url]);
    assert.equal(both.status, 2);
    assertOneLine(both.stderr, /^ladder: usage: ladder publish/, "argument and file");
  } finally {
    await hub.stop();
  }
});

test("tail: one line per message, --json for machines, resumes across a hub restart and shows the gap", async () => {
  let hub = await startHub(["--port", "0", "--no-demo", "--heartbeat", "1"]);
  const port = new URL(hub.url).port;
  const human = spawn(process.execPath, [bin, "tail", "t1", "--url", hub.url]);
  const machine = spawn(process.execPath, [bin, "tail", "t1", "--json", "--url", hub.url]);
  const humanOut = watch(human.stdout);
  const humanErr = watch(human.stderr);
  const machineOut = watch(machine.stdout);
  const machineErr = watch(machine.stderr);
  try {
    await humanErr.until(/tailing t1 on http:\/\/127\.0\.0\.1:\d+ over sse/);
    await machineErr.until(/tailing t1/);
    assert.equal(ladder(["publish", "t1", '{"n":1}', "--url", hub.url]).status, 0);
    await humanOut.until(/^\d+-\d+ t1 \{"n":1\}\n$/);
    await machineOut.until(/\n/);
    const first = JSON.parse(machineOut.text().trim()) as { id: string; channel: string; data: unknown; time: number };
    assert.equal(first.channel, "t1");
    assert.deepEqual(first.data, { n: 1 });
    assert.equal(typeof first.time, "number");

    // The hub drains and comes back on the same port with an empty memory engine: tail stays, says so, resumes.
    await hub.stop();
    await humanErr.until(/connection lost; reconnecting/);
    hub = await startHub(["--port", port, "--no-demo", "--heartbeat", "1"]);
    await humanErr.until(/reconnected t1/);
    await machineErr.until(/reconnected t1/);
    assert.equal(ladder(["publish", "t1", '{"n":2}', "--url", hub.url]).status, 0);
    const text = await humanOut.until(/t1 \{"n":2\}\n$/);
    assert.deepEqual(text.trim().split("\n").map((line) => line.split(" ").slice(1).join(" ")), ['t1 {"n":1}', 't1 {"n":2}']);
    // The restarted hub cannot place the old cursor: the gap is said, on stderr for people, as JSON with --json.
    assert.match(humanErr.text(), /gap on t1 \(unknown\): messages after \d+-\d+ up to \d+-\d+ were not delivered/);
    const machineLines = (await machineOut.until(/"n":2/)).trim().split("\n").map((line) => JSON.parse(line) as Record<string, unknown>);
    assert.ok(machineLines.some((line) => (line.gap as { reason?: string } | undefined)?.reason === "unknown"), machineOut.text());
    assert.deepEqual(machineLines.at(-1)!.data, { n: 2 });
    assert.doesNotMatch(humanOut.text() + machineOut.text(), /retry:|event:|data:/, "not the SSE wire");
  } finally {
    human.kill("SIGINT");
    machine.kill("SIGINT");
    await hub.stop();
  }
});

test("/metrics when metrics are off says how to turn them on (with the demo on or off); with --metrics=yes it serves them", async () => {
  for (const args of [[], ["--no-demo"]]) {
    const hub = await startHub(["--port", "0", ...args]);
    try {
      const res = await fetch(`${hub.url}/metrics`);
      assert.equal(res.status, 404);
      const { error } = (await res.json()) as { error: { code: string; message: string } };
      assert.equal(error.code, "metrics_disabled");
      assert.match(error.message, /--metrics/);
      assert.equal((await fetch(`${hub.url}/nothing-here`)).status, 404);
    } finally {
      await hub.stop();
    }
  }
  const hub = await startHub(["--port", "0", "--metrics=yes", "--demo", "off"]);
  try {
    const res = await fetch(`${hub.url}/metrics`);
    assert.equal(res.status, 200);
    assert.match(await res.text(), /ladder_connections/);
    assert.equal((await fetch(`${hub.url}/`)).status, 404, "--demo off");
  } finally {
    await hub.stop();
  }
});
