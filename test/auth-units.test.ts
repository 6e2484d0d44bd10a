/** The pure parts of access control: channel rules, token verification, rate limits. */
import assert from "node:assert/strict";
import { generateKeyPairSync } from "node:crypto";
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";
import { exportJWK, SignJWT, type JWK } from "jose";
import { ANONYMOUS, authorize, expandPattern, type ChannelRule, type Principal } from "../src/server/auth/rules.js";
import { ConnectionCounter, RateLimiter } from "../src/server/auth/rate-limit.js";
import { TokenVerifier } from "../src/server/auth/tokens.js";
import { LadderError } from "../src/protocol/index.js";

const rules: ChannelRule[] = [
  { match: "public.*", subscribe: "anyone", publish: "nobody" },
  { match: "chat.*", subscribe: "token", publish: "token" },
  { match: "user.{sub}", subscribe: "token", publish: "nobody" },
];
const defaults = { subscribe: "token", publish: "token" } as const;
const alice: Principal = { kind: "token", sub: "alice", grants: { subscribe: ["chat.*", "user.{sub}"], publish: ["chat.lobby"] }, expiresAt: null };
const backend: Principal = { kind: "api-key", sub: null, grants: { subscribe: ["*"], publish: ["*"] }, expiresAt: null };

test("channel rules: anyone, token with grants, nobody, {sub}, defaults, API keys", () => {
  const cases: Array<[Principal, "subscribe" | "publish", string, string]> = [
    [ANONYMOUS, "subscribe", "public.news", "allowed"],
    [ANONYMOUS, "publish", "public.news", "unauthenticated"],
    [alice, "publish", "public.news", "forbidden"],
    [backend, "publish", "public.news", "allowed"],
    [ANONYMOUS, "subscribe", "chat.lobby", "unauthenticated"],
    [alice, "subscribe", "chat.lobby", "allowed"],
    [alice, "publish", "chat.lobby", "allowed"],
    [alice, "publish", "chat.other", "forbidden"],
    [alice, "subscribe", "user.alice", "allowed"],
    [alice, "subscribe", "user.bob", "forbidden"],
    [ANONYMOUS, "subscribe", "user.alice", "unauthenticated"],
    [alice, "subscribe", "secret", "forbidden"],
    [ANONYMOUS, "subscribe", "secret", "unauthenticated"],
  ];
  for (const [who, action, channel, verdict] of cases) {
    assert.equal(authorize(rules, defaults, who, action, channel), verdict, `${who.sub ?? who.kind} ${action} ${channel}`);
  }
  assert.equal(expandPattern("user.{sub}", "a b"), null, "a subject that is not a channel name matches nothing");
});

test("HS256 tokens: grants, subject and expiry are read; expired, tampered and foreign tokens are refused", async () => {
  const secret = "s3cret-s3cret-s3cret-s3cret-s3cret!";
  const verifier = await TokenVerifier.create({ secret }, ["backend-key"]);
  const key = new TextEncoder().encode(secret);
  const token = await new SignJWT({ ladder: { subscribe: ["chat.*"], publish: [] } }).setProtectedHeader({ alg: "HS256" }).setSubject("alice").setExpirationTime("1h").sign(key);
  const p = await verifier.verify(token);
  assert.equal(p.kind, "token");
  assert.equal(p.sub, "alice");
  assert.deepEqual(p.grants, { subscribe: ["chat.*"], publish: [] });
  assert.ok(p.expiresAt! > Date.now());
  const expired = await new SignJWT({}).setProtectedHeader({ alg: "HS256" }).setExpirationTime(Math.floor(Date.now() / 1000) - 60).sign(key);
  await assert.rejects(verifier.verify(expired), (e: unknown) => e instanceof LadderError && e.code === "unauthenticated" && /expired/.test(e.message));
  await assert.rejects(verifier.verify(token.slice(0, -2) + "xx"), (e: unknown) => e instanceof LadderError && e.status === 401);
  const foreign = await new SignJWT({}).setProtectedHeader({ alg: "HS256" }).sign(new TextEncoder().encode("another-secret-another-secret-xx"));
  await assert.rejects(verifier.verify(foreign));
  await assert.rejects(verifier.verify("not.a.jwt"));
  assert.equal((await verifier.verify("backend-key")).kind, "api-key");
  assert.equal(verifier.isApiKey("backend-kez"), false);
});

test("RS256, ES256 and EdDSA with PEM keys, and a JWKS file", async () => {
  const dir = mkdtempSync(join(tmpdir(), "ladder-jwks-"));
  const rsa = generateKeyPairSync("rsa", { modulusLength: 2048 });
  const ec = generateKeyPairSync("ec", { namedCurve: "P-256" });
  const ed = generateKeyPairSync("ed25519");
  const jwk: JWK = { ...(await exportJWK(ed.publicKey)), kid: "ed1", alg: "EdDSA" };
  const jwksFile = join(dir, "jwks.json");
  writeFileSync(jwksFile, JSON.stringify({ keys: [jwk] }));
  const pem = (k: typeof rsa.publicKey): string => k.export({ type: "spki", format: "pem" }) as string;
  const verifier = await TokenVerifier.create({ publicKeys: [pem(rsa.publicKey), pem(ec.publicKey)], jwksFile });
  const sign = (alg: string, key: typeof rsa.privateKey, kid?: string): Promise<string> =>
    new SignJWT({ ladder: { subscribe: ["x"] } }).setProtectedHeader(kid ? { alg, kid } : { alg }).setSubject(alg).setExpirationTime("5m").sign(key);
  assert.equal((await verifier.verify(await sign("RS256", rsa.privateKey))).sub, "RS256");
  assert.equal((await verifier.verify(await sign("ES256", ec.privateKey))).sub, "ES256");
  assert.equal((await verifier.verify(await sign("EdDSA", ed.privateKey, "ed1"))).sub, "EdDSA");
  const stranger = generateKeyPairSync("ec", { namedCurve: "P-256" });
  await assert.rejects(verifier.verify(await sign("ES256", stranger.privateKey)));
});

test("token buckets refill at the rate up to the burst, and full buckets are forgotten", () => {
  let now = 0;
  const limiter = new RateLimiter({ ratePerSecond: 2, burst: 3 }, () => now);
  assert.deepEqual([1, 2, 3].map(() => limiter.take("ip")), [0, 0, 0]);
  assert.equal(limiter.take("ip"), 1, "empty: retry after 1 s");
  now += 500;
  assert.equal(limiter.take("ip"), 0, "one token back after half a second at 2/s");
  assert.equal(limiter.take("other"), 0, "keys are independent");
  now += 10_000;
  limiter.sweep();
  assert.equal(limiter.size, 0);
});

test("connection counter per key", () => {
  const counter = new ConnectionCounter(2);
  const a = counter.acquire("1.2.3.4")!;
  const b = counter.acquire("1.2.3.4")!;
  assert.equal(counter.acquire("1.2.3.4"), null);
  assert.ok(counter.acquire("5.6.7.8"));
  a();
  a();
  assert.equal(counter.count("1.2.3.4"), 1, "release is idempotent");
  b();
  assert.equal(counter.count("1.2.3.4"), 0);
});
