// kubectl vsop: ages as kubectl renders them, the status table and detail view, the puppet run
// decisions, argument parsing, and the operator's side of the run-requested annotation.
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { pino } from "pino";
import {
  PUPPET_RUN_REQUESTED_AT,
  type VirtualServer,
  type VirtualServerClass,
  type VirtualServerStatus,
} from "../../src/api/types.js";
import {
  age,
  ansi,
  humanDuration,
  nextRebuildTime,
  nextRequestTime,
  paintFor,
  plain,
  runVerdict,
  statusDetail,
  statusTable,
  table,
} from "../../src/cli/plugin-format.js";
import { parsePluginArgs, rebuild } from "../../src/cli/plugin.js";
import { effectiveClass } from "../../src/api/effective-class.js";
import { UsageError } from "../../src/cli/run-flags.js";
import type { ReconcileContext } from "../../src/reconcile/engine/context.js";
import { PendingCalls } from "../../src/reconcile/engine/pending-calls.js";
import type { McoPort } from "../../src/reconcile/engine/ports.js";
import { puppetStep, runDue, runRequested } from "../../src/reconcile/steps/puppet-step.js";
import { callbacks } from "../support/step-fakes.js";

const plugin = new URL("../../dist/cli/kubectl-plugin.js", import.meta.url).pathname;
const NOW = Date.parse("2026-05-01T12:00:00Z");
const ago = (s: number) => new Date(NOW - s * 1000).toISOString();

function server(
  name: string,
  status: VirtualServerStatus = {},
  annotations?: Record<string, string>,
  namespace = "ns",
): VirtualServer {
  return {
    apiVersion: "provisioning.vsop.dev/v1alpha1",
    kind: "VirtualServer",
    metadata: { name, namespace, creationTimestamp: ago(600), generation: 1, annotations },
    spec: { hostname: `${name}.example.test`, className: "standard" },
    status,
  };
}

const cond = (type: string, status: "True" | "False" | "Unknown", reason: string, s: number) => ({
  type,
  status,
  reason,
  message: `${type} message`,
  lastTransitionTime: ago(s),
});

test("ages render as kubectl renders them (apimachinery HumanDuration)", () => {
  const cases: [number, string][] = [
    [-5, "<invalid>"],
    [-0.5, "0s"],
    [0, "0s"],
    [59, "59s"],
    [119, "119s"],
    [120, "2m"],
    [200, "3m20s"],
    [599, "9m59s"],
    [600, "10m"],
    [179 * 60, "179m"],
    [3 * 3600, "3h"],
    [5 * 3600 + 30 * 60, "5h30m"],
    [8 * 3600, "8h"],
    [47 * 3600, "47h"],
    [48 * 3600, "2d"],
    [3 * 86400 + 4 * 3600, "3d4h"],
    [8 * 86400, "8d"],
    [400 * 86400, "400d"],
    [2 * 365 * 86400, "2y"],
    [(2 * 365 + 30) * 86400, "2y30d"],
    [9 * 365 * 86400, "9y"],
  ];
  for (const [seconds, want] of cases)
    assert.equal(humanDuration(seconds * 1000), want, `${seconds}s`);
  assert.equal(age(ago(90), NOW), "90s");
  assert.equal(age(undefined, NOW), "<unknown>");
  assert.equal(age("not a time", NOW), "<unknown>");
});

test("tables: left-aligned columns three spaces apart, no trailing blanks, paint after padding", () => {
  assert.equal(
    table(
      ["A", "LONGER"],
      [
        ["xx", ""],
        ["y", "z"],
      ],
    ),
    "A    LONGER\nxx\ny    z\n",
  );
  const painted = table(["S", "T"], [[{ text: "True", paint: (t) => `<${t}>` }, "x"]]);
  assert.equal(painted, "S      T\n<True>   x\n");
});

