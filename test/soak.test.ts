/**
 * A 90-second chaos soak inside the suite (`npm run soak` is the long form; docs/reliability.md): one memory
 * node behind the soak's misbehaving front, restarted by SIGKILL and SIGTERM, connections reset and frozen, a
 * slow consumer, bursts past history — with every rung subscribed and every invariant checked. Any violation
 * fails the suite; the soak prints each one with its channel, ids and subscriber, and the seed to replay it.
 *
 * The seed changes every day (so the suite explores) and is printed; LADDER_SOAK_SEED replays one, and
 * LADDER_SOAK_ENGINE=redis|nats runs the three-node topology on a private broker instead.
 */
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { test } from "node:test";
import type { SoakReport } from "../soak/report.js";
import { programAvailable } from "./helpers/brokers.js";

const DURATION_S = 90;
const engine = process.env.LADDER_SOAK_ENGINE ?? "memory";
const seed = Number(process.env.LADDER_SOAK_SEED ?? Math.floor(Date.now() / 86_400_000));
const SOAK = fileURLToPath(new URL("../soak/run.js", import.meta.url));

test(`chaos soak: ${DURATION_S} s on ${engine}, seed ${seed}, no violation`, { timeout: 300_000 }, async (t) => {
  if (engine !== "memory" && !(await programAvailable(engine === "redis" ? "redis-server" : "nats-server"))) return t.skip(`${engine} is not installed`);
  const out = mkdtempSync(join(tmpdir(), "ladder-soak-"));
  try {
    const child = spawn(process.execPath, [SOAK, "--engine", engine, "--duration", String(DURATION_S), "--seed", String(seed), "--out", out], { stdio: ["ignore", "pipe", "pipe"] });
    let output = "";
    child.stdout.on("data", (d: Buffer) => (output += d.toString()));
    child.stderr.on("data", (d: Buffer) => (output += d.toString()));
    // The soak bounds itself (duration, then at most one fault's recovery and the final checks); this is the backstop.
    const killer = setTimeout(() => child.kill("SIGKILL"), 280_000);
    const code = await new Promise<number | null>((resolve) => child.once("exit", (c) => resolve(c)));
    clearTimeout(killer);
    const lines = output.split("\n");
    t.diagnostic(lines.filter((l) => /^(soak|fault|VIOLATION)/.test(l)).join("\n"));
    assert.equal(code, 0, `the soak exited ${code}:\n${lines.filter((l) => !l.startsWith("[")).slice(-80).join("\n")}`);
    const report = JSON.parse(readFileSync(join(out, `${engine}-${seed}.json`), "utf8")) as SoakReport;
    assert.deepEqual(report.violations, []);
    // A soak that injected nothing or checked nothing proves nothing.
    assert.ok(report.publishesAcked > DURATION_S * 10, `publishes acked: ${report.publishesAcked}`);
    assert.ok(report.deliveriesChecked > report.publishesAcked * 5, `deliveries checked: ${report.deliveriesChecked}`);
    const injected = Object.values(report.faults).reduce((a, b) => a + (b ?? 0), 0);
    assert.ok(injected >= 4 && Object.keys(report.faults).length >= 3, `faults: ${JSON.stringify(report.faults)}`);
  } finally {
    rmSync(out, { recursive: true, force: true });
  }
});
