import { test } from "node:test";
import assert from "node:assert/strict";
import { execBounded, parseHostname, partLabels } from "../../src/naming/hostname.js";
import { deriveVLAN, fillVLAN, inCIDR } from "../../src/naming/vlan.js";
import { StepError } from "../../src/errors.js";
import { DEFAULT_NAMING_PATTERN } from "../../src/api/defaults.js";
import { compilePattern, MAX_PATTERN_LENGTH } from "../../src/naming/pattern.js";

test("default convention: <apptype>-<environment>-<instance>.<domain>", () => {
  const p = parseHostname("web-prod-1.example.com");
  assert.deepEqual(
    { a: p.apptype, e: p.environment, i: p.instance, d: p.domain, s: p.shortName },
    { a: "web", e: "prod", i: "1", d: "example.com", s: "web-prod-1" },
  );
  assert.deepEqual(partLabels(p), {
    "provisioning.vsop.dev/apptype": "web",
    "provisioning.vsop.dev/environment": "prod",
    "provisioning.vsop.dev/instance": "1",
  });
  assert.throws(
    () => parseHostname("webserver.example.com"),
    (e: StepError) => e.reason === "NameConventionViolation",
  );
  assert.throws(() => parseHostname("web-prod-x.example.com"), StepError);
});

test("a class pattern with named groups", () => {
  const p = parseHostname(
    "lon1-db-07.corp.test",
    "^(?<environment>[a-z0-9]+)-(?<apptype>[a-z]+)-(?<instance>\\d+)\\.(?<domain>.+)$",
  );
  assert.equal(p.apptype, "db");
  assert.equal(p.environment, "lon1");
  assert.throws(
    () => parseHostname("x.y", "(["),
    (e: StepError) => e.reason === "InvalidClass",
  );
});

test("VLAN from the third octet, another octet, or a CIDR map", () => {
  assert.equal(deriveVLAN("10.12.30.20", { vlanOctet: 3, vlanCIDRs: [] }), 30);
  assert.equal(deriveVLAN("10.12.30.20", { vlanOctet: 2, vlanCIDRs: [] }), 12);
  assert.equal(
    deriveVLAN("192.168.5.9", { vlanOctet: 3, vlanCIDRs: [{ cidr: "192.168.0.0/16", vlan: 700 }] }),
    700,
  );
  assert.throws(
    () => deriveVLAN("10.12.0.20", { vlanOctet: 3, vlanCIDRs: [] }),
    (e: StepError) => e.reason === "VLANNotDerivable",
  );
  assert.ok(inCIDR("10.1.2.3", "10.0.0.0/8"));
  assert.ok(!inCIDR("11.1.2.3", "10.0.0.0/8"));
  assert.equal(fillVLAN("VLAN-{vlan}", 30), "VLAN-30");
});

/** A pattern with the required groups around an apptype sub-pattern. */
const withAppType = (apptype: string) =>
  `^(?<apptype>${apptype})-(?<environment>[a-z]+)-(?<instance>[0-9]+)\\.(?<domain>.+)$`;

