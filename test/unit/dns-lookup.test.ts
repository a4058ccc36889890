// DNS lookups that cannot stall the fleet: answers kept for their TTL (at most 30 s), NXDOMAIN for
// 5 s, errors never; one query for concurrent askers; a silent DNS fails fast for a few seconds;
// a real resolver against a socket that never answers gives up within its deadline.
import { test } from "node:test";
import assert from "node:assert/strict";
import dgram from "node:dgram";
import {
  cachedLookup,
  DNSUnavailable,
  dnsLookup,
  LOOKUP_LIMITS,
  resolverQuery,
  type Query,
} from "../../src/naming/lookup.js";
import { resolveServer } from "../../src/naming/resolve.js";
import { parseHostname } from "../../src/naming/hostname.js";
import { effectiveNetwork } from "../../src/api/defaults.js";

type Reply = { addresses: string[]; ttlSeconds: number } | "notfound" | Error;

/** A fake DNS with a clock: answers from `zone`, counts the questions it was asked. */
function fakeDNS(zone: Record<string, Reply>, limits = LOOKUP_LIMITS) {
  let clock = 0;
  const asked: string[] = [];
  const query: Query = async (name) => {
    asked.push(name);
    const reply = zone[name] ?? "notfound";
    if (reply instanceof Error) throw reply;
    return reply;
  };
  const lookup = cachedLookup(query, limits, () => clock);
  return {
    lookup,
    asked,
    zone,
    advance: (ms: number) => (clock += ms),
  };
}

const A = (address: string, ttlSeconds = 300) => ({ addresses: [address], ttlSeconds });

test("the cache: what is kept, for how long, and what is never kept", async (t) => {
  const cases: {
    name: string;
    reply: Reply;
    /** ms after the first lookup, and whether the second one asks DNS again */
    after: number;
    asksAgain: boolean;
  }[] = [
    { name: "answer within its TTL", reply: A("10.0.0.1", 60), after: 29_000, asksAgain: false },
    { name: "answer capped at 30 s", reply: A("10.0.0.1", 3600), after: 30_000, asksAgain: true },
    { name: "answer past a short TTL", reply: A("10.0.0.1", 5), after: 5_000, asksAgain: true },
    { name: "TTL 0 is never kept", reply: A("10.0.0.1", 0), after: 0, asksAgain: true },
    { name: "NXDOMAIN within 5 s", reply: "notfound", after: 4_000, asksAgain: false },
    { name: "NXDOMAIN after 5 s", reply: "notfound", after: 5_000, asksAgain: true },
    {
      name: "SERVFAIL is never kept",
      reply: new DNSUnavailable("x.test", "ESERVFAIL"),
      after: 0,
      asksAgain: true,
    },
  ];
  for (const c of cases) {
    await t.test(c.name, async () => {
      const dns = fakeDNS({ "x.test": c.reply });
      const first = await dns.lookup("x.test").catch((e: unknown) => e);
      dns.advance(c.after);
      const second = await dns.lookup("x.test").catch((e: unknown) => e);
      assert.equal(dns.asked.length, c.asksAgain ? 2 : 1);
      if (!(c.reply instanceof Error)) assert.deepEqual(second, first);
    });
  }
});

test("concurrent lookups of one name share one query", async () => {
  const dns = fakeDNS({ "dns-30.example.test": A("10.12.30.4", 0) });
  const answers = await Promise.all([1, 2, 3].map(() => dns.lookup("dns-30.example.test")));
  assert.deepEqual(answers, [["10.12.30.4"], ["10.12.30.4"], ["10.12.30.4"]]);
  assert.equal(dns.asked.length, 1);
});

