// The metric names and semantics dashboards and alerts rely on: unprefixed Node.js defaults,
// client-go's workqueue and controller-runtime's reconcile metrics, the fleet gauges read on
// scrape, and the status code on Kubernetes API request counts.
import { test } from "node:test";
import assert from "node:assert/strict";
import { createServer } from "node:http";
import type { AddressInfo } from "node:net";
import * as k8s from "@kubernetes/client-node";
import { Kube } from "../../src/controller/kube.js";
import { WorkQueue } from "../../src/controller/queue.js";
import { Metrics } from "../../src/observability/metrics.js";
import type { VirtualServer } from "../../src/api/types.js";
import { puppetStep } from "../../src/reconcile/steps/puppet-step.js";
import { installedStep, type InstallDeps } from "../../src/reconcile/steps/install-steps.js";
import { callbacks, puppetPoll, stepContext } from "../support/step-fakes.js";

const scrape = (m: Metrics) => m.registry.metrics();

/** The sum of the samples of `name` whose labels include `labels`. */
function metric(body: string, name: string, labels: Record<string, string> = {}): number {
  let sum = 0;
  for (const line of body.split("\n")) {
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})? ([0-9.eE+-]+)$/.exec(line);
    if (m?.[1] !== name) continue;
    if (Object.entries(labels).every(([k, v]) => (m[2] ?? "").includes(`${k}="${v}"`)))
      sum += Number(m[3]);
  }
  return sum;
}

test("Node.js default metrics carry their stock names, no vsop_ prefix", async () => {
  const body = await scrape(new Metrics());
  for (const name of ["process_cpu_seconds_total", "nodejs_heap_size_used_bytes"])
    assert.match(body, new RegExp(`^${name} `, "m"), name);
  assert.doesNotMatch(body, /vsop_process_/);
});

test("the work queue reports adds, retries, waiting and work as client-go does", async () => {
  const m = new Metrics();
  const q = new WorkQueue({ baseMs: 1, maxMs: 1 }, m.controller.queueObserver);
  m.watch({ queue: q, workers: 3, servers: () => [] });
  const name = { name: "virtualserver" };
  q.add("a");
  q.add("a"); // already waiting: not an add
  q.add("b");
  let body = await scrape(m);
  assert.equal(metric(body, "workqueue_adds_total", name), 2);
  assert.equal(metric(body, "workqueue_depth", name), 2);
  assert.equal(metric(body, "vsop_workqueue_depth"), 2);
  assert.equal(metric(body, "controller_runtime_max_concurrent_reconciles"), 3);

  const key = await q.get();
  q.add(key!); // in flight: counted, and waits for its own run to end
  await new Promise((r) => setTimeout(r, 20));
  body = await scrape(m);
  assert.equal(metric(body, "workqueue_adds_total", name), 3);
  assert.equal(metric(body, "workqueue_depth", name), 2, "b, and a again");
  assert.equal(metric(body, "workqueue_queue_duration_seconds_count", name), 1);
  assert.equal(metric(body, "controller_runtime_active_workers"), 1);
  assert.ok(metric(body, "workqueue_longest_running_processor_seconds", name) >= 0.015);
  assert.ok(metric(body, "workqueue_unfinished_work_seconds", name) >= 0.015);

  q.done(key!);
  q.addRateLimited("c");
  q.addAfter("d", 0);
  body = await scrape(m);
  assert.equal(metric(body, "workqueue_work_duration_seconds_count", name), 1);
  assert.ok(metric(body, "workqueue_work_duration_seconds_sum", name) >= 0.015);
  assert.equal(metric(body, "workqueue_retries_total", name), 2, "every delayed add");
  assert.equal(metric(body, "workqueue_longest_running_processor_seconds", name), 0);
  q.shutDown();
});

test("reconciles are counted by controller-runtime's result, errors and time", async () => {
  const m = new Metrics();
  let body = await scrape(m);
  const c = { controller: "virtualserver" };
  for (const result of ["success", "error", "requeue", "requeue_after"])
    assert.match(
      body,
      new RegExp(
        `^controller_runtime_reconcile_total\\{controller="virtualserver",result="${result}"\\} 0$`,
        "m",
      ),
      `${result} exists from the start`,
    );
  m.controller.reconciled("success", 0.2);
  m.controller.reconciled("requeue_after", 0.1);
  m.controller.reconciled("error", 0.3);
  body = await scrape(m);
  assert.equal(metric(body, "controller_runtime_reconcile_total", c), 3);
  assert.equal(metric(body, "controller_runtime_reconcile_total", { result: "requeue_after" }), 1);
  assert.equal(metric(body, "controller_runtime_reconcile_errors_total", c), 1);
  assert.equal(metric(body, "controller_runtime_reconcile_time_seconds_count", c), 3);
});