test("the status table: every step of every server, with status, reason and age", () => {
  const ready = server("web", {
    phase: "Ready",
    conditions: [
      cond("NameResolved", "True", "Resolved", 600),
      cond("VMCreated", "True", "Created", 590),
      cond("Installed", "True", "Installed", 400),
      cond("BootNICDisconnected", "True", "Disconnected", 399),
      cond("PuppetApplied", "True", "Applied", 200),
      cond("Ready", "True", "Provisioned", 200),
    ],
  });
  const fresh = server("db", {
    phase: "Installing",
    conditions: [
      cond("Ready", "False", "Installing", 30),
      cond("NameResolved", "True", "Resolved", 45),
    ],
  });
  const out = statusTable([ready, fresh], { now: NOW });
  const lines = out.trimEnd().split("\n");
  assert.deepEqual(lines[0]!.split(/\s+/), ["NAME", "PHASE", "STEP", "STATUS", "REASON", "AGE"]);
  assert.equal(lines.length, 1 + 12);
  assert.deepEqual(lines[1]!.split(/\s+/), [
    "web",
    "Ready",
    "NameResolved",
    "True",
    "Resolved",
    "10m",
  ]);
  assert.deepEqual(lines[5]!.trim().split(/\s+/), ["PuppetApplied", "True", "Applied", "3m20s"]);
  // db: steps in pipeline order whatever the order in status, "-" for those not reached yet.
  assert.deepEqual(lines[7]!.split(/\s+/), [
    "db",
    "Installing",
    "NameResolved",
    "True",
    "Resolved",
    "45s",
  ]);
  assert.deepEqual(lines[8]!.trim().split(/\s+/), ["VMCreated", "-", "-", "-"]);
  assert.deepEqual(lines[12]!.trim().split(/\s+/), ["Ready", "False", "Installing", "30s"]);
  assert.ok(!out.includes("\x1b"), "no colours unless asked for");

  const all = statusTable([server("x", {}, undefined, "other")], {
    now: NOW,
    allNamespaces: true,
    wide: true,
  });
  assert.match(all, /^NAMESPACE\s+NAME\s+PHASE\s+STEP\s+STATUS\s+REASON\s+AGE\s+MESSAGE\n/);
  assert.match(all, /\nother\s+x\s+-\s+NameResolved\s+-\s+-\s+-\n/);

  const wide = statusTable([ready], { now: NOW, wide: true });
  assert.match(wide, /Ready\s+True\s+Provisioned\s+3m20s\s+Ready message\n$/);
  const coloured = statusTable([ready], { now: NOW, paint: ansi });
  assert.ok(coloured.includes("\x1b[32mTrue"), "True in green on a terminal");
});

test("colours only on a terminal, and never with NO_COLOR or TERM=dumb", () => {
  assert.equal(paintFor({ isTTY: false }, {}), plain);
  assert.equal(paintFor({}, {}), plain);
  assert.equal(paintFor({ isTTY: true }, {}), ansi);
  assert.equal(paintFor({ isTTY: true }, { NO_COLOR: "" }), plain);
  assert.equal(paintFor({ isTTY: true }, { TERM: "dumb" }), plain);
});

test("the detail view: conditions with messages, address and VLAN, VM, Puppet summary", () => {
  const vs = server(
    "web",
    {
      phase: "Ready",
      address: "10.12.30.20",
      vlan: 30,
      portGroup: "VLAN-30",
      vm: {
        moRef: "vm-42",
        name: "web",
        powerState: "poweredOn",
        nics: [{ role: "boot", portGroup: "Boot", connected: false }],
      },
      install: { method: "guestinfo", startedAt: ago(500), completedAt: ago(400) },
      puppet: {
        requestedAt: ago(210),
        requestedFor: ago(211),
        lastRunAt: ago(200),
        changed: 2,
        failed: 0,
        total: 7,
        configVersion: "1718000000",
        environment: "production",
      },
      conditions: [cond("PuppetApplied", "True", "Applied", 200)],
    },
    { [PUPPET_RUN_REQUESTED_AT]: ago(211) },
  );
  const out = statusDetail(vs, NOW);
  assert.match(out, /^Name:\s+web$/m);
  assert.match(out, /^Address:\s+10\.12\.30\.20, VLAN 30, port group VLAN-30$/m);
  assert.match(out, /^VM:\s+vm-42, web, poweredOn$/m);
  assert.match(out, /NIC \(boot\):\s+Boot, disconnected/);
  assert.match(
    out,
    /^Puppet:\s+last run 3m20s ago: 2 changed, 0 failed of 7 resources, config version 1718000000, environment production$/m,
  );
  assert.match(out, /run requested:\s+\S+ \(honoured\)/);
  assert.match(out, /^ {2}STEP\s+STATUS\s+REASON\s+AGE\s+MESSAGE$/m);
  assert.match(out, /^ {2}PuppetApplied\s+True\s+Applied\s+3m20s\s+PuppetApplied message$/m);
  assert.match(out, /^ {2}VMCreated\s+-\s+-\s+-$/m);
  assert.match(statusDetail(server("new"), NOW), /^Puppet:\s+no run yet$/m);
});

