/**
 * Client tokens are JWTs verified with `jose`: HS256 with a shared secret, or RS256/ES256/EdDSA with public
 * keys given as PEM, a JWKS file, or a JWKS URL. The `ladder` claim grants channel patterns:
 * `{"sub": "alice", "exp": …, "ladder": {"subscribe": ["chat.*", "user.{sub}"], "publish": ["chat.*"]}}`.
 * Backends use API keys, compared in constant time.
 */
import { createHash, timingSafeEqual } from "node:crypto";
import { readFileSync } from "node:fs";
import {
  createLocalJWKSet,
  createRemoteJWKSet,
  importSPKI,
  jwtVerify,
  type JSONWebKeySet,
  type JWTPayload,
  type JWTVerifyGetKey,
  type KeyObject,
} from "jose";
import { LadderError } from "../../protocol/index.js";
import type { Principal } from "./rules.js";

export interface TokenOptions {
  /** Shared secret for HS256. */
  readonly secret?: string;
  /** PEM public keys (SPKI) for RS256, ES256 or EdDSA. */
  readonly publicKeys?: readonly string[];
  readonly jwksFile?: string;
  readonly jwksUrl?: string;
  readonly issuer?: string;
  readonly audience?: string;
  /** Allowed clock skew in seconds. */
  readonly clockToleranceSeconds?: number;
}

const ASYMMETRIC = ["RS256", "ES256", "EdDSA", "PS256", "ES384", "RS384", "RS512", "ES512"];

type Verifier = (token: string) => Promise<JWTPayload>;

function readGrants(payload: JWTPayload): Principal["grants"] {
  const claim = payload.ladder as { subscribe?: unknown; publish?: unknown } | undefined;
  const list = (value: unknown): string[] => (Array.isArray(value) ? value.filter((v): v is string => typeof v === "string") : []);
  return { subscribe: list(claim?.subscribe), publish: list(claim?.publish) };
}

/** The largest public `info` a token may carry (encoded): every reader of a presence list receives it. */
export const MAX_INFO_BYTES = 1024;

/** The token's public presence info (`ladder.info`), when it has one small enough to share. */
function readInfo(payload: JWTPayload): unknown {
  const info = (payload.ladder as { info?: unknown } | undefined)?.info;
  if (info === undefined || info === null) return undefined;
  const encoded = JSON.stringify(info);
  return encoded !== undefined && Buffer.byteLength(encoded) <= MAX_INFO_BYTES ? info : undefined;
}

export class TokenVerifier {
  readonly #verifiers: Verifier[] = [];
  readonly #apiKeys: Buffer[];

  private constructor(apiKeys: readonly string[]) {
    this.#apiKeys = apiKeys.map((k) => createHash("sha256").update(k).digest());
  }

  static async create(options: TokenOptions, apiKeys: readonly string[] = []): Promise<TokenVerifier> {
    const verifier = new TokenVerifier(apiKeys);
    const common = { issuer: options.issuer, audience: options.audience, clockTolerance: options.clockToleranceSeconds ?? 5 };
    if (options.secret) {
      const key = new TextEncoder().encode(options.secret);
      verifier.#verifiers.push(async (token) => (await jwtVerify(token, key, { ...common, algorithms: ["HS256"] })).payload);
    }
    for (const pem of options.publicKeys ?? []) {
      const keys: KeyObject[] = [];
      for (const alg of ["RS256", "ES256", "EdDSA"]) {
        try {
          keys.push((await importSPKI(pem, alg, { extractable: false })) as KeyObject);
          break;
        } catch {
          /* try the next algorithm family */
        }
      }
      if (keys.length === 0) throw new TypeError("a public key is not a PEM SPKI key for RS256, ES256 or EdDSA");
      const key = keys[0]!;
      verifier.#verifiers.push(async (token) => (await jwtVerify(token, key, { ...common, algorithms: ASYMMETRIC })).payload);
    }
    const sets: JWTVerifyGetKey[] = [];
    if (options.jwksFile) sets.push(createLocalJWKSet(JSON.parse(readFileSync(options.jwksFile, "utf8")) as JSONWebKeySet));
    if (options.jwksUrl) sets.push(createRemoteJWKSet(new URL(options.jwksUrl)));
    for (const set of sets) verifier.#verifiers.push(async (token) => (await jwtVerify(token, set, { ...common, algorithms: ASYMMETRIC })).payload);
    return verifier;
  }

  isApiKey(candidate: string): boolean {
    const digest = createHash("sha256").update(candidate).digest();
    return this.#apiKeys.some((key) => timingSafeEqual(key, digest));
  }

  /** Verifies a token and turns it into a principal; rejects with 401 `unauthenticated` and the reason. */
  async verify(token: string): Promise<Principal> {
    if (this.isApiKey(token)) return { kind: "api-key", sub: null, grants: { subscribe: ["*"], publish: ["*"] }, expiresAt: null };
    let lastError: unknown = new Error("no token verifier is configured");
    for (const verify of this.#verifiers) {
      try {
        const payload = await verify(token);
        const info = readInfo(payload);
        return {
          kind: "token",
          sub: typeof payload.sub === "string" ? payload.sub : null,
          grants: readGrants(payload),
          expiresAt: typeof payload.exp === "number" ? payload.exp * 1000 : null,
          ...(info !== undefined ? { info } : {}),
        };
      } catch (error) {
        lastError = error;
      }
    }
    const code = (lastError as { code?: string }).code;
    const reason = code === "ERR_JWT_EXPIRED" ? "token expired" : "token is not valid";
    throw new LadderError("unauthenticated", reason);
  }
}
