/** The `ladder` command: help, settings from flags, environment and a config file, and bad settings. */
import assert from "node:assert/strict";
import { spawn, spawnSync } from "node:child_process";
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";
import { listeningUrl } from "./helpers/cli.js";
import { parseServeArgs, resolveSettings, SETTINGS } from "../src/cli/settings.js";

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

/** Runs the real binary; a user mistake must come back as one `ladder: …` line, no stack trace. */
function ladder(args: string[], env: NodeJS.ProcessEnv = {}, input?: string): { status: number | null; stdout: string; stderr: string } {
  return spawnSync(process.execPath, [bin, ...args], { encoding: "utf8", env: { ...process.env, ...env }, timeout: 10_000, input });
}

function ladderAsync(args: string[], env: NodeJS.ProcessEnv = {}): Promise<{ status: number | null; stderr: string }> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [bin, ...args], { env: { ...process.env, ...env }, stdio: ["ignore", "ignore", "pipe"], timeout: 20_000 });
    let stderr = "";
    child.stderr.on("data", (d: Buffer) => (stderr += d.toString()));
    child.once("close", (status) => resolve({ status, stderr }));
  });
}

function assertOneLine(stderr: string, message: RegExp, what: string): void {
  const lines = stderr.trimEnd().split("\n");
  assert.equal(lines.length, 1, `${what}: one line, got:\n${stderr}`);
  assert.match(lines[0]!, /^ladder: /, what);
  assert.match(lines[0]!, message, what);
  assert.doesNotMatch(stderr, /\n\s+at /, `${what}: no stack trace`);
}

test("bad settings are refused with one line that names the flag, variable or config key, and exit code 2", async () => {
  const dir = mkdtempSync(join(tmpdir(), "ladder-cli-"));
  const unknownKey = join(dir, "unknown.json");
  writeFileSync(unknownKey, '{"prot": 1}');
  const badPort = join(dir, "port.json");
  writeFileSync(badPort, '{"port": "abc"}');
  const syntax = join(dir, "syntax.json");
  writeFileSync(syntax, '{\n  "port": 1,\n  "host": x\n}');
  const cases: Array<[string[], NodeJS.ProcessEnv, RegExp]> = [
    [["serve", "--port", "abc"], {}, /^ladder: --port: expected a port number from 0 to 65535, got "abc"$/],
    [["serve", "--port", "99999"], {}, /^ladder: --port: expected a port number from 0 to 65535, got "99999"$/],
    [["serve"], { LADDER_PORT: "-1" }, /^ladder: LADDER_PORT: expected a port number/],
    [["serve", "--config", badPort], {}, new RegExp(`^ladder: config file ${badPort}, key "port": expected a port number`)],
    [["serve", "--slow-consumer", "never"], {}, /^ladder: --slow-consumer: expected one of disconnect, latest; got "never"$/],
    [["serve", "--log-level", "verbose"], {}, /^ladder: --log-level: expected one of fatal, error, warn, info, debug, trace, silent; got "verbose"$/],
    [["serve", "--metrics", "maybe"], {}, /^ladder: --metrics: expected one of true, 1, yes, on, false, 0, no, off; got "maybe"$/],
    [["serve", "--demo=sure"], {}, /^ladder: --demo: expected one of/],
    [["serve"], { LADDER_METRICS: "maybe" }, /^ladder: LADDER_METRICS: expected one of true, 1, yes, on, false, 0, no, off; got "maybe"$/],
    [["serve", "--nope"], {}, /^ladder: unknown option --nope; see ladder serve --help$/],
    [["serve", "--port"], {}, /^ladder: --port: needs a value/],
    [["serve", "--config", unknownKey], {}, /unknown key "prot"/],
    [["serve", "--config", syntax], {}, new RegExp(`^ladder: config file ${syntax} is not valid JSON: syntax error at line 3, column 11 \\("x"\\)`)],
    [["serve", "--config", join(dir, "missing.json")], {}, /cannot read config file/],
    [["serve"], { LADDER_MAX_WAIT: "-3" }, /^ladder: LADDER_MAX_WAIT: expected seconds/],
    [["frobnicate"], {}, /unknown command "frobnicate"/],
    [["serve", "--port", "0", "--trust-proxy", "10.0.0.0/99"], {}, /trustProxy: "10.0.0.0\/99" is not an address/],
    [["serve", "--port", "0", "--headers-timeout", "40", "--request-timeout", "30"], {}, /headersTimeoutMs must not exceed requestTimeoutMs/],
    [["publish", "prices", "{price: 1}"], {}, /^ladder: "\{price: 1\}" is not valid JSON .*--string/],
    [["publish", "prices"], {}, /^ladder: usage: ladder publish/],
    [["publish", "bad channel", "1"], {}, /^ladder: channel "bad channel": expected 1–128 characters/],
    [["publish", "prices", "1", "--url", "127.0.0.1:8080"], {}, /^ladder: --url: expected an http:\/\/ or https:\/\/ URL like http:\/\/127.0.0.1:8080, got "127.0.0.1:8080"$/],
    [["tail", "prices", "--url", "localhost:8080"], {}, /^ladder: --url: expected an http:\/\/ or https:\/\/ URL/],
    [["tail", "prices", "--since", "yesterday"], {}, /^ladder: --since: expected a message id/],
    [["tail", "--bogus"], {}, /^ladder: unknown option --bogus; see ladder tail --help$/],
  ];
  // All at once: each is a process start, and they are independent.
  const results = await Promise.all(cases.map(([args, env]) => ladderAsync(args, env)));
  cases.forEach(([args, , message], i) => {
    const out = results[i]!;
    assert.equal(out.status, 2, `${args.join(" ")}: ${out.stderr}`);
    assertOneLine(out.stderr, message, args.join(" "));
  });
});

