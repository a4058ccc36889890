// kubectl vsop, end to end: the plugin is found by kubectl itself on PATH (linked as `npm link`
// links a bin entry), reads the stack's kubeconfig, and drives the real operator and nodes:
// status tables, one Puppet run per `puppet run` (counted on the node), mco ping and last-run.
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { chmodSync, mkdtempSync, readFileSync, rmSync, symlinkSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
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

const CLASS = "plugin-assumed";
const LABELS = { "vsop-test": "plugin" };
const HOST = "plg-prod-1.example.test";
const FAILING = "plgfail-prod-1.example.test";
const ANNOTATION = "provisioning.vsop.dev/puppet-run-requested-at";
let ns: string;
let empty: string;
let op: Operator;
let bin: string;

interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** `kubectl vsop ARGS` with the plugin's folder on PATH; async, so the operator's logs flow. */
function kubectlVsop(args: string[], env: Record<string, string> = {}): Promise<Run> {
  return new Promise((resolve, reject) => {
    const child = spawn("kubectl", ["vsop", ...args], {
      env: {
        ...process.env,
        KUBECONFIG: stackEnv("KUBECONFIG"),
        PATH: `${bin}${path.delimiter}${process.env.PATH}`,
        ...env,
      },
      stdio: ["ignore", "pipe", "pipe"],
    });
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (d: Buffer) => (stdout += d.toString()));
    child.stderr.on("data", (d: Buffer) => (stderr += d.toString()));
    child.on("error", reject);
    child.on("close", (code) => resolve({ code, stdout, stderr }));
  });
}

const runsLog = (fqdn: string) => path.join(stackEnv("VSOP_STACK_DIR"), "nodes", fqdn, "runs.log");
const runs = (fqdn = HOST) =>
  readFileSync(runsLog(fqdn), "utf8")
    .split("\n")
    .filter((l) => l.startsWith("start")).length;

before(async () => {
  // As `npm link` installs the package's bin entry: a link to the compiled file, made executable.
  bin = mkdtempSync(path.join(tmpdir(), "vsop-plugin-"));
  const entry = path.join(ROOT, "dist/cli/kubectl-plugin.js");
  chmodSync(entry, 0o755);
  symlinkSync(entry, path.join(bin, "kubectl-vsop"));

  installVsop();
  ns = createNamespace("plugin");
  empty = createNamespace("plugin-empty");
  applyClass(CLASS, { boot: { method: "guestinfo", assumeInstalled: true } });
  addDNS("10.12.30.231", HOST);
  addDNS("10.12.30.232", FAILING);
  nodeUp(HOST, "counter.pp");
  nodeUp(FAILING, "failing.pp");
  op = startOperator("plugin", ["--label-selector", "vsop-test=plugin", "--resync-period", "3s"]);
  apply(
    virtualServer(ns, "plg", HOST, CLASS, LABELS),
    virtualServer(ns, "plgfail", FAILING, CLASS, LABELS),
  );
  await waitForCondition(ns, "plg", "Ready", "True", undefined, 120_000);
  await waitForCondition(ns, "plgfail", "PuppetApplied", "False", "PuppetRunFailed", 120_000);
});

after(async () => {
  await deleteServers(ns);
  assert.equal(await op.stop(), 0);
  nodeDown(HOST);
  nodeDown(FAILING);
  rmSync(bin, { recursive: true, force: true });
});

test("kubectl finds the plugin on PATH; --help lists the commands", async () => {
  const r = await kubectlVsop(["--help"]);
  assert.equal(r.code, 0, r.stderr);
  for (const c of [
    "status [NAME]",
    "puppet run NAME",
    "rebuild NAME",
    "mco ping HOST",
    "mco last-run HOST",
  ])
    assert.ok(r.stdout.includes(c), c);
  // rebuild of a server that is not there: said so, nothing else touched (rebuild.test.ts
  // rebuilds a server; the one here stays as the tests below expect it)
  const rebuild = await kubectlVsop(["rebuild", "nosuch", "-n", ns]);
  assert.equal(rebuild.code, 1);
  assert.match(rebuild.stderr, /virtualserver "nosuch" not found/);
  assert.equal(getVS(ns, "plg")?.spec.rebuildRequestedAt, undefined);
});