test("the cache holds a bounded number of names, dropping the oldest", async () => {
  const dns = fakeDNS(
    { "a.test": A("10.0.0.1"), "b.test": A("10.0.0.2"), "c.test": A("10.0.0.3") },
    { ...LOOKUP_LIMITS, maxEntries: 2 },
  );
  for (const n of ["a.test", "b.test", "c.test", "c.test", "b.test"]) await dns.lookup(n);
  assert.deepEqual(dns.asked, ["a.test", "b.test", "c.test"]);
  await dns.lookup("a.test");
  assert.deepEqual(dns.asked, ["a.test", "b.test", "c.test", "a.test"], "a was dropped");
});

test("after a timeout, every name fails at once for 5 s without asking; then DNS is asked again", async () => {
  const dns = fakeDNS({
    "a.test": new DNSUnavailable("a.test", "ETIMEOUT"),
    "b.test": A("10.0.0.2"),
  });
  await assert.rejects(dns.lookup("a.test"), DNSUnavailable);
  dns.advance(4_999);
  await assert.rejects(dns.lookup("b.test"), (e: DNSUnavailable) => {
    assert.equal(e.reason, "DNSUnavailable");
    assert.equal(e.options.status, "Unknown");
    assert.match(e.message, /^DNS could not answer for b\.test \(ETIMEOUT\); vsop retries\.$/);
    return true;
  });
  assert.deepEqual(dns.asked, ["a.test"]);
  dns.advance(1);
  assert.deepEqual(await dns.lookup("b.test"), ["10.0.0.2"]);
});

test("a SERVFAIL for one name does not make other names fail", async () => {
  const dns = fakeDNS({
    "a.test": new DNSUnavailable("a.test", "ESERVFAIL"),
    "b.test": A("10.0.0.2"),
  });
  await assert.rejects(dns.lookup("a.test"), DNSUnavailable);
  assert.deepEqual(await dns.lookup("b.test"), ["10.0.0.2"]);
});

test("the three service names are asked at the same time", async () => {
  const delayMs = 300;
  const zone: Record<string, string> = {
    "web-prod-1.example.test": "10.12.30.20",
    "dns-30.example.test": "10.12.30.4",
    "ntp-30.example.test": "10.12.30.3",
    "proxy-30.example.test": "10.12.30.2",
  };
  const slow = async (name: string) => {
    await new Promise((r) => setTimeout(r, delayMs));
    return zone[name] ? [zone[name]] : ("notfound" as const);
  };
  const started = performance.now();
  const resolved = await resolveServer(
    parseHostname("web-prod-1.example.test"),
    effectiveNetwork({} as never),
    slow,
  );
  const ms = performance.now() - started;
  assert.equal(resolved.services.proxy.address, "10.12.30.2");
  // The A record, then the services together: two delays, not four.
  assert.ok(ms < 3 * delayMs, `resolved in ${ms.toFixed(0)} ms`);
});

test("a DNS server that never answers: the lookup gives up within its deadline, the next fails at once", async () => {
  const silent = dgram.createSocket("udp4");
  let packets = 0;
  silent.on("message", () => packets++);
  await new Promise<void>((r) => silent.bind(0, "127.0.0.1", r));
  const server = `127.0.0.1:${silent.address().port}`;
  try {
    // Three servers listed: c-ares alone would try each of them per try.
    const query = resolverQuery([server, server, server]);
    let started = performance.now();
    await assert.rejects(query("web-prod-1.example.test"), (e: DNSUnavailable) => {
      assert.equal(e.code, "ETIMEOUT");
      return true;
    });
    let ms = performance.now() - started;
    assert.ok(ms < LOOKUP_LIMITS.deadlineMs + 300, `gave up after ${ms.toFixed(0)} ms`);
    assert.ok(packets >= 1, "the question was sent");

    const lookup = dnsLookup([server]);
    await assert.rejects(lookup("web-prod-1.example.test"), DNSUnavailable);
    started = performance.now();
    await assert.rejects(lookup("dns-30.example.test"), DNSUnavailable);
    ms = performance.now() - started;
    assert.ok(ms < 50, `the next name failed in ${ms.toFixed(0)} ms`);
  } finally {
    silent.close();
  }
});
