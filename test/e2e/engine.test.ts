// The controller engine against the real apiserver: converged objects cost zero writes, scoping
// by namespace and label selector, and a clean exit on SIGTERM.
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { setTimeout as sleep } from "node:timers/promises";
import {
  addDNS,
  apply,
  auditEvents,
  createNamespace,
  deleteServers,
  getVS,
  installVsop,
  metric,
  nodeDown,
  nodeUp,
  scrape,
  startOperator,
  waitForCondition,
  WRITE_VERBS,
  type Operator,
} from "../support/harness.js";
import { applyClass, virtualServer } from "../support/fixtures.js";

const CLASS = "engine-standard";
let ns: string;
let other: string;
let op: Operator;

before(() => {
  installVsop();
  ns = createNamespace("engine");
  other = createNamespace("engine-other");
  applyClass(CLASS, { boot: { method: "guestinfo", assumeInstalled: true } });
  addDNS("10.12.30.50", "eng-prod-1.example.test");
  addDNS("10.12.30.51", "eng-prod-2.example.test");
  nodeUp("eng-prod-1.example.test");
  op = startOperator("engine", [
    "--namespace",
    ns,
    "--label-selector",
    "vsop-test=engine",
    "--resync-period",
    "1s",
    "--workers",
    "2",
  ]);
});

after(async () => {
  await deleteServers(ns);
  await deleteServers(other);
  assert.equal(await op.stop(), 0);
  nodeDown("eng-prod-1.example.test");
});

test("a converged object costs zero API writes on resync", async () => {
  apply(virtualServer(ns, "eng", "eng-prod-1.example.test", CLASS, { "vsop-test": "engine" }));
  const ready = await waitForCondition(ns, "eng", "Ready", "True", undefined, 120_000);
  assert.equal(ready.status?.observedGeneration, ready.metadata.generation);
  await sleep(1500); // let the last watch events settle
  const since = new Date();
  const before = metric((await scrape(op.metricsPort)).body, "vsop_reconciles_total");
  await sleep(5000);
  const reconciles = metric((await scrape(op.metricsPort)).body, "vsop_reconciles_total") - before;
  assert.ok(reconciles >= 3, `resync reconciled the object (${reconciles} times)`);
  // Writes by this operator's identity to this test's namespace (other suites may run operators too).
  const writes = auditEvents(since).filter(
    (e) => WRITE_VERBS.has(e.verb) && e.objectRef?.namespace === ns,
  );
  assert.deepEqual(
    writes.map((e) => `${e.verb} ${e.objectRef?.resource}/${e.objectRef?.subresource ?? ""}`),
    [],
  );
});

test("objects outside --namespace or --label-selector are left alone", async () => {
  apply(
    virtualServer(other, "elsewhere", "eng-prod-2.example.test", CLASS, { "vsop-test": "engine" }),
  );
  apply(virtualServer(ns, "unlabelled", "eng-prod-2.example.test", CLASS, {}));
  await sleep(4000);
  assert.equal(getVS(other, "elsewhere")?.status, undefined);
  assert.equal(getVS(ns, "unlabelled")?.status, undefined);
  assert.equal(getVS(ns, "unlabelled")?.metadata.finalizers, undefined);
});
