/** Which address per-IP limits count: the peer's, or behind trusted proxies the client's from X-Forwarded-For. */
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { clientAddress, normalizeAddress, trustedProxies } from "../src/server/edge/client-address.js";

describe("trustedProxies", () => {
  const proxies = trustedProxies(["10.0.0.0/8", "192.0.2.7", "loopback", "fd00::/8"]);
  const cases: ReadonlyArray<readonly [string, boolean]> = [
    ["10.1.2.3", true],
    ["::ffff:10.1.2.3", true],
    ["11.0.0.1", false],
    ["192.0.2.7", true],
    ["192.0.2.8", false],
    ["127.0.0.1", true],
    ["127.9.9.9", true],
    ["::1", true],
    ["fd12::1", true],
    ["fe80::1", false],
    ["not-an-ip", false],
    ["", false],
  ];
  for (const [address, trusted] of cases) {
    test(`${JSON.stringify(address)} is ${trusted ? "" : "not "}trusted`, () => assert.equal(proxies.trusts(address), trusted));
  }

  test("private names the RFC 1918 and unique-local ranges", () => {
    const p = trustedProxies(["private"]);
    assert.deepEqual(["10.9.9.9", "172.16.0.1", "172.31.255.255", "172.32.0.1", "192.168.1.1", "fc00::1", "8.8.8.8"].map((a) => p.trusts(a)), [true, true, true, false, true, true, false]);
  });

  test("no list trusts nobody", () => {
    assert.equal(trustedProxies(undefined).trusts("127.0.0.1"), false);
    assert.equal(trustedProxies([]).trusts("127.0.0.1"), false);
  });

  for (const bad of ["10.0.0.0/33", "::/129", "10.0.0.0/x", "localhost", "10.0.0", "", "*"]) {
    test(`a bad entry ${JSON.stringify(bad)} is refused at start`, () => assert.throws(() => trustedProxies([bad]), /trustProxy/));
  }
});

describe("clientAddress", () => {
  const proxies = trustedProxies(["10.0.0.0/8"]);
  const cases: ReadonlyArray<readonly [string, string | undefined, string | string[] | undefined, string]> = [
    ["no header: the peer", "203.0.113.5", undefined, "203.0.113.5"],
    ["an untrusted peer's header is ignored", "203.0.113.5", "198.51.100.1", "203.0.113.5"],
    ["a trusted proxy names the client", "10.0.0.2", "198.51.100.1", "198.51.100.1"],
    ["forged entries left of the client are ignored", "10.0.0.2", "6.6.6.6, 198.51.100.1", "198.51.100.1"],
    ["a chain of trusted proxies is walked", "10.0.0.2", "198.51.100.1, 10.0.0.9, 10.0.0.3", "198.51.100.1"],
    ["every hop trusted: the leftmost", "10.0.0.2", "10.0.0.9", "10.0.0.9"],
    ["garbage ends the walk at the last good hop", "10.0.0.2", "198.51.100.1, bogus", "10.0.0.2"],
    ["ports are not part of the address", "10.0.0.2", "198.51.100.1:4444", "198.51.100.1"],
    ["bracketed IPv6 with a port", "10.0.0.2", "[2001:db8::1]:4444", "2001:db8::1"],
    ["bare IPv6", "10.0.0.2", "2001:db8::2", "2001:db8::2"],
    ["IPv4-mapped peer", "::ffff:10.0.0.2", "198.51.100.1", "198.51.100.1"],
    ["repeated headers (node joins them)", "10.0.0.2", ["6.6.6.6", "198.51.100.1"], "198.51.100.1"],
    ["no peer address", undefined, "198.51.100.1", "unknown"],
    ["empty header", "10.0.0.2", "", "10.0.0.2"],
  ];
  for (const [name, peer, header, expected] of cases) {
    test(name, () => assert.equal(clientAddress(peer, header, proxies), expected));
  }

  test("normalizeAddress unwraps IPv4-mapped IPv6 only", () => {
    assert.deepEqual(["::ffff:1.2.3.4", "::ffff:abcd", "1.2.3.4", "::1"].map(normalizeAddress), ["1.2.3.4", "::ffff:abcd", "1.2.3.4", "::1"]);
  });
});
