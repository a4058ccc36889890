// What a datacenter team installs: the shipped RBAC is enough and no more, two replicas elect one
// leader, metrics and probes answer, and kubectl get/wait/describe show what users need.
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { setTimeout as sleep } from "node:timers/promises";
import { execFileSync } from "node:child_process";
import {
  addDNS,
  apply,
  createNamespace,
  deleteServers,
  installVsop,
  kubectl,
  kubectlTry,
  metric,
  nodeDown,
  nodeUp,
  operatorKubeconfig,
  scrape,
  startOperator,
  waitFor,
  waitForCondition,
  type Operator,
} from "../support/harness.js";
import { applyClass, virtualServer } from "../support/fixtures.js";
import { findVMs } from "../support/govc.js";
import { stackEnv } from "../support/env.js";

const CLASS = "ship-assumed";
const LABELS = { "vsop-test": "ship" };
const FLAGS = ["--label-selector", "vsop-test=ship", "--resync-period", "3s", "--leader-elect"];
const LEASE = ["--leader-election-id", "vsop-ship-test", "--lease-duration", "4s"];
let ns: string;
const ops: Operator[] = [];

before(() => {
  installVsop();
  ns = createNamespace("ship");
  applyClass(CLASS, { boot: { method: "guestinfo", assumeInstalled: true } });
  for (const i of [1, 2, 3]) {
    addDNS(`10.12.30.${90 + i}`, `ship-prod-${i}.example.test`);
    nodeUp(`ship-prod-${i}.example.test`);
  }
});

after(async () => {
  const live = ops.filter((o) => o.proc.exitCode === null && o.proc.signalCode === null);
  if (live.length === 0) ops.push(startOperator("ship-cleanup", [...FLAGS, ...LEASE]));
  await deleteServers(ns, 120_000);
  for (const o of ops) await o.stop();
  for (const i of [1, 2, 3]) nodeDown(`ship-prod-${i}.example.test`);
});

test("the ServiceAccount's token is refused what vsop must not do", () => {
  const kc = operatorKubeconfig();
  const as = (args: string[]) => kubectlTry(["--kubeconfig", kc, ...args]);
  for (const args of [
    ["get", "pods", "-A"],
    ["-n", "default", "get", "secrets"],
    ["-n", "kube-system", "get", "secret", "anything"],
    ["delete", "crd", "virtualservers.provisioning.vsop.dev", "--dry-run=server"],
    ["-n", ns, "create", "configmap", "x", "--from-literal=a=b"],
  ]) {
    const r = as(args);
    assert.equal(r.ok, false, `allowed: kubectl ${args.join(" ")}`);
    assert.match(r.out, /forbidden/i, args.join(" "));
  }
  assert.equal(as(["-n", "vsop-system", "get", "secrets"]).ok, true, "its own namespace's Secrets");
  assert.equal(as(["get", "virtualserverclasses"]).ok, true);
});

test("two replicas: one leader reconciles; SIGKILL it and the other takes over within the lease", async () => {
  ops.push(startOperator("ship-a", [...FLAGS, ...LEASE]));
  await sleep(1500);
  ops.push(startOperator("ship-b", [...FLAGS, ...LEASE]));
  const leaderOf = async () => {
    const flags = await Promise.all(
      ops.map(async (o) => metric((await scrape(o.metricsPort)).body, "vsop_leader")),
    );
    return flags;
  };
  const [a, b] = await waitFor(
    "exactly one leader",
    async () => {
      const f = await leaderOf();
      return f[0]! + f[1]! === 1 ? f : undefined;
    },
    20_000,
  );
  const leader = a === 1 ? ops[0]! : ops[1]!;
  const standby = a === 1 ? ops[1]! : ops[0]!;
  assert.equal(a! + b!, 1);

  apply(virtualServer(ns, "ship1", "ship-prod-1.example.test", CLASS, LABELS));
  await waitForCondition(ns, "ship1", "Ready", "True", undefined, 120_000);
  const standbyReconciles = metric(
    (await scrape(standby.metricsPort)).body,
    "vsop_reconciles_total",
  );
  assert.equal(standbyReconciles, 0, "the standby does not reconcile");

  leader.proc.kill("SIGKILL");
  const killedAt = Date.now();
  await waitFor(
    "the standby leads",
    async () => metric((await scrape(standby.metricsPort)).body, "vsop_leader") === 1,
    20_000,
  );
  const takeover = (Date.now() - killedAt) / 1000;
  assert.ok(takeover <= 4 + 2, `took over in ${takeover}s (lease 4s)`);

  apply(virtualServer(ns, "ship2", "ship-prod-2.example.test", CLASS, LABELS));
  await waitForCondition(ns, "ship2", "Ready", "True", undefined, 120_000);
  assert.equal(findVMs("ship-prod-1").length, 1, "no second VM for ship1");
  assert.equal(findVMs("ship-prod-2").length, 1);
});

test("metrics and probes answer", async () => {
  const op = ops.find((o) => o.proc.exitCode === null && o.proc.signalCode === null)!;
  assert.equal((await scrape(op.healthPort, "/healthz")).status, 200);
  assert.equal((await scrape(op.healthPort, "/readyz")).status, 200);
  const { status, body } = await scrape(op.metricsPort);
  assert.equal(status, 200);
  assert.ok(metric(body, "vsop_reconciles_total", { outcome: "success" }) > 0);
  assert.ok(metric(body, "vsop_reconcile_duration_seconds_count") > 0);
  assert.match(body, /^vsop_workqueue_depth \d+/m);
  assert.ok(metric(body, "vsop_vsphere_soap_requests_total", { method: "CreateVM_Task" }) >= 1);
  assert.ok(
    metric(body, "vsop_mcollective_requests_total", { agent: "puppet", action: "runonce" }) >= 1,
  );
  assert.ok(metric(body, "vsop_kube_requests_total") > 0);
});

test("kubectl get shows the columns, wait works, describe shows the Events", async () => {
  apply(virtualServer(ns, "ship3", "ship-prod-3.example.test", CLASS, LABELS));
  const waited = execFileSync(
    "kubectl",
    ["-n", ns, "wait", "--for=condition=Ready", "vsrv/ship3", "--timeout=120s"],
    { encoding: "utf8", env: { ...process.env, KUBECONFIG: stackEnv("KUBECONFIG") } },
  );
  assert.match(waited, /condition met/);
  const table = kubectl(["-n", ns, "get", "vsrv", "ship3"]);
  const [header, row] = table.trim().split("\n");
  assert.match(
    header!,
    /^NAME\s+HOSTNAME\s+ADDRESS\s+VLAN\s+PHASE\s+READY\s+INSTALLING-SINCE\s+AGE$/,
  );
  assert.match(
    row!,
    /^ship3\s+ship-prod-3\.example\.test\s+10\.12\.30\.93\s+30\s+Ready\s+True\s+\S+\s+\S+$/,
  );
  const wide = kubectl(["-n", ns, "get", "vsrv", "ship3", "-o", "wide"]);
  assert.match(wide, /REASON\s+VM\s+MESSAGE\s+AGE/);
  assert.match(wide, /is provisioned and configured\./);
  const described = kubectl(["-n", ns, "describe", "vsrv", "ship3"]);
  assert.match(described, /Events:/);
  assert.match(described, /Normal\s+Provisioned/);
});
