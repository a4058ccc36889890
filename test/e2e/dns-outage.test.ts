// A DNS outage neither stalls nor fails a server that already resolved. The outage is made by
// pointing the class's naming.dnsServers at a UDP socket of this test that never answers (the
// shared dnsmasq stays as it is): the Ready server keeps its recorded address and stays Ready,
// NameResolved turns Unknown (DNSUnavailable) and says since when that address stands, and a
// server that never resolved waits. Pointed back, NameResolved is True again.
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import dgram from "node:dgram";
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
  nodeDown,
  nodeUp,
  removeDNS,
  startOperator,
  waitFor,
  waitForCondition,
  type Operator,
} from "../support/harness.js";
import { applyClass, virtualServer } from "../support/fixtures.js";

const CLASS = "dns-outage";
const HOST = "dnsout-prod-1.example.test";
const ADDRESS = "10.12.30.217";
const NEVER = "dnsout-prod-2.example.test"; // created during the outage, never in DNS
const LABELS = { "vsop-test": "dns-outage" };
const BOOT = { method: "guestinfo", assumeInstalled: true };
let ns: string;
let op: Operator;
let silent: dgram.Socket;
let questions = 0;

before(async () => {
  silent = dgram.createSocket("udp4");
  silent.on("message", () => questions++);
  await new Promise<void>((r) => silent.bind(0, "127.0.0.1", r));
  installVsop();
  ns = createNamespace("dns-outage");
  applyClass(CLASS, { boot: BOOT });
  addDNS(ADDRESS, HOST);
  nodeUp(HOST);
  op = startOperator("dns-outage", ["--namespace", ns, "--label-selector", "vsop-test=dns-outage"]);
});

after(async () => {
  applyClass(CLASS, { boot: BOOT }); // DNS back, so the servers can be released
  if (ns) await deleteServers(ns);
  if (op) assert.equal(await op.stop(), 0, "operator exits 0 on SIGTERM");
  kubectl(["delete", "virtualserverclass", CLASS, "--ignore-not-found"]);
  nodeDown(HOST);
  removeDNS(HOST);
  silent.close();
});

test("DNS out: a Ready server keeps its address and stays Ready; one that never resolved waits; DNS back: resolved again", async (t) => {
  apply(virtualServer(ns, "web", HOST, CLASS, LABELS));
  const ready = await waitForCondition(ns, "web", "Ready", "True", undefined, 120_000);
  const before = ready.status!;
  assert.equal(before.address, ADDRESS);
  const resolvedAt = String(before.resolvedAt);
  const resolvedTrueAt = Date.parse(cond(ready, "NameResolved")!.lastTransitionTime);
  assert.ok(
    Math.abs(Date.parse(resolvedAt) - resolvedTrueAt) < 5000,
    `status.resolvedAt ${resolvedAt}`,
  );

  const outageStart = Date.now();
  applyClass(CLASS, {
    boot: BOOT,
    naming: { dnsServers: [`127.0.0.1:${silent.address().port}`] },
  });
  const out = await waitForCondition(
    ns,
    "web",
    "NameResolved",
    "Unknown",
    "DNSUnavailable",
    30_000,
  );
  const seconds = (Date.now() - outageStart) / 1000;
  assert.ok(questions > 0, "vsop asked the silent socket");
  const s = out.status!;
  assert.equal(s.phase, "Ready", "a Ready server stays Ready (not Failed, not Waiting)");
  assert.equal(cond(out, "Ready")?.status, "True");
  assert.equal(s.address, ADDRESS, "the recorded address stays");
  assert.deepEqual(
    [s.vlan, s.portGroup, s.services, s.resolvedAt],
    [before.vlan, before.portGroup, before.services, resolvedAt],
  );
  const message = cond(out, "NameResolved")!.message;
  assert.match(message, /\(ETIMEOUT\)/);
  assert.ok(
    message.includes(`vsop uses the address recorded at ${resolvedAt}: ${ADDRESS} (VLAN 30`),
    message,
  );
  await waitFor("a Warning event DNSUnavailable", () =>
    events(ns, "web").find((e) => e.type === "Warning" && e.reason === "DNSUnavailable"),
  );

  apply(virtualServer(ns, "never", NEVER, CLASS, LABELS));
  const never = await waitForCondition(ns, "never", "Ready", "False", "DNSUnavailable", 30_000);
  assert.equal(never.status?.phase, "Waiting");
  assert.equal(cond(never, "NameResolved")?.status, "Unknown");
  assert.equal(never.status?.address, undefined);
  assert.equal(op.proc.exitCode, null, "the operator is still running");

  applyClass(CLASS, { boot: BOOT });
  const back = await waitForCondition(ns, "web", "NameResolved", "True", "Resolved", 30_000);
  assert.equal(back.status?.phase, "Ready");
  assert.equal(back.status?.address, ADDRESS);
  // Once DNS answers again, a name that is not in it is reported as such.
  await waitForCondition(ns, "never", "NameResolved", "False", "NameNotResolvable", 30_000);
  assert.equal(getVS(ns, "web")?.status?.phase, "Ready");
  t.diagnostic(
    `outage noticed ${seconds.toFixed(1)} s after the class change; ${questions} questions to the silent socket`,
  );
});
