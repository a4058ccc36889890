// Puppet runs under control, end to end with real mcollectived nodes (hack/node-up.sh) running
// puppet apply through vsop's agent plugin: noop reports without changing, the run-requested
// annotation asks for exactly one run, a class's maxConcurrentRuns holds for a fleet (measured
// from the nodes' own logs), and an operator killed right after it sent a runonce, before it
// heard the answer, costs no second run.
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { existsSync, readFileSync } from "node:fs";
import path from "node:path";
import {
  addDNSRecords,
  apply,
  cond,
  createNamespace,
  deleteServers,
  getVS,
  installVsop,
  kubectl,
  nodeDown,
  nodeUp,
  removeDNSNames,
  startOperator,
  waitFor,
  waitForCondition,
  type Operator,
} from "../support/harness.js";
import { applyClass, virtualServer } from "../support/fixtures.js";
import { stackEnv } from "../support/env.js";
import { TcpProxy } from "../support/proxy.js";

const CLASS = "pruns-assumed";
const KILL_CLASS = "pruns-kill";
const LABELS = { "vsop-test": "puppet-runs" };
const KILL_LABELS = { "vsop-test": "puppet-runs-kill" };
const MAX = 3;
const FLEET = Array.from({ length: 12 }, (_, i) => ({
  name: `pfleet-${i + 1}`,
  hostname: `pfleet-prod-${i + 1}.example.test`,
  address: `10.12.30.${240 + i}`,
}));
const NOOP = { name: "pnoop", hostname: "pnoop-prod-1.example.test", address: "10.12.30.252" };
const REQ = { name: "preq", hostname: "preq-prod-1.example.test", address: "10.12.30.253" };
const KILL = { name: "pkill", hostname: "pkill-prod-1.example.test", address: "10.12.30.254" };
const WARM = { name: "pwarm", hostname: "pwarm-prod-1.example.test", address: "10.12.30.239" };
const ALL = [...FLEET, NOOP, REQ, KILL, WARM];
const ANNOTATION = "provisioning.vsop.dev/puppet-run-requested-at";

let ns: string;
let op: Operator;
const stackDir = () => stackEnv("VSOP_STACK_DIR");
const nodeDir = (fqdn: string) => path.join(stackDir(), "nodes", fqdn);
const mcoLog = (fqdn: string) => path.join(stackDir(), "logs", `mco-${fqdn}.log`);
const read = (file: string) => (existsSync(file) ? readFileSync(file, "utf8") : "");

/** The runs a node's agent started and ended, by its own log (epoch seconds, node clock). */
function agentRuns(fqdn: string): { start: number; end?: number }[] {
  const runs = new Map<string, { start: number; end?: number }>();
  for (const line of read(mcoLog(fqdn)).split("\n")) {
    const m = /vsop puppet run (started|ended): pid (\d+) at ([\d.]+)/.exec(line);
    if (!m) continue;
    if (m[1] === "started") runs.set(m[2]!, { start: Number(m[3]) });
    else if (runs.has(m[2]!)) runs.get(m[2]!)!.end = Number(m[3]);
  }
  return [...runs.values()];
}

/** counter.pp's record on the node: one "start" line per run. */
const counted = (fqdn: string) =>
  read(path.join(nodeDir(fqdn), "runs.log"))
    .split("\n")
    .filter((l) => l.startsWith("start")).length;

/** The most intervals open at one moment. */
function maxOverlap(intervals: { start: number; end: number }[]): number {
  const edges = intervals.flatMap((r) => [
    [r.start, 1],
    [r.end, -1],
  ]);
  // An end before a start at the same instant: back-to-back runs do not overlap.
  edges.sort((a, b) => a[0]! - b[0]! || a[1]! - b[1]!);
  let open = 0;
  let most = 0;
  for (const [, d] of edges) most = Math.max(most, (open += d!));
  return most;
}

before(() => {
  installVsop();
  ns = createNamespace("pruns");
  // Images that need no install: the servers go straight to the Puppet step.
  applyClass(CLASS, {
    boot: { method: "guestinfo", assumeInstalled: true },
    puppet: { maxConcurrentRuns: MAX },
  });
  removeDNSNames(ALL.map((s) => s.hostname));
  addDNSRecords(ALL.map((s) => [s.address, s.hostname]));
  for (const s of ALL) nodeDown(s.hostname); // leftovers of an interrupted run
  op = startOperator("puppet-runs", ["--label-selector", "vsop-test=puppet-runs"]);
});