test("kubectl vsop status: every server's six steps with status, reason and age", async () => {
  const r = await kubectlVsop(["status", "-n", ns]);
  assert.equal(r.code, 0, r.stderr);
  assert.ok(!r.stdout.includes("\x1b"), "no colours on a pipe");
  const lines = r.stdout.trimEnd().split("\n");
  assert.deepEqual(lines[0]!.split(/\s+/), ["NAME", "PHASE", "STEP", "STATUS", "REASON", "AGE"]);
  assert.equal(lines.length, 1 + 2 * 6, r.stdout);
  // plg comes second (sorted by name: plg, plgfail)
  const plg = lines.slice(1, 7).map((l) => l.trim().split(/\s+/));
  assert.deepEqual(plg[0]!.slice(0, 5), ["plg", "Ready", "NameResolved", "True", "Resolved"]);
  assert.deepEqual(
    plg.map((cells) => cells.at(-4)),
    ["NameResolved", "VMCreated", "Installed", "BootNICDisconnected", "PuppetApplied", "Ready"],
  );
  for (const cells of plg) {
    // guestinfo has no boot NIC: that step is "-" (never reached), like a step not reached yet
    if (cells.at(-4) === "BootNICDisconnected") {
      assert.deepEqual(cells.slice(-3), ["-", "-", "-"]);
      continue;
    }
    assert.equal(cells.at(-3), "True", cells.join(" "));
    assert.match(cells.at(-1)!, /^\d+(s|m\d*s?)$/, `an age: ${cells.join(" ")}`);
  }
  const fail = lines.slice(7).map((l) => l.trim().split(/\s+/));
  assert.equal(fail[0]![0], "plgfail");
  assert.deepEqual(fail[4]!.slice(0, 3), ["PuppetApplied", "False", "PuppetRunFailed"]);

  const all = await kubectlVsop(["status", "-A"]);
  assert.equal(all.code, 0, all.stderr);
  assert.match(all.stdout, /^NAMESPACE\s+NAME\s+PHASE\s+STEP/);
  assert.match(all.stdout, new RegExp(`\\n${ns}\\s+plg\\s+Ready\\s+NameResolved\\s+True`));

  const none = await kubectlVsop(["status", "-n", empty]);
  assert.equal(none.code, 0);
  assert.equal(none.stdout, "");
  assert.match(none.stderr, /No VirtualServers found in plugin-empty-\S+ namespace/);
});

test("kubectl vsop status NAME: conditions with messages, address, VLAN, VM, Puppet", async () => {
  const vs = getVS(ns, "plg")!;
  const r = await kubectlVsop(["status", "plg", "-n", ns]);
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout, /^Hostname:\s+plg-prod-1\.example\.test$/m);
  assert.match(r.stdout, /^Address:\s+10\.12\.30\.231, VLAN 30/m);
  const moRef = (vs.status?.vm as { moRef: string }).moRef;
  assert.match(r.stdout, new RegExp(`^VM:\\s+${moRef},`, "m"));
  assert.match(r.stdout, /^Puppet:\s+last run \S+ ago: \d+ changed, 0 failed of \d+ resources/m);
  const ready = cond(vs, "Ready")!;
  assert.ok(r.stdout.includes(ready.message), "the Ready message");
  assert.match(r.stdout, /^ {2}PuppetApplied\s+True\s+Applied\s+\S+\s+Puppet applied: /m);

  const missing = await kubectlVsop(["status", "nosuch", "-n", ns]);
  assert.equal(missing.code, 1);
  assert.match(missing.stderr, /virtualserver "nosuch" not found/);
});

