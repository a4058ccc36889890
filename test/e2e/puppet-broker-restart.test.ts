// Puppet runs across a broker restart: a run in flight when RabbitMQ's AMQP side restarts is
// neither lost nor repeated, and runs never overlap. It restarts the broker every other file
// shares, so the Makefile runs it alone.
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { readFileSync } from "node:fs";
import path from "node:path";
import {
  addDNS,
  apply,
  cond,
  createNamespace,
  deleteServers,
  getVS,
  installVsop,
  kubectl,
  nodeDown,
  nodeUp,
  startOperator,
  waitFor,
  waitForCondition,
  type Operator,
} from "../support/harness.js";
import { applyClass, virtualServer } from "../support/fixtures.js";
import { stackEnv } from "../support/env.js";
import { installFromGuestinfo } from "../support/installer.js";

const CLASS = "puppet-restart-guestinfo";
const LABELS = { "vsop-test": "puppet-restart" };
const HOST = "count-prod-1.example.test";
let ns: string;
let op: Operator;

before(() => {
  installVsop();
  ns = createNamespace("puppet-restart");
  // guestinfo without assumeInstalled: the server counts as installed once its mcollectived answers.
  applyClass(CLASS, { boot: { method: "guestinfo", installTimeout: "10m" } });
  addDNS("10.12.30.83", HOST);
  nodeUp(HOST, "counter.pp");
  op = startOperator("puppet-restart", [
    "--label-selector",
    "vsop-test=puppet-restart",
    "--resync-period",
    "3s",
  ]);
});

after(async () => {
  await deleteServers(ns);
  assert.equal(await op.stop(), 0);
  nodeDown(HOST);
});

test("runs never overlap, a spec.puppet change re-runs, a broker restart mid-run costs no second run", async () => {
  apply(virtualServer(ns, "count", HOST, CLASS, LABELS));
  await installFromGuestinfo("count-prod-1", HOST, "counter.pp");
  await waitForCondition(ns, "count", "Ready", "True", undefined, 120_000);
  const runs = () =>
    readFileSync(path.join(stackEnv("VSOP_STACK_DIR"), "nodes", HOST, "runs.log"), "utf8")
      .trim()
      .split("\n");
  assert.equal(runs().filter((l) => l.startsWith("start")).length, 1);

  kubectl([
    "-n",
    ns,
    "patch",
    "vsrv",
    "count",
    "--type=merge",
    "-p",
    '{"spec":{"puppet":{"tags":["run-start"]}}}',
  ]);
  await waitFor(
    "second run requested",
    () => (getVS(ns, "count")?.status?.puppet as { tags?: string })?.tags === "run-start",
    30_000,
  );
  // The run takes 2s; restart the broker's AMQP side while it runs.
  execFileSync("rabbitmqctl", ["stop_app"], { stdio: "ignore" });
  execFileSync("rabbitmqctl", ["start_app"], { stdio: "ignore" });
  await waitFor(
    "PuppetApplied after the restart",
    () => {
      const vs = getVS(ns, "count");
      const p = vs?.status?.puppet as { lastRunAt?: string; requestedAt?: string } | undefined;
      return (
        cond(vs, "PuppetApplied")?.status === "True" &&
        p?.lastRunAt &&
        p.requestedAt &&
        Date.parse(p.lastRunAt) >= Date.parse(p.requestedAt)
      );
    },
    120_000,
  );
  await waitForCondition(ns, "count", "Ready", "True", undefined, 60_000);
  const lines = runs();
  assert.equal(lines.filter((l) => l.startsWith("start")).length, 2, lines.join("\n"));
  for (let i = 0; i < lines.length; i += 2) {
    assert.match(lines[i]!, /^start/);
    assert.match(lines[i + 1]!, /^end/, "each run ends before the next starts");
  }
});