after(async () => {
  await deleteServers(ns, 120_000);
  assert.equal(await op.stop(), 0);
  for (const s of ALL) nodeDown(s.hostname);
});

test("noop reports what would change and changes nothing; turning it off applies", async () => {
  nodeUp(NOOP.hostname, "web.pp");
  apply(virtualServer(ns, NOOP.name, NOOP.hostname, CLASS, LABELS, { puppet: { noop: true } }));
  const vs = await waitForCondition(ns, NOOP.name, "Ready", "True", undefined, 120_000);
  const applied = cond(vs, "PuppetApplied");
  assert.equal(applied?.reason, "Noop", applied?.message);
  const p = vs.status?.puppet as { noop?: boolean; changed: number; outOfSync: number };
  assert.equal(p.noop, true);
  assert.equal(p.changed, 0);
  assert.ok(p.outOfSync >= 2, `out of sync ${p.outOfSync}: the directory and the page`);
  assert.match(applied!.message, new RegExp(`${p.outOfSync} of \\d+ resources would change`));
  const page = path.join(nodeDir(NOOP.hostname), "www/index.html");
  assert.ok(!existsSync(page), "a noop run wrote nothing");

  kubectl([
    "-n",
    ns,
    "patch",
    "vsrv",
    NOOP.name,
    "--type=merge",
    "-p",
    '{"spec":{"puppet":{"noop":false}}}',
  ]);
  await waitFor(
    "the real run applied",
    () => cond(getVS(ns, NOOP.name), "PuppetApplied")?.reason === "Applied",
    120_000,
  );
  assert.ok(existsSync(page), "the real run wrote the page");
  assert.equal(agentRuns(NOOP.hostname).length, 2);
});

test("the run-requested annotation asks for exactly one run per value", async () => {
  nodeUp(REQ.hostname, "counter.pp");
  apply(virtualServer(ns, REQ.name, REQ.hostname, CLASS, LABELS));
  await waitForCondition(ns, REQ.name, "Ready", "True", undefined, 120_000);
  assert.equal(counted(REQ.hostname), 1);

  const value = new Date().toISOString();
  kubectl(["-n", ns, "annotate", "vsrv", REQ.name, "--overwrite", `${ANNOTATION}=${value}`]);
  await waitFor(
    "the requested run finished",
    () => {
      const v = getVS(ns, REQ.name);
      const p = v?.status?.puppet as {
        requestedFor?: string;
        finishedFor?: string;
        requestedAt?: string;
      };
      return (
        p?.requestedFor === value &&
        p.finishedFor === p.requestedAt &&
        cond(v, "Ready")?.status === "True"
      );
    },
    120_000,
  );
  assert.equal(counted(REQ.hostname), 2);
  // The same value again (Argo CD re-applying it, a resync, a restart) asks for nothing.
  kubectl(["-n", ns, "annotate", "vsrv", REQ.name, "--overwrite", `${ANNOTATION}=${value}`]);
  await new Promise((r) => setTimeout(r, 10_000));
  assert.equal(counted(REQ.hostname), 2);
  assert.equal(agentRuns(REQ.hostname).length, 2);
});

