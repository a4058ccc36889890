// A class whose naming pattern backtracks catastrophically is refused before it runs: the server
// gets InvalidClass, nothing reaches vSphere, and the operator's event loop stays free throughout
// (before the fix, a 30-character label made /healthz miss every one-second deadline).
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { once } from "node:events";
import { Worker } from "node:worker_threads";
import {
  apply,
  cond,
  createNamespace,
  deleteServers,
  events,
  installVsop,
  kubectl,
  metric,
  scrape,
  startOperator,
  waitFor,
  waitForCondition,
  type Operator,
} from "../support/harness.js";
import { applyClass, virtualServer } from "../support/fixtures.js";
import { findVMs } from "../support/govc.js";

const LABELS = { "vsop-test": "naming-safety" };
const CLASS = "naming-catastrophic";
const PATTERN =
  "^(?<apptype>([a-z0-9]+-?)+)-(?<environment>[a-z]+)-(?<instance>[0-9]+)\\.(?<domain>.+)$";
// 32 characters of apptype and a non-numeric instance: 2^31 ways to fail if the pattern ever ran.
const SHORT_NAME = "abcdefghijklmnopqrstuvwxyzabcdef-prod-x";
const HOSTNAME = `${SHORT_NAME}.example.test`;
let ns: string;
let op: Operator;

before(() => {
  installVsop();
  ns = createNamespace("naming-safety");
  op = startOperator("naming-safety", [
    "--label-selector",
    "vsop-test=naming-safety",
    "--resync-period",
    "2s",
  ]);
});

after(async () => {
  await deleteServers(ns);
  assert.equal(await op.stop(), 0, "operator exits 0 on SIGTERM");
  kubectl(["delete", "virtualserverclass", CLASS, "--ignore-not-found"]);
});

// The prober runs in a worker thread: the harness's kubectl calls are synchronous and would
// otherwise stall the probes themselves and count against the operator.
const PROBER = `
const { workerData, parentPort } = require("node:worker_threads");
(async () => {
  const failures = [];
  const until = Date.now() + workerData.ms;
  let probes = 0;
  while (Date.now() < until) {
    const started = Date.now();
    try {
      const res = await fetch("http://127.0.0.1:" + workerData.port + "/healthz", {
        signal: AbortSignal.timeout(1000),
      });
      await res.text();
      if (res.status !== 200) failures.push("status " + res.status);
    } catch (err) {
      failures.push("no answer within 1 s after " + (Date.now() - started) + " ms (" + err + ")");
    }
    probes++;
    await new Promise((r) => setTimeout(r, Math.max(0, 200 - (Date.now() - started))));
  }
  parentPort.postMessage({ probes, failures });
})();
`;

/** Polls /healthz every ~200 ms for `ms`; returns each probe's failure (slow, error, not 200). */
async function probeHealth(port: number, ms: number): Promise<string[]> {
  const worker = new Worker(PROBER, { eval: true, workerData: { port, ms } });
  const [{ probes, failures }] = (await once(worker, "message")) as [
    { probes: number; failures: string[] },
  ];
  assert.ok(probes >= 30, `probed /healthz ${probes} times`);
  return failures;
}

test("a catastrophic naming pattern → InvalidClass, nothing in vSphere, /healthz keeps answering", async () => {
  await waitFor(
    "operator healthy",
    async () => (await scrape(op.healthPort, "/healthz")).status === 200,
  );
  const health = probeHealth(op.healthPort, 10_000);

  applyClass(CLASS, { naming: { pattern: PATTERN } });
  apply(virtualServer(ns, "evil", HOSTNAME, CLASS, LABELS));
  const obj = await waitForCondition(ns, "evil", "Ready", "False", "InvalidClass", 30_000);
  const named = cond(obj, "NameResolved")!;
  assert.equal(named.status, "False");
  assert.equal(named.reason, "InvalidClass");
  assert.match(named.message, /naming\.pattern is refused: .*\(\[a-z0-9\]\+-\?\)\+.*\.$/);
  await waitFor("Warning event InvalidClass", () =>
    events(ns, "evil").find((e) => e.type === "Warning" && e.reason === "InvalidClass"),
  );

  assert.deepEqual(await health, [], "every /healthz probe answered 200 within 1 s");
  assert.equal(op.proc.exitCode, null, "the operator is still running");
  assert.deepEqual(findVMs(SHORT_NAME), [], "no VM was created");
  const { body } = await scrape(op.metricsPort);
  assert.equal(metric(body, "vsop_vsphere_soap_requests_total"), 0, "vSphere was never called");
  assert.ok(metric(body, "vsop_reconcile_errors_total", { reason: "InvalidClass" }) >= 1);
});