/** Asserts InvalidClass on NameResolved with a sentence, in well under the 50 ms a freeze would take. */
function assertRefused(pattern: string, hostname: string, message?: RegExp) {
  const started = performance.now();
  assert.throws(
    () => parseHostname(hostname, pattern),
    (e: StepError) => {
      assert.equal(e.reason, "InvalidClass", e.message);
      assert.equal(e.options.condition, "NameResolved");
      assert.match(e.message, /^The class's naming\.pattern is refused: .{20,}\.$/);
      if (message) assert.match(e.message, message);
      return true;
    },
  );
  const ms = performance.now() - started;
  assert.ok(ms < 50, `refused in ${ms.toFixed(1)} ms`);
}

test("patterns that can backtrack catastrophically are refused before they run", () => {
  // The hostname would take hours against the pattern if it were ever matched.
  const evil = `${"a".repeat(32)}!-prod-1.example.com`;
  assertRefused(
    "^(?<apptype>([a-z0-9]+-?)+)-(?<environment>[a-z]+)-(?<instance>[0-9]+)\\.(?<domain>.+)$",
    evil,
    /\(\[a-z0-9\]\+-\?\)\+ quantifies a group .*catastrophically/,
  );
  for (const [construct, named] of [
    ["(a+)+", /\(a\+\)\+ quantifies/],
    ["(a|aa)+", /\(a\|aa\)\+ repeats alternatives/],
    ["(.*a){20}", /\(\.\*a\)\{20\} quantifies/],
  ] as const) {
    assertRefused(construct, evil, named);
    assertRefused(withAppType(construct), evil, named);
  }
  // Also when the offending construct sits in another group or under an optional quantifier.
  assertRefused(withAppType("[a-z]+").replace("(?<domain>.+)", "(?<domain>([a-z]+\\.?)*)"), evil);
});

test("a verdict is kept per pattern string: compiled once, not per reconcile", () => {
  assert.equal(compilePattern(DEFAULT_NAMING_PATTERN), compilePattern(DEFAULT_NAMING_PATTERN));
  const custom = withAppType("[a-z]+");
  assert.equal(compilePattern(custom), compilePattern(custom));
});

test("reasonable patterns are accepted", () => {
  const accepted: [string, string, string][] = [
    [DEFAULT_NAMING_PATTERN, "web-prod-1.example.com", "web"],
    [withAppType("[a-z0-9-]+"), "edge-cache-prod-12.corp.test", "edge-cache"],
    [
      "^(?<apptype>[a-z]+)(?<instance>\\d{2})-(?<environment>dev|test|prod)\\.(?<domain>[a-z0-9.-]+)$",
      "db07-prod.example.com",
      "db",
    ],
  ];
  for (const [pattern, hostname, apptype] of accepted) {
    assert.equal(parseHostname(hostname, pattern).apptype, apptype, pattern);
  }
});

test("patterns without the required groups or too long are refused", () => {
  assertRefused(
    "^(?<apptype>[a-z]+)-(?<environment>[a-z]+)\\.(?<domain>.+)$",
    "web-prod.example.com",
    /lacks the named group \(\?<instance>…\)/,
  );
  assertRefused(
    "^[a-z]+-[a-z]+-[0-9]+\\..+$",
    "web-prod-1.example.com",
    /apptype.*environment.*instance/,
  );
  assertRefused(
    withAppType("[a-z]+") + "|" + "x".repeat(MAX_PATTERN_LENGTH),
    "web-prod-1.example.com",
    /at most 512/,
  );
});

test("hostnames are length-bounded before any pattern runs", () => {
  // A pattern that would fail the test by taking seconds if it ever ran on this hostname.
  const slow = "^(?<apptype>.*.*.*.*.*.*.*.*)-(?<environment>[a-z]+)-(?<instance>\\d+)x$";
  const tooLong = `${"a".repeat(59)}.`.repeat(4) + `${"b".repeat(55)}.test`;
  assert.equal(tooLong.length, 300);
  for (const [hostname, why] of [
    [tooLong, /is 300 characters long; a DNS name has at most 253/],
    [`${"a".repeat(64)}-prod-1.example.com`, /label of 71 characters; a DNS label has at most 63/],
  ] as const) {
    const started = performance.now();
    assert.throws(
      () => parseHostname(hostname, slow),
      (e: StepError) => e.reason === "NameConventionViolation" && why.test(e.message),
    );
    assert.ok(performance.now() - started < 50);
  }
});

test("one interrupted match is not enough to refuse a pattern (a starved process, not backtracking)", () => {
  const timeout = () =>
    Object.assign(new Error("Script execution timed out"), {
      code: "ERR_SCRIPT_EXECUTION_TIMEOUT",
    });
  const pattern = DEFAULT_NAMING_PATTERN;
  const re = new RegExp(pattern);
  let calls = 0;
  const starvedOnce = (r: RegExp, input: string) => {
    if (++calls === 1) throw timeout();
    return r.exec(input);
  };
  assert.equal(
    execBounded(re, "web-prod-1.example.com", pattern, starvedOnce)?.groups?.apptype,
    "web",
  );
  assert.equal(parseHostname("web-prod-1.example.com").apptype, "web", "and it is not refused");
  // Interrupted every time: refused, naming the attempts.
  const always = () => {
    throw timeout();
  };
  const other = `${pattern.slice(0, -1)}(?:)$`;
  assert.throws(
    () => execBounded(new RegExp(other), "web-prod-1.example.com", other, always),
    (e: StepError) => e.reason === "InvalidClass" && /3 times in a row/.test(e.message),
  );
});

test("a pattern the static check lets through is interrupted and then refused", () => {
  // Adjacent .* are polynomial, not exponential: star height does not see them, the match timeout does.
  const slow = "^(?<apptype>.*.*.*.*.*.*.*.*)-(?<environment>[a-z]+)-(?<instance>\\d+)x$";
  const hostname = Array.from({ length: 4 }, () => "a".repeat(60)).join(".") + ".y";
  const started = performance.now();
  assert.throws(
    () => parseHostname(hostname, slow),
    (e: StepError) => e.reason === "InvalidClass" && /took longer than/.test(e.message),
  );
  assert.ok(performance.now() - started < 1000, "interrupted, not run to the end");
  assert.throws(
    () => parseHostname("web-prod-1x", slow),
    (e: StepError) => e.reason === "InvalidClass",
    "refused from then on, even where it would match",
  );
});

test("the default pattern runs without the watchdog: cheap on every pass, linear on its worst input", () => {
  // With the watchdog (a thread per match) 20,000 parses took 2.5 s here; without it, 15 ms.
  const started = performance.now();
  for (let i = 0; i < 20_000; i++) parseHostname(`web-prod-${i}.example.com`);
  const ms = performance.now() - started;
  assert.ok(ms < 400, `20,000 parses of the default pattern took ${ms.toFixed(0)} ms`);
  // Inputs that make a pattern backtrack where it can: all digits before a missing dot, many
  // labels; each is rejected at once.
  for (const hostname of [
    `a-b-${"1".repeat(240)}`,
    `a-b-1.${"a.".repeat(120)}_`,
    `${"a".repeat(63)}-${"b".repeat(63)}-${"1".repeat(63)}`,
  ]) {
    const t = performance.now();
    assert.throws(
      () => parseHostname(hostname),
      (e: StepError) => e.reason === "NameConventionViolation",
    );
    assert.ok(performance.now() - t < 50, hostname);
  }
});
