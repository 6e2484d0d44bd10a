/** The TLS and HTTP/2 settings of `ladder serve`: flags, switches and their negation, environment, config file, and refusals. */
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";
import { resolveSettings, SettingsError } from "../src/cli/settings.js";

const dir = mkdtempSync(join(tmpdir(), "ladder-tls-"));
const certFile = join(dir, "cert.pem");
const keyFile = join(dir, "key.pem");
// resolveSettings only reads the files; serve() is what parses them.
writeFileSync(certFile, "-----BEGIN CERTIFICATE-----\ncert\n-----END CERTIFICATE-----\n");
writeFileSync(keyFile, "-----BEGIN PRIVATE KEY-----\nkey\n-----END PRIVATE KEY-----\n");

test("TLS from flags, environment or config; switches with --no-; maxConcurrentStreams", () => {
  assert.equal(resolveSettings({ "tls-self-signed": true }, {}).tls, "self-signed");
  assert.equal(resolveSettings({}, { LADDER_TLS_SELF_SIGNED: "yes" }).tls, "self-signed");
  assert.equal(resolveSettings({ "no-tls-self-signed": true }, { LADDER_TLS_SELF_SIGNED: "1" }).tls, undefined, "the flag wins over the environment");
  const files = resolveSettings({ "tls-cert": certFile }, { LADDER_TLS_KEY: keyFile });
  assert.deepEqual(files.tls, { cert: "-----BEGIN CERTIFICATE-----\ncert\n-----END CERTIFICATE-----\n", key: "-----BEGIN PRIVATE KEY-----\nkey\n-----END PRIVATE KEY-----\n" });
  assert.equal(resolveSettings({}, {}).tls, undefined);
  assert.equal(resolveSettings({}, {}).http2, undefined, "default left to serve(): on with TLS");
  assert.equal(resolveSettings({ "no-http2": true }, {}).http2, false);
  assert.equal(resolveSettings({ http2: true }, { LADDER_HTTP2: "off" }).http2, true);
  assert.equal(resolveSettings({}, { LADDER_HTTP2: "false" }).http2, false);
  assert.equal(resolveSettings({ h2c: true }, {}).h2c, true);
  assert.equal(resolveSettings({}, { LADDER_MAX_CONCURRENT_STREAMS: "256" }).maxConcurrentStreams, 256);
  const config = join(dir, "ladder.json");
  writeFileSync(config, JSON.stringify({ tlsCert: certFile, tlsKey: keyFile, http2: false, maxConcurrentStreams: 16 }));
  const fromConfig = resolveSettings({ config }, {});
  assert.equal(typeof fromConfig.tls, "object");
  assert.equal(fromConfig.http2, false);
  assert.equal(fromConfig.maxConcurrentStreams, 16);
  assert.equal("tlsCertFile" in fromConfig || "tlsSelfSigned" in fromConfig, false, "file names do not leak into serve options");
});

test("conflicting or broken TLS settings are refused", () => {
  const refused: Array<[Record<string, string | boolean>, NodeJS.ProcessEnv, RegExp]> = [
    [{ "tls-cert": certFile }, {}, /--tls-cert and --tls-key go together/],
    [{ "tls-key": keyFile }, {}, /--tls-cert and --tls-key go together/],
    [{ "tls-self-signed": true, "tls-cert": certFile, "tls-key": keyFile }, {}, /exclude each other/],
    [{ "tls-self-signed": true, h2c: true }, {}, /--h2c is for cleartext/],
    [{ "tls-cert": join(dir, "missing.pem"), "tls-key": keyFile }, {}, /--tls-cert: cannot read/],
    [{}, { LADDER_H2C: "maybe" }, /LADDER_H2C: expected one of true, 1, yes, on, false, 0, no, off/],
  ];
  for (const [flags, env, message] of refused) assert.throws(() => resolveSettings(flags, env), (e: unknown) => e instanceof SettingsError && message.test(e.message));
});

test("ladder serve refuses a switch given a word that is not boolean, and a bad certificate, with exit code 2 and a clear error", () => {
  const withValue = spawnSync(process.execPath, ["bin/ladder.js", "serve", "--h2c=maybe"], { encoding: "utf8", timeout: 5000 });
  assert.equal(withValue.status, 2, withValue.stderr);
  assert.match(withValue.stderr, /^ladder: --h2c: expected one of/);
  const badCert = spawnSync(process.execPath, ["bin/ladder.js", "serve", "--port", "0", "--tls-cert", certFile, "--tls-key", keyFile], { encoding: "utf8", timeout: 5000 });
  assert.equal(badCert.status, 2);
  assert.match(badCert.stderr, /^ladder: tls\.cert is not a PEM certificate/);
});