test("switches take the same words from flags, environment and config file", () => {
  const dir = mkdtempSync(join(tmpdir(), "ladder-cli-"));
  const config = join(dir, "c.json");
  writeFileSync(config, '{"metrics": "yes", "h2c": "off", "demo": false}');
  for (const [words, expected] of [
    [["true", "1", "yes", "on", "YES"], true],
    [["false", "0", "no", "off", "Off"], false],
  ] as const) {
    for (const word of words) {
      assert.equal(resolveSettings(parseServeArgs(["--metrics", word]), {}).metrics, expected, `--metrics ${word}`);
      assert.equal(resolveSettings(parseServeArgs([`--metrics=${word}`]), {}).metrics, expected, `--metrics=${word}`);
      assert.equal(resolveSettings({}, { LADDER_METRICS: word }).metrics, expected, `LADDER_METRICS=${word}`);
    }
  }
  const fromConfig = resolveSettings(parseServeArgs(["--config", config]), {});
  assert.deepEqual([fromConfig.metrics, fromConfig.h2c, fromConfig.demo], [true, false, false]);
  // A bare switch and its negation still work, and a switch followed by another option takes no value.
  assert.equal(resolveSettings(parseServeArgs(["--no-http2", "--metrics", "--port", "1"]), {}).metrics, true);
  assert.equal(resolveSettings(parseServeArgs(["--no-http2"]), {}).http2, false);
  // The fast lane is on unless turned off (left unset, serve()'s default is on), from any source.
  assert.notEqual(resolveSettings(parseServeArgs([]), {}).fastLane, false);
  assert.equal(resolveSettings(parseServeArgs(["--no-fast-lane"]), {}).fastLane, false);
  assert.equal(resolveSettings({}, { LADDER_FAST_LANE: "off" }).fastLane, false);
});

test("--help: aligned columns, every switch in the switches sentence, the channels key explained", () => {
  const out = ladder(["--help"]);
  assert.equal(out.status, 0);
  const section = out.stdout.slice(out.stdout.indexOf("Options of serve:"));
  const rows = section.split("\n").filter((line) => /^  --[a-z]/.test(line));
  const starts = new Set(rows.map((line) => /^  --\S+( <\w+>)?\s+/.exec(line)![0].length));
  assert.equal(starts.size, 1, `descriptions start in one column: ${[...starts].join(", ")}`);
  // Continuation lines (defaults, env, config key) start in that same column.
  const column = [...starts][0]!;
  for (const line of section.split("\n").filter((l) => l.includes(" · env "))) assert.equal(line.length - line.trimStart().length, column, line);
  const sentence = /Switches \(([^)]*)\)/.exec(out.stdout)![1]!;
  for (const s of SETTINGS.filter((x) => x.kind === "bool")) assert.ok(sentence.includes(`--${s.flag}`), `switch sentence lists --${s.flag}`);
  assert.match(out.stdout, /true\/1\/yes\/on\/false\/0\/no\/off/);
  assert.match(out.stdout, /"channels": per-channel policies/);
  for (const flag of ["--url", "--string", "--data-file", "--since", "--json"]) assert.ok(out.stdout.includes(flag), flag);
  assert.equal(ladder(["publish", "--help"]).stdout, out.stdout);
});

test("ladder serve from the environment, then ladder publish and ladder tail against it", async () => {
  const child = spawn(process.execPath, [bin, "serve", "--log-level", "warn"], {
    env: { ...process.env, LADDER_PORT: "0", LADDER_HISTORY_SIZE: "2" },
    stdio: ["ignore", "pipe", "inherit"],
  });
  try {
    const url = await listeningUrl(child);
    for (const n of [1, 2, 3]) {
      const pub = spawnSync(process.execPath, [bin, "publish", "cli", JSON.stringify({ n }), "--url", url], { encoding: "utf8" });
      assert.equal(pub.status, 0, pub.stderr);
      assert.match(pub.stdout, /"channel":"cli"/);
    }
    const polled = (await (await fetch(`${url}/api/messages?channel=cli`)).json()) as Array<{ data: { n: number } }>;
    assert.deepEqual(polled.map((m) => m.data.n), [2, 3], "history size 2 came from the environment");
    const tail = spawn(process.execPath, [bin, "tail", "cli", "--since", "0", "--url", url], { stdio: ["ignore", "pipe", "pipe"] });
    const text = await new Promise<string>((resolve) => {
      let out = "";
      tail.stdout.on("data", (d: Buffer) => {
        out += d.toString();
        if (out.includes('{"n":3}\n')) resolve(out);
      });
    });
    tail.kill();
    // One message per line: id, channel, data — not the SSE wire.
    assert.match(text, /^\d+-\d+ cli \{"n":2\}\n\d+-\d+ cli \{"n":3\}\n$/);
  } finally {
    child.kill("SIGTERM");
  }
});
