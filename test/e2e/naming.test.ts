// Accepted but not provisionable: each case gets Ready=False with its own reason, a sentence, a
// Warning Event and no vSphere call; the retrying ones go on by themselves once fixed.
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import {
  addDNS,
  apply,
  cond,
  createNamespace,
  deleteServers,
  events,
  getVS,
  installVsop,
  kubectl,
  metric,
  removeDNS,
  scrape,
  startOperator,
  waitFor,
  waitForCondition,
  type Operator,
} from "../support/harness.js";
import { applyClass, virtualServer } from "../support/fixtures.js";

const LABELS = { "vsop-test": "naming" };
const CLASS = "naming-standard";
let ns: string;
let ns2: string;
let op: Operator;

before(() => {
  installVsop();
  ns = createNamespace("naming");
  ns2 = createNamespace("naming-b");
  applyClass(CLASS);
  kubectl(["delete", "virtualserverclass", "naming-later", "--ignore-not-found"]);
  op = startOperator("naming", ["--label-selector", "vsop-test=naming", "--resync-period", "5s"]);
});

after(async () => {
  await deleteServers(ns);
  await deleteServers(ns2);
  assert.equal(await op.stop(), 0, "operator exits 0 on SIGTERM");
  kubectl(["delete", "virtualserverclass", "naming-later", "naming-deaddns", "--ignore-not-found"]);
});

function vs(name: string, hostname: string, className = CLASS, namespace = ns) {
  apply(virtualServer(namespace, name, hostname, className, LABELS));
}

async function expectRefused(
  name: string,
  reason: string,
  condType = "NameResolved",
  status = "False",
) {
  const obj = await waitForCondition(ns, name, "Ready", "False", reason);
  const c = cond(obj, condType)!;
  assert.equal(c.status, status, `${condType} of ${name}`);
  assert.equal(c.reason, reason);
  assert.match(c.message, /\S.{20,}\.$/, "the message is a sentence");
  await waitFor(`Warning event ${reason} on ${name}`, () =>
    events(ns, name).find((e) => e.type === "Warning" && e.reason === reason),
  );
  return obj;
}

test("name outside the convention → NameConventionViolation", async () => {
  vs("badname", "webserver.example.test");
  await expectRefused("badname", "NameConventionViolation");
});

test("address without a VLAN → VLANNotDerivable", async () => {
  addDNS("10.12.0.40", "zero-prod-1.example.test");
  vs("novlan", "zero-prod-1.example.test");
  await expectRefused("novlan", "VLANNotDerivable");
});

test("A records in two VLANs → AmbiguousAddress", async () => {
  addDNS("10.12.30.41", "twin-prod-1.example.test");
  addDNS("10.12.10.41", "twin-prod-1.example.test");
  vs("ambiguous", "twin-prod-1.example.test");
  const obj = await expectRefused("ambiguous", "AmbiguousAddress");
  assert.match(cond(obj, "NameResolved")!.message, /10\.12\.10\.41.*10\.12\.30\.41/);
});

test("a per-VLAN service name missing → ServiceNameMissing", async () => {
  addDNS("10.12.40.20", "app-prod-1.example.test");
  vs("nosvc", "app-prod-1.example.test");
  const obj = await expectRefused("nosvc", "ServiceNameMissing");
  assert.match(cond(obj, "NameResolved")!.message, /(dns|ntp|proxy)-40\.example\.test/);
});

test("DNS server down → NameResolved=Unknown, DNSUnavailable, retried, no crash", async () => {
  applyClass("naming-deaddns", { naming: { dnsServers: ["127.0.0.1:9"] } });
  vs("deaddns", "web-prod-1.example.test", "naming-deaddns");
  await expectRefused("deaddns", "DNSUnavailable", "NameResolved", "Unknown");
  assert.equal(op.proc.exitCode, null, "the operator is still running");
});

test("nothing was asked of vSphere for any of these", async () => {
  const { body } = await scrape(op.metricsPort);
  assert.equal(metric(body, "vsop_vsphere_soap_requests_total"), 0);
  assert.ok(
    metric(body, "vsop_reconcile_errors_total", { reason: "NameConventionViolation" }) >= 1,
  );
});

test("an error is recorded once, not once per retry", async () => {
  await new Promise((r) => setTimeout(r, 6000)); // several backoff retries and a resync
  const warnings = events(ns, "badname").filter((e) => e.reason === "NameConventionViolation");
  assert.equal(warnings.length, 1);
});

test("name not in DNS → NameNotResolvable, then goes on by itself when the record appears", async () => {
  vs("late", "late-prod-1.example.test");
  await expectRefused("late", "NameNotResolvable");
  addDNS("10.12.30.42", "late-prod-1.example.test");
  const obj = await waitForCondition(ns, "late", "NameResolved", "True", "Resolved", 30_000);
  assert.equal(obj.status?.address, "10.12.30.42");
  assert.equal(obj.status?.vlan, 30);
  assert.deepEqual(obj.status?.services, {
    dns: { name: "dns-30.example.test", address: "10.12.30.4" },
    ntp: { name: "ntp-30.example.test", address: "10.12.30.3" },
    proxy: { name: "proxy-30.example.test", address: "10.12.30.2" },
  });
  assert.equal(obj.metadata.labels?.["provisioning.vsop.dev/apptype"], "late");
  assert.equal(obj.metadata.labels?.["provisioning.vsop.dev/environment"], "prod");
  assert.equal(obj.metadata.labels?.["provisioning.vsop.dev/instance"], "1");
  removeDNS("late-prod-1.example.test");
});

test("class missing → ClassNotFound, then goes on when the class is created", async () => {
  vs("classless", "db-prod-1.example.test", "naming-later");
  const obj = await waitForCondition(ns, "classless", "Ready", "False", "ClassNotFound");
  assert.match(cond(obj, "Ready")!.message, /naming-later/);
  applyClass("naming-later");
  await waitForCondition(ns, "classless", "NameResolved", "True", "Resolved", 30_000);
});

test("the same hostname in another namespace → HostnameConflict on the later one only", async () => {
  addDNS("10.12.30.43", "dup-prod-1.example.test");
  vs("first", "dup-prod-1.example.test");
  await waitForCondition(ns, "first", "NameResolved", "True");
  vs("second", "dup-prod-1.example.test", CLASS, ns2);
  await waitFor("HostnameConflict on the later object", () => {
    const c = cond(getVS(ns2, "second"), "Ready");
    return c?.reason === "HostnameConflict" ? c : undefined;
  });
  assert.match(cond(getVS(ns2, "second"), "Ready")!.message, new RegExp(`${ns}/first`));
  assert.equal(cond(getVS(ns, "first"), "NameResolved")?.status, "True");
});
