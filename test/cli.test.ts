/** The `ladder` command: help, settings from flags, environment and a config file, and bad settings. */
import assert from "node:assert/strict";
import { spawn, spawnSync } from "node:child_process";
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";
import { resolveSettings, SETTINGS } from "../src/cli/settings.js";

const bin = "bin/ladder.js";

test("--help lists every option with its environment variable", () => {
  const out = spawnSync(process.execPath, [bin, "serve", "--help"], { encoding: "utf8" });
  assert.equal(out.status, 0);
  for (const s of SETTINGS) {
    assert.ok(out.stdout.includes(`--${s.flag}`), s.flag);
    assert.ok(out.stdout.includes(s.env), s.env);
  }
  assert.ok(out.stdout.includes("--config"));
});

test("precedence: flag > environment > config file > default", () => {
  const dir = mkdtempSync(join(tmpdir(), "ladder-cli-"));
  const config = join(dir, "ladder.json");
  writeFileSync(config, JSON.stringify({ port: 1111, host: "0.0.0.0", historySize: 7, maxWait: 12, channels: [{ match: "p.*", slowConsumer: "latest" }] }));
  const s = resolveSettings({ config, port: "3333" }, { LADDER_PORT: "2222", LADDER_HOST: "127.0.0.2" });
  assert.equal(s.port, 3333);
  assert.equal(s.host, "127.0.0.2");
  assert.equal(s.historySize, 7);
  assert.equal(s.maxWaitSeconds, 12);
  assert.deepEqual(s.channels, [{ match: "p.*", slowConsumer: "latest" }]);
  const fromEnvOnly = resolveSettings({}, { LADDER_HEARTBEAT: "2.5", LADDER_SLOW_CONSUMER: "latest" });
  assert.equal(fromEnvOnly.heartbeatMs, 2500);
  assert.equal(fromEnvOnly.slowConsumer, "latest");
  assert.equal(resolveSettings({}, {}).port, undefined, "default left to serve()");
  const limits = resolveSettings(
    { "trust-proxy": "loopback, 10.0.0.0/8", "headers-timeout": "2.5", "keep-alive-timeout": "65" },
    { LADDER_REQUEST_TIMEOUT: "20", LADDER_MAX_HEADER_BYTES: "8192" },
  );
  assert.deepEqual(limits.trustProxy, ["loopback", "10.0.0.0/8"]);
  assert.equal(limits.headersTimeoutMs, 2500);
  assert.equal(limits.requestTimeoutMs, 20_000);
  assert.equal(limits.maxHeaderBytes, 8192);
  assert.equal(limits.keepAliveTimeoutMs, 65_000);
});

test("bad settings are refused with a clear message and exit code 2", () => {
  const dir = mkdtempSync(join(tmpdir(), "ladder-cli-"));
  const badConfig = join(dir, "bad.json");
  writeFileSync(badConfig, '{"prot": 1}');
  const cases: Array<[string[], NodeJS.ProcessEnv, RegExp]> = [
    [["serve", "--port", "abc"], {}, /port: expected a whole number/],
    [["serve", "--slow-consumer", "never"], {}, /expected disconnect or latest/],
    [["serve", "--nope"], {}, /Unknown option/],
    [["serve", "--config", badConfig], {}, /unknown key prot/],
    [["serve", "--config", join(dir, "missing.json")], {}, /cannot read config file/],
    [["serve"], { LADDER_MAX_WAIT: "-3" }, /expected seconds/],
    [["frobnicate"], {}, /unknown command/],
    [["serve", "--port", "0", "--trust-proxy", "10.0.0.0/99"], {}, /trustProxy: "10.0.0.0\/99" is not an address/],
    [["serve", "--port", "0", "--headers-timeout", "40", "--request-timeout", "30"], {}, /headersTimeoutMs must not exceed requestTimeoutMs/],
  ];
  for (const [args, env, message] of cases) {
    const out = spawnSync(process.execPath, [bin, ...args], { encoding: "utf8", env: { ...process.env, ...env }, timeout: 5000 });
    assert.equal(out.status, 2, `${args.join(" ")}: ${out.stderr}`);
    assert.match(out.stderr, message);
  }
});

test("ladder serve from the environment, then ladder publish and ladder tail against it", async () => {
  const child = spawn(process.execPath, [bin, "serve", "--log-level", "warn"], {
    env: { ...process.env, LADDER_PORT: "0", LADDER_HISTORY_SIZE: "2" },
    stdio: ["ignore", "pipe", "inherit"],
  });
  try {
    const url = await new Promise<string>((resolve, reject) => {
      let out = "";
      child.stdout.on("data", (d: Buffer) => {
        out += d.toString();
        const m = /listening on (http:\/\/\S+)/.exec(out);
        if (m) resolve(m[1]!);
      });
      child.once("exit", () => reject(new Error(out)));
    });
    for (const n of [1, 2, 3]) {
      const pub = spawnSync(process.execPath, [bin, "publish", "cli", JSON.stringify({ n }), "--url", url], { encoding: "utf8" });
      assert.equal(pub.status, 0, pub.stderr);
      assert.match(pub.stdout, /"channel":"cli"/);
    }
    const polled = (await (await fetch(`${url}/api/messages?channel=cli`)).json()) as Array<{ data: { n: number } }>;
    assert.deepEqual(polled.map((m) => m.data.n), [2, 3], "history size 2 came from the environment");
    const tail = spawn(process.execPath, [bin, "tail", "cli", "--since", "0", "--url", url], { stdio: ["ignore", "pipe", "inherit"] });
    const text = await new Promise<string>((resolve) => {
      let out = "";
      tail.stdout.on("data", (d: Buffer) => {
        out += d.toString();
        if (out.includes('data: {"n":3}')) resolve(out);
      });
    });
    tail.kill();
    assert.match(text, /retry: \d+/);
    assert.match(text, /data: \{"n":2\}/);
  } finally {
    child.kill("SIGTERM");
  }
});
