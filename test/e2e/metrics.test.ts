// /metrics against the real stack: stock Node.js names, controller-runtime's reconcile and
// client-go's workqueue metrics, the fleet by phase from the cache, install and Puppet run
// histograms, and API request counts by status code.
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import {
  addDNS,
  apply,
  createNamespace,
  deleteServers,
  installVsop,
  metric,
  nodeDown,
  nodeUp,
  removeDNS,
  scrape,
  startOperator,
  waitFor,
  waitForCondition,
  type Operator,
} from "../support/harness.js";
import { applyClass, virtualServer } from "../support/fixtures.js";

const CLASS = "metrics-standard";
const HOST = "met-prod-1.example.test";
const UNRESOLVED = "met-prod-2.example.test"; // never in DNS: phase Waiting, NameNotResolvable
const LABELS = { "vsop-test": "metrics" };
let ns: string;
let op: Operator;

before(() => {
  installVsop();
  ns = createNamespace("metrics");
  applyClass(CLASS, { boot: { method: "guestinfo", assumeInstalled: true } });
  addDNS("10.12.30.191", HOST);
  nodeUp(HOST);
  op = startOperator("metrics", [
    "--namespace",
    ns,
    "--label-selector",
    "vsop-test=metrics",
    "--workers",
    "2",
  ]);
});

after(async () => {
  await deleteServers(ns);
  assert.equal(await op.stop(), 0);
  nodeDown(HOST);
  removeDNS(HOST);
});

test("a Ready server and a waiting one show up in every family of metrics", async () => {
  apply(virtualServer(ns, "met1", HOST, CLASS, LABELS));
  apply(virtualServer(ns, "met2", UNRESOLVED, CLASS, LABELS));
  await waitForCondition(ns, "met1", "Ready", "True", undefined, 120_000);
  await waitForCondition(ns, "met2", "Ready", "False", "NameNotResolvable", 60_000);

  // The gauges are read from the informer cache, which follows the status writes by a watch event.
  const body = await waitFor(
    "the fleet gauges show both servers",
    async () => {
      const { body } = await scrape(op.metricsPort);
      const ready = metric(body, "vsop_virtualservers", { phase: "Ready" });
      const waiting = metric(body, "vsop_virtualservers", { phase: "Waiting" });
      return ready === 1 && waiting === 1 ? body : undefined;
    },
    20_000,
  );

  // Node.js defaults under their stock names.
  assert.match(body, /^process_cpu_seconds_total \d/m);
  assert.match(body, /^nodejs_heap_size_used_bytes \d/m);
  assert.doesNotMatch(body, /^vsop_process_/m);

  // The fleet: every phase reported, the rest 0; not-ready servers by reason.
  assert.equal(metric(body, "vsop_virtualservers"), 2);
  assert.match(body, /^vsop_virtualservers\{phase="Failed"\} 0$/m);
  assert.equal(metric(body, "vsop_virtualservers_not_ready", { reason: "NameNotResolvable" }), 1);

  // controller-runtime and client-go names.
  const controller = { controller: "virtualserver" };
  const queue = { name: "virtualserver" };
  assert.ok(metric(body, "controller_runtime_reconcile_total", controller) > 0);
  assert.ok(metric(body, "controller_runtime_reconcile_total", { result: "requeue_after" }) > 0);
  assert.ok(metric(body, "controller_runtime_reconcile_errors_total", controller) > 0, "met2");
  assert.ok(metric(body, "controller_runtime_reconcile_time_seconds_count", controller) > 0);
  assert.equal(metric(body, "controller_runtime_max_concurrent_reconciles", controller), 2);
  assert.ok(metric(body, "workqueue_adds_total", queue) > 0);
  assert.ok(metric(body, "workqueue_retries_total", queue) > 0);
  assert.ok(metric(body, "workqueue_queue_duration_seconds_count", queue) > 0);
  assert.ok(metric(body, "workqueue_work_duration_seconds_count", queue) > 0);
  for (const gauge of [
    "workqueue_depth",
    "workqueue_unfinished_work_seconds",
    "workqueue_longest_running_processor_seconds",
  ])
    assert.match(
      body,
      new RegExp(`^${gauge}\\{name="virtualserver",controller="virtualserver"\\} `, "m"),
    );

  // One install, one Puppet run, each observed once.
  assert.equal(metric(body, "vsop_install_duration_seconds_count", { method: "guestinfo" }), 1);
  assert.equal(metric(body, "vsop_puppet_run_duration_seconds_count"), 1);
  assert.equal(metric(body, "vsop_puppet_runs_total", { result: "success" }), 1);

  // Kubernetes API requests by verb and status code.
  assert.ok(metric(body, "vsop_kube_requests_total", { verb: "GET", code: "200" }) > 0);
  assert.ok(metric(body, "vsop_kube_requests_total", { verb: "PUT", code: "200" }) > 0, "status");
  assert.match(body, /^vsop_leader 1$/m, "without election the one process is the leader");
});

test("a deleted server leaves the fleet gauges on the next scrape", async () => {
  await deleteServers(ns);
  await waitFor(
    "no servers in the gauges",
    async () => {
      const { body } = await scrape(op.metricsPort);
      return metric(body, "vsop_virtualservers") === 0 &&
        !/^vsop_virtualservers_not_ready\{/m.test(body)
        ? true
        : undefined;
    },
    20_000,
  );
});