test("puppet run asks for now, to the second, past the last request and honoured value", () => {
  const now = Date.parse("2026-05-01T12:00:00.750Z");
  assert.equal(nextRequestTime(server("a"), now), "2026-05-01T12:00:00Z");
  const behind = server("a", { puppet: { requestedAt: "2026-05-01T11:00:00Z" } });
  assert.equal(nextRequestTime(behind, now), "2026-05-01T12:00:00Z");
  // the node's clock is ahead of ours: still newer than its last request
  const ahead = server("a", { puppet: { requestedAt: "2026-05-01T12:00:05Z" } });
  assert.equal(nextRequestTime(ahead, now), "2026-05-01T12:00:06Z");
  // a second request within the same second is another value
  const twice = server("a", {
    puppet: { requestedAt: "2026-05-01T11:59:00Z", requestedFor: "2026-05-01T12:00:00Z" },
  });
  assert.equal(nextRequestTime(twice, now), "2026-05-01T12:00:01Z");
});

test("rebuild asks for now, to the second, past the value set and the one vsop honoured", () => {
  const now = Date.parse("2026-05-01T12:00:00.750Z");
  assert.equal(nextRebuildTime(server("a"), now), "2026-05-01T12:00:00Z");
  const old = server("a", { rebuild: { requestedAt: "2026-04-01T00:00:00Z" } });
  assert.equal(nextRebuildTime(old, now), "2026-05-01T12:00:00Z");
  // twice in one second: another value, or the second would ask for nothing
  const honoured = server("a", { rebuild: { requestedAt: "2026-05-01T12:00:00Z" } });
  assert.equal(nextRebuildTime(honoured, now), "2026-05-01T12:00:01Z");
  const set = server("a");
  set.spec.rebuildRequestedAt = "2026-05-01T12:00:03Z";
  assert.equal(nextRebuildTime(set, now), "2026-05-01T12:00:04Z");
});

test("kubectl vsop rebuild NAME patches spec.rebuildRequestedAt of that server only", async () => {
  const patches: [string, unknown][] = [];
  const kube = {
    get: async <T>(path: string) => {
      assert.equal(path, "/apis/provisioning.vsop.dev/v1alpha1/namespaces/web/virtualservers/w1");
      return server("w1", {
        vm: { moRef: "vm-42" },
        rebuild: { requestedAt: "2026-05-01T12:00:00Z" },
      }) as T;
    },
    mergePatch: async <T>(path: string, body: unknown) => {
      patches.push([path, body]);
      return {} as T;
    },
  };
  let out = "";
  const code = await rebuild(kube, "web", "w1", {
    out: { write: (s: string) => ((out += s), true) } as unknown as NodeJS.WritableStream,
    now: () => NOW,
  });
  assert.equal(code, 0);
  assert.deepEqual(patches, [
    [
      "/apis/provisioning.vsop.dev/v1alpha1/namespaces/web/virtualservers/w1",
      { spec: { rebuildRequestedAt: "2026-05-01T12:00:01Z" } },
    ],
  ]);
  assert.match(
    out,
    /web\/w1: rebuild requested \(2026-05-01T12:00:01Z\); its VM vm-42 is powered off/,
  );
  assert.match(out, /kubectl vsop status w1 -n web/);
});

