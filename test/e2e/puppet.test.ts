// Puppet through MCollective, end to end: real mcollectived nodes (hack/node-up.sh) running
// puppet apply through vsop's agent plugin, RabbitMQ in between, the operator driving it. (A
// broker restart mid-run is puppet-broker-restart.test.ts: it runs alone.)
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { existsSync, readFileSync } from "node:fs";
import path from "node:path";
import {
  addDNS,
  apply,
  cond,
  createNamespace,
  deleteServers,
  getVS,
  installVsop,
  nodeDown,
  nodeUp,
  ROOT,
  startOperator,
  waitForCondition,
  type Operator,
} from "../support/harness.js";
import { applyClass, virtualServer } from "../support/fixtures.js";
import { stackEnv } from "../support/env.js";
import { installFromGuestinfo } from "../support/installer.js";

const CLASS = "puppet-guestinfo";
const LABELS = { "vsop-test": "puppet" };
const HOSTS = {
  web: "pweb-prod-1.example.test",
  db: "pdb-prod-1.example.test",
  fail: "fail-prod-1.example.test",
  late: "late-prod-2.example.test",
};
let ns: string;
let op: Operator;
const nodeDir = (fqdn: string) => path.join(stackEnv("VSOP_STACK_DIR"), "nodes", fqdn);

before(() => {
  installVsop();
  ns = createNamespace("puppet");
  // guestinfo without assumeInstalled: the server counts as installed once its mcollectived answers.
  applyClass(CLASS, { boot: { method: "guestinfo", installTimeout: "10m" } });
  // Names of this file's own (mcollective.test.ts runs beside it with web-prod-1 and db-prod-1);
  // db on VLAN 10, the others on 30.
  addDNS("10.12.30.86", HOSTS.web);
  addDNS("10.12.10.22", HOSTS.db);
  addDNS("10.12.30.81", HOSTS.fail);
  addDNS("10.12.30.82", HOSTS.late);
  nodeUp(HOSTS.web, "web.pp");
  nodeUp(HOSTS.db, "db.pp");
  nodeUp(HOSTS.fail, "failing.pp");
  op = startOperator("puppet", ["--label-selector", "vsop-test=puppet", "--resync-period", "3s"]);
});

after(async () => {
  await deleteServers(ns);
  assert.equal(await op.stop(), 0);
  for (const h of Object.values(HOSTS)) nodeDown(h);
});

const MANIFESTS: Record<string, string> = {
  [HOSTS.web]: "web.pp",
  [HOSTS.db]: "db.pp",
  [HOSTS.fail]: "failing.pp",
};

/** Applies the server, then plays its install: keys fetched once, mcollectived restarted. */
async function server(name: string, hostname: string, spec: Record<string, unknown> = {}) {
  apply(virtualServer(ns, name, hostname, CLASS, LABELS, spec));
  await installFromGuestinfo(hostname.split(".")[0]!, hostname, MANIFESTS[hostname]);
}

test("two servers with different manifests each get their own run and reach Ready", async () => {
  await Promise.all([server("web", HOSTS.web), server("db", HOSTS.db)]);
  for (const name of ["web", "db"]) {
    const vs = await waitForCondition(ns, name, "Ready", "True", undefined, 120_000);
    assert.equal(cond(vs, "Installed")?.status, "True");
    assert.equal(cond(vs, "PuppetApplied")?.status, "True");
    const p = vs.status?.puppet as {
      changed: number;
      failed: number;
      total: number;
      lastRunAt: string;
    };
    assert.ok(p.changed > 0, `${name} changed ${p.changed}`);
    assert.equal(p.failed, 0);
    assert.equal(vs.status?.phase, "Ready");
  }
  assert.ok(existsSync(path.join(nodeDir(HOSTS.web), "www/index.html")), "web.pp applied on web");
  assert.ok(!existsSync(path.join(nodeDir(HOSTS.db), "www")), "web.pp not applied on db");
  assert.ok(readFileSync(path.join(ROOT, "hack/manifests/db.pp"), "utf8").length > 0);
});

test("the stock mco client reports the same figures vsop shows", async () => {
  const out = execFileSync(
    "mco",
    [
      "rpc",
      "puppet",
      "last_run_summary",
      "-I",
      HOSTS.web,
      "--config",
      stackEnv("VSOP_MCO_CLIENT_CONFIG"),
      "-j",
    ],
    { encoding: "utf8", stdio: ["ignore", "pipe", "pipe"] },
  );
  const [reply] = JSON.parse(out) as { data: Record<string, number> }[];
  const p = getVS(ns, "web")!.status?.puppet as { changed: number; failed: number; total: number };
  assert.deepEqual(
    {
      changed: reply!.data.changed_resources,
      failed: reply!.data.failed_resources,
      total: reply!.data.total_resources,
    },
    { changed: p.changed, failed: p.failed, total: p.total },
  );
});

test("a failing resource → PuppetApplied=False, PuppetRunFailed, counts in the message", async () => {
  await server("fail", HOSTS.fail);
  const vs = await waitForCondition(
    ns,
    "fail",
    "PuppetApplied",
    "False",
    "PuppetRunFailed",
    120_000,
  );
  assert.match(cond(vs, "PuppetApplied")!.message, /\d+ changed, [1-9]\d* failed of \d+ resources/);
  assert.equal(cond(vs, "Ready")?.status, "False");
});

test("node not reachable → NodeNotReachable with backoff; node started → converges", async () => {
  applyClass("puppet-assumed", { boot: { method: "guestinfo", assumeInstalled: true } });
  apply(virtualServer(ns, "late", HOSTS.late, "puppet-assumed", LABELS));
  await waitForCondition(ns, "late", "Ready", "False", "NodeNotReachable", 120_000);
  nodeUp(HOSTS.late, "default.pp");
  await waitForCondition(ns, "late", "Ready", "True", undefined, 120_000);
});