test("kubectl vsop puppet run: exactly one new run per call, followed to PuppetApplied=True", async () => {
  assert.equal(runs(), 1, "the first run");
  const first = await kubectlVsop(["puppet", "run", "plg", "-n", ns, "--timeout", "2m"]);
  assert.equal(first.code, 0, `${first.stdout}${first.stderr}`);
  assert.match(first.stdout, /Puppet run requested \(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ\)/);
  assert.match(first.stdout, /PuppetApplied=True PuppetRunning/);
  assert.match(first.stdout, /Puppet run on plg-prod-1\.example\.test applied: last run/);
  assert.equal(runs(), 2);
  const vs = getVS(ns, "plg")!;
  const p = vs.status?.puppet as { requestedFor?: string };
  assert.equal(
    p.requestedFor,
    (vs.metadata as { annotations?: Record<string, string> }).annotations?.[ANNOTATION],
  );

  await sleep(8000); // resyncs at 3s: an honoured annotation asks for nothing more
  assert.equal(runs(), 2, "no second run for the same request");

  const second = await kubectlVsop(["puppet", "run", "plg", "-n", ns, "--timeout", "2m"]);
  assert.equal(second.code, 0, `${second.stdout}${second.stderr}`);
  assert.equal(runs(), 3);
  const lines = readFileSync(runsLog(HOST), "utf8").trim().split("\n");
  for (let i = 0; i < lines.length; i += 2) {
    assert.match(lines[i]!, /^start/);
    assert.match(lines[i + 1]!, /^end/, "runs never overlap");
  }
  assert.equal(cond(getVS(ns, "plg"), "Ready")?.status, "True");
});

test("kubectl vsop puppet run on a failing catalog exits non-zero after the new run", async () => {
  const before = (getVS(ns, "plgfail")!.status?.puppet as { requestedAt: string }).requestedAt;
  const r = await kubectlVsop(["puppet", "run", "plgfail", "-n", ns, "--timeout", "2m"]);
  assert.equal(r.code, 1, `${r.stdout}${r.stderr}`);
  assert.match(r.stdout, /Puppet run on plgfail-prod-1\.example\.test FAILED: .* [1-9]\d* failed/);
  const after = (getVS(ns, "plgfail")!.status?.puppet as { requestedAt: string }).requestedAt;
  assert.ok(Date.parse(after) > Date.parse(before), "a new run was requested");

  const missing = await kubectlVsop(["puppet", "run", "nosuch", "-n", ns, "--timeout", "5s"]);
  assert.equal(missing.code, 1);
  assert.match(missing.stderr, /not found/);
});

test("kubectl vsop mco ping and last-run answer through the broker", async () => {
  const ping = await kubectlVsop(["mco", "ping", HOST]);
  assert.equal(ping.code, 0, ping.stderr);
  assert.equal(ping.stdout, `${HOST} answered\n`);
  const json = await kubectlVsop(["mco", "ping", HOST, "-o", "json"]);
  assert.deepEqual(JSON.parse(json.stdout), { replied: [HOST], missing: [] });

  const last = await kubectlVsop(["mco", "last-run", HOST]);
  assert.equal(last.code, 0, last.stderr);
  const p = getVS(ns, "plg")!.status?.puppet as { changed: number; total: number };
  assert.match(last.stdout, new RegExp(`^Changed:\\s+${p.changed}$`, "m"));
  assert.match(last.stdout, new RegExp(`^Total:\\s+${p.total}$`, "m"));
  assert.match(last.stdout, /^Failed:\s+0$/m);

  const nobody = await kubectlVsop([
    "mco",
    "ping",
    "nobody-prod-9.example.test",
    "--timeout",
    "2s",
  ]);
  assert.equal(nobody.code, 1);
  assert.match(nobody.stdout, /did not answer within 2s/);
});