test("puppet run's verdict: waits for the honoured request's run, then reads PuppetApplied", () => {
  const asked = "2026-05-01T12:00:00Z";
  const applied = cond("PuppetApplied", "True", "Applied", 1);
  const running = cond("PuppetApplied", "True", "PuppetRunning", 1);
  const failed = cond("PuppetApplied", "False", "PuppetRunFailed", 1);
  const before = { requestedAt: "2026-05-01T11:00:00Z", lastRunAt: "2026-05-01T11:00:10Z" };
  // not honoured yet: the old, finished run does not count
  assert.equal(
    runVerdict(server("a", { puppet: before, conditions: [applied] }), asked),
    "waiting",
  );
  // honoured, still running
  const requested = {
    requestedAt: "2026-05-01T12:00:01Z",
    requestedFor: asked,
    lastRunAt: before.lastRunAt,
  };
  assert.equal(
    runVerdict(server("a", { puppet: requested, conditions: [running] }), asked),
    "waiting",
  );
  const done = { ...requested, lastRunAt: "2026-05-01T12:00:03Z" };
  assert.equal(runVerdict(server("a", { puppet: done, conditions: [applied] }), asked), "applied");
  assert.equal(runVerdict(server("a", { puppet: done, conditions: [failed] }), asked), "failed");
  // a run requested after the request for another reason answers it too
  const other = { requestedAt: "2026-05-01T12:00:02Z", lastRunAt: "2026-05-01T12:00:04Z" };
  assert.equal(runVerdict(server("a", { puppet: other, conditions: [applied] }), asked), "applied");
});

test("arguments: commands, -n/-A/-o, and flags that do not fit are usage errors", () => {
  assert.deepEqual(parsePluginArgs(["status", "-A"]).command, {
    kind: "status",
    name: undefined,
    allNamespaces: true,
    wide: false,
  });
  const one = parsePluginArgs([
    "status",
    "web",
    "-n",
    "prod",
    "--kubeconfig",
    "/k",
    "--context",
    "c",
  ]);
  assert.equal(one.namespace, "prod");
  assert.equal(one.kubeconfig, "/k");
  assert.equal(one.context, "c");
  assert.deepEqual(one.command, { kind: "status", name: "web", allNamespaces: false, wide: false });
  assert.equal((parsePluginArgs(["status", "-o", "wide"]).command as { wide: boolean }).wide, true);
  assert.deepEqual(parsePluginArgs(["puppet", "run", "web", "--timeout", "2m"]).command, {
    kind: "puppet-run",
    name: "web",
    timeoutMs: 120_000,
    wait: true,
  });
  assert.deepEqual(parsePluginArgs(["mco", "ping", "h.example.test", "--timeout", "3s"]).command, {
    kind: "mco",
    action: "ping",
    host: "h.example.test",
    json: false,
    mcoArgs: ["ping", "--identity", "h.example.test", "--timeout", "3s"],
  });
  const lastRun = parsePluginArgs(["mco", "last-run", "h", "-o", "json", "--url", "amqp://b/"]);
  assert.deepEqual((lastRun.command as { mcoArgs: string[] }).mcoArgs, [
    "puppet",
    "last-run",
    "h",
    "--url",
    "amqp://b/",
  ]);
  assert.deepEqual(parsePluginArgs(["rebuild", "web", "-n", "prod"]), {
    namespace: "prod",
    kubeconfig: undefined,
    context: undefined,
    command: { kind: "rebuild", name: "web" },
  });
  assert.equal(parsePluginArgs([]).command.kind, "help");
  assert.equal(parsePluginArgs(["status", "--help"]).command.kind, "help");
  for (const bad of [
    ["status", "a", "b"],
    ["status", "a", "-A"],
    ["status", "-o", "json"],
    ["status", "--timeout", "1m"],
    ["puppet", "run"],
    ["puppet", "apply", "web"],
    ["puppet", "run", "web", "-A"],
    ["puppet", "run", "web", "--timeout", "soon"],
    ["mco", "ping"],
    ["mco", "runonce", "h"],
    ["mco", "ping", "h", "--no-wait"],
    ["rebuild"],
    ["rebuild", "a", "b"],
    ["rebuild", "web", "--timeout", "1m"],
    ["frobnicate"],
    ["status", "--bogus"],
  ])
    assert.throws(() => parsePluginArgs(bad), UsageError, bad.join(" "));
});

test("kubectl-vsop: --help names every command; usage errors exit 2", () => {
  const help = spawnSync("node", [plugin, "--help"], { encoding: "utf8" });
  assert.equal(help.status, 0);
  for (const c of [
    "status [NAME]",
    "puppet run NAME",
    "rebuild NAME",
    "mco ping HOST",
    "mco last-run HOST",
  ])
    assert.ok(help.stdout.includes(c), c);
  assert.doesNotMatch(help.stdout, /Not here yet/);
  const bad = spawnSync("node", [plugin, "rebuild"], { encoding: "utf8" });
  assert.equal(bad.status, 2);
  assert.match(bad.stderr, /rebuild takes exactly one NAME/);
});