const vs = (phase?: string, ready?: { status: string; reason: string }): VirtualServer =>
  ({
    metadata: { name: "x", namespace: "ns" },
    spec: {},
    status: phase
      ? {
          phase,
          conditions: ready
            ? [{ type: "Ready", message: "", lastTransitionTime: "", ...ready }]
            : [],
        }
      : undefined,
  }) as unknown as VirtualServer;

test("the fleet gauges are read from the cache on scrape, with bounded labels", async () => {
  const m = new Metrics();
  let servers: VirtualServer[] = [
    vs(),
    vs("Ready", { status: "True", reason: "Provisioned" }),
    vs("Ready", { status: "True", reason: "Provisioned" }),
    vs("Installing", { status: "False", reason: "InstallTimedOut" }),
    vs("Waiting", { status: "Unknown", reason: "VCenterUnreachable" }),
    vs("Sideways", { status: "False", reason: "not a reason {}" }),
  ];
  m.watch({ queue: new WorkQueue(), workers: 1, servers: () => servers });
  let body = await scrape(m);
  const phase = (p: string) => metric(body, "vsop_virtualservers", { phase: p });
  assert.equal(phase("Ready"), 2);
  assert.equal(phase("Pending"), 1, "not reconciled yet");
  assert.equal(phase("Installing"), 1);
  assert.equal(phase("Unknown"), 1);
  assert.match(body, /^vsop_virtualservers\{phase="Failed"\} 0$/m, "zeros are reported");
  const notReady = (reason: string) => metric(body, "vsop_virtualservers_not_ready", { reason });
  assert.equal(notReady("InstallTimedOut"), 1);
  assert.equal(notReady("VCenterUnreachable"), 1);
  assert.equal(notReady("Other"), 1);
  assert.equal(notReady("Provisioned"), 0);

  servers = [vs("Ready", { status: "True", reason: "Provisioned" })];
  body = await scrape(m);
  assert.equal(phase("Ready"), 1);
  assert.equal(phase("Installing"), 0);
  assert.doesNotMatch(body, /^vsop_virtualservers_not_ready\{/m, "cleared reasons go away");
});

test("Kubernetes API requests are counted with their status code, or 'error'", async (t) => {
  const server = createServer((req, res) => {
    res.writeHead(req.url?.startsWith("/missing") ? 404 : 200, {
      "content-type": "application/json",
    });
    res.end("{}");
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  t.after(() => server.close());
  const kube = (port: number) => {
    const kc = new k8s.KubeConfig();
    kc.loadFromOptions({
      clusters: [{ name: "c", server: `http://127.0.0.1:${port}`, skipTLSVerify: true }],
      users: [{ name: "u", token: "t" }],
      contexts: [{ name: "x", cluster: "c", user: "u" }],
      currentContext: "x",
    });
    return new Kube(kc);
  };
  const seen: string[] = [];
  const k = kube((server.address() as AddressInfo).port);
  k.countRequests((verb, _path, code) => seen.push(`${verb} ${code}`));
  await k.get("/api/v1/namespaces");
  await assert.rejects(k.get("/missing"));
  const closed = kube(1); // nothing listens on port 1
  closed.countRequests((verb, _path, code) => seen.push(`${verb} ${code}`));
  await assert.rejects(closed.create("/api/v1/namespaces", {}));
  assert.deepEqual(seen, ["GET 200", "GET 404", "POST error"]);
});

test("a finished Puppet run is reported once: request to finish, and whether it failed", async () => {
  const requestedAt = "2026-11-26T10:00:00.000Z";
  const runs: [number, boolean][] = [];
  for (const failedResources of [0, 2, -1]) {
    const { ctx, pool, calls } = puppetPoll(requestedAt, {
      lastrun: Date.parse(requestedAt) / 1000 + 42,
      failedResources,
    });
    const step = puppetStep(
      pool,
      calls,
      async () => undefined,
      (s, failed) => runs.push([s, failed]),
    );
    await step.run(ctx); // asks for the summary
    await callbacks();
    await step.run(ctx).catch(() => undefined); // failures are StepErrors; reported all the same
    await step.run(ctx).catch(() => undefined); // the run is known now: not reported again
  }
  assert.deepEqual(runs, [
    [42, false],
    [42, true],
    [42, true],
  ]);
});

test("an install is reported once, power-on to installed, by boot method", async () => {
  const installs: [string, number][] = [];
  const deps = {
    tokens: { get: async () => undefined },
    onInstalled: (method: string, seconds: number) => installs.push([method, seconds]),
  } as unknown as InstallDeps;
  const ctx = stepContext(
    { install: { startedAt: new Date(Date.now() - 90_000).toISOString() } },
    { boot: { method: "guestinfo", assumeInstalled: true } },
  );
  const step = installedStep(deps);
  await step.run(ctx);
  await step.run(ctx);
  assert.equal(installs.length, 1);
  assert.equal(installs[0]![0], "guestinfo");
  assert.ok(Math.abs(installs[0]![1] - 90) < 5, `${installs[0]![1]}s`);
});
