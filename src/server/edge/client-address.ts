/**
 * Who is asking: the address per-IP limits count. It is the peer's address, unless the peer is a proxy
 * named in `trustProxy`; then the `X-Forwarded-For` chain is walked from the right (the hop nearest to
 * us) past every trusted proxy, and the first address not trusted is the client. Entries left of it were
 * written by the client itself and are never believed, so a client cannot spoof its way past a limit.
 */
import { BlockList, isIP } from "node:net";

export interface TrustedProxies {
  /** True when `address` is a proxy whose X-Forwarded-For is believed. */
  trusts(address: string): boolean;
}

/** Shorthands for the usual places a proxy sits. */
const NAMED: Readonly<Record<string, ReadonlyArray<readonly [string, number, "ipv4" | "ipv6"]>>> = {
  loopback: [
    ["127.0.0.0", 8, "ipv4"],
    ["::1", 128, "ipv6"],
  ],
  private: [
    ["10.0.0.0", 8, "ipv4"],
    ["172.16.0.0", 12, "ipv4"],
    ["192.168.0.0", 16, "ipv4"],
    ["fc00::", 7, "ipv6"],
  ],
};

export const NO_PROXIES: TrustedProxies = { trusts: () => false };

/** `::ffff:10.0.0.1` (an IPv4 peer on a dual-stack socket) is `10.0.0.1`, so both spellings share one count. */
export function normalizeAddress(address: string): string {
  return address.startsWith("::ffff:") && isIP(address.slice(7)) === 4 ? address.slice(7) : address;
}

function family(address: string): "ipv4" | "ipv6" {
  return isIP(address) === 6 ? "ipv6" : "ipv4";
}

/**
 * Parses a `trustProxy` list: addresses (`10.0.0.5`), CIDR ranges (`10.0.0.0/8`, `fd00::/8`) and the
 * names `loopback` and `private`. A bad entry throws: a typo must not silently trust or distrust a proxy.
 */
export function trustedProxies(entries: readonly string[] | undefined): TrustedProxies {
  if (entries === undefined || entries.length === 0) return NO_PROXIES;
  if (!Array.isArray(entries)) throw new TypeError("option trustProxy must be a list of addresses, CIDR ranges, loopback or private");
  const list = new BlockList();
  for (const raw of entries) {
    const entry = typeof raw === "string" ? raw.trim() : "";
    const named = NAMED[entry];
    if (named) {
      for (const [network, prefix, type] of named) list.addSubnet(network, prefix, type);
      continue;
    }
    const slash = entry.indexOf("/");
    const address = slash < 0 ? entry : entry.slice(0, slash);
    const prefix = slash < 0 ? NaN : Number(entry.slice(slash + 1));
    const version = isIP(address);
    if (version === 0 || (slash >= 0 && (!Number.isInteger(prefix) || prefix < 0 || prefix > (version === 4 ? 32 : 128)))) {
      throw new TypeError(`option trustProxy: ${JSON.stringify(raw)} is not an address, a CIDR range, loopback or private`);
    }
    if (slash < 0) list.addAddress(address, family(address));
    else list.addSubnet(address, prefix, family(address));
  }
  return {
    trusts(address) {
      const plain = normalizeAddress(address);
      return isIP(plain) !== 0 && list.check(plain, family(plain));
    },
  };
}

/**
 * The client's address for a request that came from `peer` with this `X-Forwarded-For` value (node joins
 * repeated headers with ", "). An entry that is not an IP address ends the walk at the last good hop.
 */
export function clientAddress(peer: string | undefined, forwardedFor: string | string[] | undefined, proxies: TrustedProxies): string {
  let client = peer === undefined ? "unknown" : normalizeAddress(peer);
  if (forwardedFor === undefined || !proxies.trusts(client)) return client;
  const hops = (Array.isArray(forwardedFor) ? forwardedFor.join(",") : forwardedFor).split(",");
  for (let i = hops.length - 1; i >= 0; i--) {
    const hop = normalizeAddress(stripPort(hops[i]!.trim()));
    if (isIP(hop) === 0) break;
    client = hop;
    if (!proxies.trusts(hop)) break;
  }
  return client;
}

/** Some proxies write `1.2.3.4:5678` or `[::1]:5678`; the port is not part of who the client is. */
function stripPort(hop: string): string {
  if (hop.startsWith("[")) {
    const end = hop.indexOf("]");
    return end < 0 ? hop : hop.slice(1, end);
  }
  const colon = hop.indexOf(":");
  return colon >= 0 && hop.indexOf(":", colon + 1) < 0 ? hop.slice(0, colon) : hop;
}