// --- the operator's side: runDue and the puppet step with the annotation ---------------------

const cls = { metadata: { name: "c" }, spec: { mcollective: {} } } as unknown as VirtualServerClass;
const finished = {
  requestedAt: "2026-05-01T11:00:00.000Z",
  lastRunAt: "2026-05-01T11:00:05.000Z",
  environment: "production",
  tags: "",
  changed: 0,
  failed: 0,
  total: 3,
};

function ctxFor(vs: VirtualServer): ReconcileContext {
  return {
    vs,
    cls,
    settings: effectiveClass(cls),
    status: structuredClone(vs.status ?? {}),
    log: pino({ level: "silent" }),
  } as ReconcileContext;
}

test("runDue: a newer run-requested annotation makes a run due, once per value", () => {
  const ask = (value: string | undefined, puppet: object = finished) =>
    runDue(
      ctxFor(server("a", { puppet }, value ? { [PUPPET_RUN_REQUESTED_AT]: value } : undefined)),
    );
  assert.equal(ask(undefined), undefined);
  assert.equal(ask("2026-05-01T12:00:00Z"), "requested");
  assert.equal(ask("2026-05-01T10:00:00Z"), undefined, "older than the last request");
  assert.equal(ask("tomorrow"), undefined, "not a time");
  assert.equal(
    ask("2026-05-01T12:00:00Z", { ...finished, requestedFor: "2026-05-01T12:00:00Z" }),
    undefined,
  );
  // the node's clock behind ours: a value honoured once, whose run is "older", is not asked again
  const skewed = { ...finished, requestedFor: "2026-05-01T11:30:00Z" };
  assert.equal(ask("2026-05-01T11:30:00Z", skewed), undefined);
  // ... but a later value is, even though the node's last request looks newer still
  const ahead = {
    ...finished,
    requestedAt: "2026-05-01T13:00:00Z",
    requestedFor: "2026-05-01T11:30:00Z",
  };
  assert.equal(ask("2026-05-01T11:31:00Z", ahead), "requested");
  assert.equal(runRequested(server("a"), finished), false);
  // the first run and spec changes keep their reasons
  assert.equal(ask("2026-05-01T12:00:00Z", {}), "first run");
});

test("the puppet step honours the annotation once: one runonce, requestedFor recorded", async () => {
  let runs = 0;
  let nodeNow = Date.parse("2026-05-01T11:59:00Z") / 1000; // the node's clock is a minute behind
  const puppet = {
    runonce: async () => {
      runs++;
      return { identity: "a.example.test", summary: "started", initiatedAt: nodeNow };
    },
    lastRunSummary: async () => ({
      identity: "a.example.test",
      changedResources: 1,
      failedResources: 0,
      outOfSyncResources: 1,
      totalResources: 3,
      totalTime: 1,
      configRetrievalTime: 0.1,
      lastrun: nodeNow + 2,
      sinceLastrun: 0,
      configVersion: null,
      summary: {},
    }),
  };
  const pool = {
    get: async () => ({ puppet: { ...puppet, timeoutMs: 10_000 } }),
  } as unknown as McoPort;
  const calls = new PendingCalls({ wake: () => undefined });
  const step = puppetStep(pool, calls, async () => undefined);
  const asked = "2026-05-01T12:00:00Z";
  let vs = server("a", { puppet: finished }, { [PUPPET_RUN_REQUESTED_AT]: asked });
  // Each call takes two reconciles: one asks, the next takes the reply.
  for (let i = 0; i < 6; i++) {
    const ctx = ctxFor(vs);
    await step.run(ctx);
    await callbacks();
    vs = { ...vs, status: ctx.status };
    nodeNow += 1;
  }
  assert.equal(runs, 1);
  assert.equal(vs.status?.puppet?.requestedFor, asked);
  assert.equal(vs.status?.conditions?.find((c) => c.type === "PuppetApplied")?.reason, "Applied");
  // a new value asks again
  vs = {
    ...vs,
    metadata: {
      ...vs.metadata,
      annotations: { [PUPPET_RUN_REQUESTED_AT]: "2026-05-01T12:05:00Z" },
    },
  };
  // (the first reconcile writes the run's intent, the next sends it)
  const intent = ctxFor(vs);
  await step.run(intent);
  await step.run(ctxFor({ ...vs, status: intent.status }));
  assert.equal(runs, 2);
});
