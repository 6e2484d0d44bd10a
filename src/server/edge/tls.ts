/**
 * Certificates for `serve({ tls })`: a PEM pair the operator provides, or a development certificate made
 * at start. The development certificate lives in memory only — nothing is written to disk, so a key can
 * never end up in the repository or a container image — and is announced by its SHA-256 fingerprint so
 * a developer can check what the browser shows before clicking through its warning.
 */
import { X509Certificate } from "node:crypto";
import { isIP } from "node:net";
import { createSecureContext } from "node:tls";
import { generate } from "selfsigned";

/** A certificate chain and its private key, PEM-encoded (the contents, not file names). */
export interface TlsCredentials {
  readonly cert: string | Buffer;
  readonly key: string | Buffer;
}

/** What a running server tells about the certificate it serves. The key is never exposed. */
export interface TlsInfo {
  /** The served certificate, PEM: a test or a tool can trust exactly it (e.g. `ca:` of node:tls). */
  readonly cert: string;
  /** SHA-256 fingerprint as browsers show it, `AB:CD:…`. */
  readonly fingerprint256: string;
  /** True for the development certificate made by `tls: "self-signed"`. */
  readonly selfSigned: boolean;
}

export interface ResolvedTls {
  readonly credentials: TlsCredentials;
  readonly info: TlsInfo;
}

/** A week: long enough for a development session, short enough that a leaked one expires soon. */
const SELF_SIGNED_DAYS = 7;

/**
 * Makes an ECDSA P-256 certificate for localhost, the loopback addresses and `host` (when it names a
 * specific address or name). EC rather than RSA: generation takes milliseconds, so start-up stays fast.
 */
export async function selfSignedCredentials(host?: string): Promise<ResolvedTls> {
  const altNames: Array<{ type: 2; value: string } | { type: 7; ip: string }> = [
    { type: 2, value: "localhost" },
    { type: 7, ip: "127.0.0.1" },
    { type: 7, ip: "::1" },
  ];
  if (host && host !== "localhost" && host !== "0.0.0.0" && host !== "::" && host !== "127.0.0.1" && host !== "::1") {
    altNames.push(isIP(host) ? { type: 7, ip: host } : { type: 2, value: host });
  }
  const now = Date.now();
  const pems = await generate([{ name: "commonName", value: "ladder development certificate" }], {
    keyType: "ec",
    curve: "P-256",
    algorithm: "sha256",
    // A minute back, so a client whose clock is slightly behind does not see a certificate from the future.
    notBeforeDate: new Date(now - 60_000),
    notAfterDate: new Date(now + SELF_SIGNED_DAYS * 24 * 3600_000),
    extensions: [
      { name: "basicConstraints", cA: false },
      { name: "keyUsage", digitalSignature: true, critical: true },
      { name: "extKeyUsage", serverAuth: true },
      { name: "subjectAltName", altNames },
    ],
  });
  return { credentials: { cert: pems.cert, key: pems.private }, info: describe(pems.cert, true) };
}

/** Checks that a provided pair parses and fits together: a clear error at start, not at the first handshake. */
export function providedCredentials(credentials: TlsCredentials): ResolvedTls {
  let info: TlsInfo;
  try {
    info = describe(String(credentials.cert), false);
  } catch (error) {
    throw new TypeError(`tls.cert is not a PEM certificate: ${(error as Error).message}`);
  }
  try {
    createSecureContext({ cert: credentials.cert, key: credentials.key });
  } catch (error) {
    throw new TypeError(`tls.key is not a PEM private key of tls.cert: ${(error as Error).message}`);
  }
  return { credentials, info };
}

function describe(certPem: string, selfSigned: boolean): TlsInfo {
  // The first certificate of a chain is the server's own.
  const x509 = new X509Certificate(certPem);
  return { cert: x509.toString(), fingerprint256: x509.fingerprint256, selfSigned };
}