test(`${FLEET.length} servers, maxConcurrentRuns ${MAX}: never more runs at once, by the nodes' logs`, async (t) => {
  for (const s of FLEET) nodeUp(s.hostname, "counter.pp");
  const t0 = Date.now();
  for (const s of FLEET) apply(virtualServer(ns, s.name, s.hostname, CLASS, LABELS));
  await waitFor(
    "the fleet Ready",
    () => FLEET.every((s) => cond(getVS(ns, s.name), "Ready")?.status === "True"),
    600_000,
  );
  const runs = FLEET.flatMap((s) => agentRuns(s.hostname));
  assert.equal(runs.length, FLEET.length, "one run per server");
  const closed = runs.map((r) => ({ start: r.start, end: r.end ?? Infinity }));
  const byAgents = maxOverlap(closed);
  // The manifest's own record (inside each run) says the same.
  const inside = FLEET.flatMap((s) => {
    const lines = read(path.join(nodeDir(s.hostname), "runs.log"))
      .trim()
      .split("\n");
    const at = (w: string) => Number(lines.find((l) => l.startsWith(w))?.split(" ")[1]);
    return [{ start: at("start"), end: at("end") }];
  });
  const byManifest = maxOverlap(inside);
  const span = (
    Math.max(...closed.map((r) => r.end)) - Math.min(...closed.map((r) => r.start))
  ).toFixed(1);
  t.diagnostic(
    `${FLEET.length} servers Ready in ${((Date.now() - t0) / 1000).toFixed(0)} s; runs spanned ${span} s; ` +
      `most runs at once: ${byAgents} by the agents' logs, ${byManifest} by the manifest's record`,
  );
  assert.ok(byAgents <= MAX, `${byAgents} runs at once`);
  assert.ok(byManifest <= MAX, `${byManifest} runs at once`);
  assert.ok(byAgents >= 2, "runs did go in parallel up to the limit");
  assert.match(op.logs(), /PuppetRunQueued/, "servers waited for a slot");
});

test("an operator killed after its runonce went out, before the answer came: no second run", async () => {
  // The broker through a proxy of this test's own, so the answer can be held back.
  const amqps = new URL(stackEnv("VSOP_AMQPS_URL"));
  const broker = await new TcpProxy(() => [Number(amqps.port)]).start();
  applyClass(KILL_CLASS, {
    boot: { method: "guestinfo", assumeInstalled: true },
    mcollective: { brokerURL: `amqps://127.0.0.1:${broker.port}/` },
  });
  nodeUp(WARM.hostname);
  nodeUp(KILL.hostname, "counter.pp");
  const args = ["--label-selector", "vsop-test=puppet-runs-kill"];
  // Log files of their own: startOperator appends, and an earlier run's lines must not count.
  const run = Date.now().toString(36);
  const killed = startOperator(`puppet-runs-kill-${run}`, args);
  let second: Operator | undefined;
  try {
    // A first server of the class opens the operator's broker connection (through the proxy).
    apply(virtualServer(ns, WARM.name, WARM.hostname, KILL_CLASS, KILL_LABELS));
    await waitForCondition(ns, WARM.name, "Ready", "True", undefined, 120_000);
    // From now on what the operator sends reaches the broker, and no answer comes back.
    broker.holdReplies();
    apply(virtualServer(ns, KILL.name, KILL.hostname, KILL_CLASS, KILL_LABELS));
    await waitFor("the runonce at the node", () => agentRuns(KILL.hostname).length === 1, 120_000);
    const p = getVS(ns, KILL.name)?.status?.puppet as {
      pendingRun?: unknown;
      requestedAt?: string;
    };
    assert.ok(p?.pendingRun, "the intent is in status");
    assert.equal(p.requestedAt, undefined, "the request is not recorded");
    await killed.stop("SIGKILL");
    const mine = (log: string, msg: string) =>
      log.split("\n").filter((l) => l.includes(`/${KILL.name}"`) && l.includes(`"msg":"${msg}"`));
    assert.equal(mine(killed.logs(), "puppet runonce sent").length, 1);
    assert.deepEqual(
      mine(killed.logs(), "puppet run requested"),
      [],
      "killed before it heard back",
    );

    second = startOperator(`puppet-runs-kill-${run}-2`, args);
    await waitForCondition(ns, KILL.name, "Ready", "True", undefined, 120_000);
    assert.equal(
      mine(
        second.logs(),
        "the asked-for puppet run reached the node before the restart; not sent again",
      ).length,
      1,
    );
    assert.deepEqual(mine(second.logs(), "puppet runonce sent"), [], "the new operator sent none");
    // Give a wrongly sent second run the time to show.
    await new Promise((r) => setTimeout(r, 5000));
    assert.equal(agentRuns(KILL.hostname).length, 1, "the agent started one run");
    assert.equal(counted(KILL.hostname), 1, "the manifest ran once");
  } finally {
    await killed.stop("SIGKILL");
    // Someone has to release the servers of this class.
    second ??= startOperator(`puppet-runs-kill-${run}-2`, args);
    await deleteServers(ns, 180_000);
    assert.equal(await second.stop(), 0);
    await broker.close();
  }
});
