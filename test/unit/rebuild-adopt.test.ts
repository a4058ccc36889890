// spec.rebuildRequestedAt and spec.adopt against an in-memory vCenter (test/support/fake-vsphere.ts):
// when a rebuild is due and that each value is honoured once, its stages one vSphere task per
// reconcile with the intent written first, the hook before the reinstall; which VMs may be
// adopted, the marker put as one task after the choice is recorded, and no create or install.
import { test } from "node:test";
import assert from "node:assert/strict";
import type { VirtualServerSpec, VirtualServerStatus } from "../../src/api/types.js";
import { StepError } from "../../src/errors.js";
import type { ReconcileContext, Step, StepOutcome } from "../../src/reconcile/engine/context.js";
import {
  rebuildDecision,
  rebuildEvents,
  rebuildStep,
  type BeforeReinstall,
} from "../../src/reconcile/steps/rebuild-step.js";
import { adoptTarget, vlanMismatch } from "../../src/reconcile/steps/adopt.js";
import { vmStep } from "../../src/reconcile/steps/vm-step.js";
import { instanceIdOf } from "../../src/reconcile/boot/install-config.js";
import type { InstallDeps } from "../../src/reconcile/boot/install-data.js";
import type { VirtualServer } from "../../src/api/types.js";
import { FakeVSphere } from "../support/fake-vsphere.js";
import { stepContext } from "../support/step-fakes.js";

const CLASS = {
  placement: { datacenter: "DC0", datastore: "ds" },
  boot: { method: "network" },
  hardware: { cpus: 2, memoryMiB: 2048 },
};
const INSTALLED = {
  method: "network",
  startedAt: "2026-01-01T00:00:00Z",
  completedAt: "2026-01-01T00:10:00Z",
};
const V1 = "2026-05-01T10:00:00Z";
const V2 = "2026-05-02T10:00:00Z";

function context(status: VirtualServerStatus, spec: Partial<VirtualServerSpec>): ReconcileContext {
  const ctx = stepContext(structuredClone(status), CLASS);
  Object.assign(ctx.vs.spec, spec);
  ctx.resolved = {
    address: "10.12.30.5",
    vlan: 30,
    portGroup: "VLAN-30",
  } as ReconcileContext["resolved"];
  return ctx;
}

async function run(step: Step, status: VirtualServerStatus, spec: Partial<VirtualServerSpec>) {
  const ctx = context(status, spec);
  let out: StepOutcome | string;
  try {
    out = await step.run(ctx);
  } catch (err) {
    assert.ok(err instanceof StepError, String(err));
    out = `!${err.reason}`;
  }
  return { out, status: ctx.status, ctx };
}

const reasonOf = (o: StepOutcome | string) =>
  typeof o === "string" ? o : o.done ? "done" : o.reason;
const ops = (vc: FakeVSphere) => vc.started.map((s) => s.split(" ")[0]!);

// --- rebuild: when it is due ------------------------------------------------------------------

test("rebuildDecision: due once per value, never before the first install, one at a time", () => {
  const installed: VirtualServerStatus = { install: INSTALLED };
  assert.deepEqual(rebuildDecision(undefined, installed), { kind: "none" }, "nothing asked");
  assert.deepEqual(rebuildDecision(V1, installed), { kind: "start", value: V1 });
  assert.deepEqual(
    rebuildDecision(V1, {
      ...installed,
      rebuild: { requestedAt: V1, startedAt: V1, completedAt: V2 },
    }),
    { kind: "none" },
    "honoured: the same value asks for nothing more",
  );
  assert.deepEqual(
    rebuildDecision(V1, { rebuild: { requestedAt: V1 } }),
    { kind: "none" },
    "honoured without a rebuild",
  );
  assert.deepEqual(
    rebuildDecision(V1, {}),
    { kind: "honour", value: V1 },
    "before the first install: that install is a new one",
  );
  assert.deepEqual(
    rebuildDecision(V2, { ...installed, rebuild: { requestedAt: V1, startedAt: V1 } }),
    { kind: "continue" },
    "a newer value waits for the rebuild under way",
  );
  assert.deepEqual(
    rebuildDecision(V2, {
      ...installed,
      rebuild: { requestedAt: V1, startedAt: V1, completedAt: V1 },
    }),
    { kind: "start", value: V2 },
    "then it is due",
  );
});

// --- rebuild: the stages ------------------------------------------------------------------------

function installDeps(vc: FakeVSphere) {
  const deleted: string[] = [];
  const deps = {
    pool: { get: async () => vc },
    tokens: { delete: async (uid: string) => void deleted.push(uid) },
  } as unknown as InstallDeps;
  return { deps, deleted };
}

function installedServer(vc: FakeVSphere) {
  return vc.addVM({
    name: "web-prod-1",
    ownerUID: "u",
    owner: "n/w",
    powerState: "poweredOn",
    nics: [
      { key: 4000, label: "n1", portGroup: "VLAN-30", connected: true, startConnected: true },
      { key: 4001, label: "n2", portGroup: "Boot-VLAN", connected: false, startConnected: false },
    ],
  });
}

const INSTALLED_STATUS: VirtualServerStatus = {
  install: INSTALLED,
  puppet: {
    requestedAt: "2026-01-01T00:11:00Z",
    lastRunAt: "2026-01-01T00:12:00Z",
    requestedFor: "2026-01-01T00:00:00Z",
  },
  conditions: [
    { type: "Installed", status: "True", reason: "Installed", message: "", lastTransitionTime: "" },
    {
      type: "BootNICDisconnected",
      status: "True",
      reason: "Disconnected",
      message: "",
      lastTransitionTime: "",
    },
    {
      type: "PuppetApplied",
      status: "True",
      reason: "Applied",
      message: "",
      lastTransitionTime: "",
    },
  ],
};

test("rebuild: intent written first, then one power-off task, then the install state dropped in one write", async () => {
  const vc = new FakeVSphere();
  const vm = installedServer(vc);
  const { deps, deleted } = installDeps(vc);
  const step = rebuildStep({ install: deps, record: async () => undefined });
  const spec = { rebuildRequestedAt: V1 };

  const r1 = await run(step, INSTALLED_STATUS, spec);
  assert.equal(reasonOf(r1.out), "Rebuilding");
  assert.equal((r1.out as { phase: string }).phase, "Installing");
  assert.equal(r1.status.rebuild?.requestedAt, V1);
  assert.ok(r1.status.rebuild?.startedAt);
  assert.deepEqual(vc.started, [], "nothing touched before the intent is in status");
  assert.deepEqual(r1.status.install, INSTALLED);

  const r2 = await run(step, r1.status, spec);
  assert.deepEqual(ops(vc), ["PowerOff"]);
  assert.equal(r2.status.vm?.task?.operation, "PowerOffToRebuild");
  // A restarted operator, from status alone (the in-memory record is another process's): waits.
  const again = await run(
    rebuildStep({ install: deps, record: async () => undefined }),
    r2.status,
    spec,
  );
  assert.equal(reasonOf(again.out), "Rebuilding");
  assert.deepEqual(ops(vc), ["PowerOff"], "no second power-off while the first runs");

  vc.endAll();
  const r3 = await run(step, r2.status, spec);
  assert.equal(reasonOf(r3.out), "Rebuilding");
  assert.equal(vc.get(vm.moRef)!.powerState, "poweredOff");
  assert.deepEqual(deleted, ["u"], "the spent install token goes: the next one is new");
  assert.equal(r3.status.install, undefined);
  assert.deepEqual(r3.status.puppet, { requestedFor: "2026-01-01T00:00:00Z" }, "Puppet runs anew");
  assert.ok(r3.status.rebuild?.reinstallStartedAt);
  const cond = (t: string) => r3.status.conditions?.find((c) => c.type === t);
  assert.equal(cond("Installed")?.reason, "Rebuilding");
  assert.equal(cond("BootNICDisconnected")?.status, "False");
  assert.equal(cond("PuppetApplied")?.status, "False");
  assert.equal(vc.get(vm.moRef)!.nics[1]!.startConnected, false, "the prepare step connects it");

  // From here the ordinary steps install it; the rebuild step only waits for the install.
  const r4 = await run(step, r3.status, spec);
  assert.equal(reasonOf(r4.out), "done");
  assert.equal(r4.status.rebuild?.completedAt, undefined);
  const installedAgain = {
    ...r4.status,
    install: { ...INSTALLED, completedAt: "2026-05-01T10:09:00Z" },
  };
  const r5 = await run(step, installedAgain, spec);
  assert.equal(r5.status.rebuild?.completedAt, "2026-05-01T10:09:00Z");

  // Honoured once: resyncs with the same value change nothing.
  for (let i = 0; i < 3; i++) {
    const r = await run(step, r5.status, spec);
    assert.equal(reasonOf(r.out), "done");
    assert.deepEqual(r.status, r5.status);
  }
  assert.deepEqual(ops(vc), ["PowerOff"]);
  assert.deepEqual(deleted, ["u"]);

  // A new value: once more.
  const r6 = await run(step, r5.status, { rebuildRequestedAt: V2 });
  assert.equal(r6.status.rebuild?.requestedAt, V2);
  assert.equal(r6.status.rebuild?.completedAt, undefined);
});

test("rebuild: a value set before the first install is honoured without a rebuild", async () => {
  const vc = new FakeVSphere();
  installedServer(vc);
  const { deps, deleted } = installDeps(vc);
  const step = rebuildStep({ install: deps, record: async () => undefined });
  const r = await run(step, {}, { rebuildRequestedAt: V1 });
  assert.equal(reasonOf(r.out), "done");
  assert.deepEqual(r.status.rebuild, { requestedAt: V1 });
  assert.deepEqual(vc.started, []);
  assert.deepEqual(deleted, []);
});

test("rebuild: beforeReinstall runs (until done) before the VM is powered off", async () => {
  const vc = new FakeVSphere();
  const vm = installedServer(vc);
  const { deps } = installDeps(vc);
  let calls = 0;
  let ready = false;
  const hook: BeforeReinstall = async (ctx) => {
    calls++;
    assert.equal(ctx.vs.spec.hostname, "web-prod-1.example.test");
    return ready
      ? undefined
      : {
          done: false,
          waitSeconds: 2,
          phase: "Installing",
          reason: "Rebuilding",
          message: "cleaning",
        };
  };
  const step = rebuildStep({ install: deps, record: async () => undefined, beforeReinstall: hook });
  const spec = { rebuildRequestedAt: V1 };
  const r1 = await run(step, INSTALLED_STATUS, spec);
  assert.equal(calls, 0, "not before the intent is written");
  const r2 = await run(step, r1.status, spec);
  assert.equal(calls, 1);
  assert.equal((r2.out as { message: string }).message, "cleaning");
  assert.equal(vc.get(vm.moRef)!.powerState, "poweredOn");
  assert.deepEqual(vc.started, [], "the VM stays as it is while the hook is not done");
  ready = true;
  await run(step, r2.status, spec);
  assert.equal(calls, 2);
  assert.deepEqual(ops(vc), ["PowerOff"]);
});

test("rebuild: a failing hook is the step's error; nothing else happens", async () => {
  const vc = new FakeVSphere();
  installedServer(vc);
  const { deps } = installDeps(vc);
  const step = rebuildStep({
    install: deps,
    record: async () => undefined,
    beforeReinstall: async () => {
      throw new StepError("PuppetCertCleanFailed", "the master said no");
    },
  });
  const r1 = await run(step, INSTALLED_STATUS, { rebuildRequestedAt: V1 });
  const r2 = await run(step, r1.status, { rebuildRequestedAt: V1 });
  assert.equal(reasonOf(r2.out), "!PuppetCertCleanFailed");
  assert.deepEqual(vc.started, []);
});

test("rebuild Events: one per stage, each once", () => {
  const s0: VirtualServerStatus = { vm: { moRef: "vm-7" } };
  const s1 = { ...s0, rebuild: { requestedAt: V1, startedAt: "t1" } };
  const s2 = { ...s0, rebuild: { ...s1.rebuild, reinstallStartedAt: "t2" } };
  const s3 = { ...s0, rebuild: { ...s2.rebuild, completedAt: "t3" } };
  const reasons = (a: VirtualServerStatus, b: VirtualServerStatus) =>
    rebuildEvents(a, b, "web-prod-1.example.test").map((e) => e.reason);
  assert.deepEqual(reasons(s0, s1), ["RebuildStarted"]);
  assert.deepEqual(reasons(s1, s1), []);
  assert.deepEqual(reasons(s1, s2), ["Reinstalling"]);
  assert.deepEqual(reasons(s2, s3), ["Rebuilt"]);
  assert.deepEqual(reasons(s3, s3), []);
  assert.deepEqual(reasons(s0, { rebuild: { requestedAt: V1 } }), [], "honoured without rebuild");
  assert.match(
    rebuildEvents(s0, s1, "h")[0]!.message,
    /vm-7.*spec\.rebuildRequestedAt 2026-05-01T10:00:00Z/,
  );
});

test("cloud-init's instance-id is new for each rebuild", () => {
  const vs = { metadata: { name: "w", uid: "u-1" }, spec: {} } as unknown as VirtualServer;
  assert.equal(instanceIdOf(vs), "u-1");
  vs.status = { rebuild: { requestedAt: V1, startedAt: "2026-05-01T10:00:05.123Z" } };
  const first = instanceIdOf(vs);
  assert.match(first, /^u-1-rebuild-\d+$/);
  vs.status = { rebuild: { requestedAt: V2, startedAt: "2026-05-02T10:00:05.123Z" } };
  assert.notEqual(instanceIdOf(vs), first);
});

// --- adopt: which VM --------------------------------------------------------------------------

function serverWith(adopt: VirtualServerSpec["adopt"]): VirtualServer {
  return {
    metadata: { name: "w", namespace: "n", uid: "u" },
    spec: { hostname: "web-prod-1.example.test", className: "c", adopt },
  } as VirtualServer;
}

const onVLAN30 = [
  { key: 4000, label: "n1", portGroup: "VLAN-30", connected: true, startConnected: true },
];

test("adoptTarget: an unmarked VM by moRef or by name; refused or missing otherwise", () => {
  const vc = new FakeVSphere();
  const legacy = vc.addVM({ name: "legacy-1", nics: onVLAN30 });
  vc.addVM({ name: "twin" });
  vc.addVM({ name: "twin" });
  const tpl = vc.addVM({ name: "tpl", template: true });
  const other = vc.addVM({
    name: "db-prod-1",
    ownerUID: "other-uid",
    owner: "n/db",
    extraConfig: { "vsop.owner-uid": "other-uid", "vsop.owner": "n/db" },
  });
  assert.equal(adoptTarget(vc, serverWith({ moRef: legacy.moRef })).moRef, legacy.moRef);
  assert.equal(adoptTarget(vc, serverWith({ name: "legacy-1" })).moRef, legacy.moRef);
  const reason = (adopt: VirtualServerSpec["adopt"]) => {
    try {
      adoptTarget(vc, serverWith(adopt));
      return "allowed";
    } catch (err) {
      assert.ok(err instanceof StepError);
      assert.equal(err.options.condition, "VMCreated");
      return `${err.reason}: ${err.message}`;
    }
  };
  assert.match(reason({ moRef: "vm-999" }), /^AdoptTargetNotFound: .*moRef vm-999/);
  assert.match(reason({ name: "nope" }), /^AdoptTargetNotFound: .*name nope/);
  assert.match(reason({ name: "twin" }), /^AdoptionRefused: 2 VMs are named twin .*moRef/);
  assert.match(reason({ moRef: tpl.moRef }), /^AdoptionRefused: .*template/);
  assert.match(
    reason({ moRef: other.moRef }),
    /^AdoptionRefused: .*VirtualServer n\/db \(vsop\.owner-uid other-uid\)/,
  );
  assert.match(reason({ name: "db-prod-1" }), /^AdoptionRefused/);
});

test("vlanMismatch: a NIC on the VLAN's port group is needed", () => {
  const vc = new FakeVSphere();
  const good = vc.addVM({ name: "a", nics: onVLAN30 });
  const bad = vc.addVM({ name: "b", nics: [{ ...onVLAN30[0]!, portGroup: "VLAN-10" }] });
  assert.equal(vlanMismatch(good, "VLAN-30"), undefined);
  const err = vlanMismatch(bad, "VLAN-30", "10.12.30.5");
  assert.equal(err?.reason, "VLANMismatch");
  assert.match(err!.message, /no NIC on port group VLAN-30.*10\.12\.30\.5.*its NICs: VLAN-10/);
});

// --- adopt: the vm step -------------------------------------------------------------------------

test("adopt: choice recorded, then one marker task; no create, no install, its size kept", async () => {
  const vc = new FakeVSphere();
  const legacy = vc.addVM({
    name: "legacy-1",
    cpus: 4,
    memoryMiB: 8192,
    nics: onVLAN30,
    powerState: "poweredOn",
  });
  const step = vmStep({ get: async () => vc });
  const spec = { adopt: { name: "legacy-1" } };

  const r1 = await run(step, {}, spec);
  assert.equal(reasonOf(r1.out), "Adopting");
  assert.deepEqual(r1.status.adoption?.moRef, legacy.moRef);
  assert.equal(r1.status.vm?.name, "legacy-1", "deletion now looks for it");
  assert.deepEqual(vc.started, [], "the choice is in status before the VM is touched");

  const r2 = await run(step, r1.status, spec);
  assert.deepEqual(ops(vc), ["SetExtraConfig"]);
  assert.equal(r2.status.vm?.task?.operation, "AdoptVM");
  vc.endAll();
  assert.deepEqual(
    {
      uid: vc.get(legacy.moRef)!.extraConfig["vsop.owner-uid"],
      owner: vc.get(legacy.moRef)!.extraConfig["vsop.owner"],
    },
    { uid: "u", owner: "n/w" },
  );

  const r3 = await run(step, r2.status, spec);
  assert.equal(reasonOf(r3.out), "done");
  assert.equal(r3.status.install?.method, "adopted");
  assert.ok(r3.status.install?.completedAt, "taken as installed: the install steps skip it");
  assert.ok(r3.status.adoption?.completedAt);
  assert.equal(r3.status.vm?.moRef, legacy.moRef);
  const created = r3.status.conditions?.find((c) => c.type === "VMCreated");
  assert.deepEqual([created?.status, created?.reason], ["True", "Adopted"]);
  assert.deepEqual(
    ops(vc),
    ["SetExtraConfig"],
    "no CreateVM, FinishVM or Resize to the class's 2 CPUs",
  );
  assert.equal(vc.get(legacy.moRef)!.cpus, 4);

  // Managed from then on: its own spec.cpus applies, a NIC moved off the VLAN is reported.
  await run(step, r3.status, { ...spec, cpus: 6 });
  assert.deepEqual(ops(vc), ["SetExtraConfig", "Resize"]);
  vc.endAll();
  vc.vms.set(legacy.moRef, {
    ...vc.get(legacy.moRef)!,
    nics: [{ ...onVLAN30[0]!, portGroup: "VLAN-10" }],
  });
  const moved = await run(step, r3.status, { ...spec, cpus: 6 });
  assert.equal(reasonOf(moved.out), "!VLANMismatch");
});

test("adopt: a kill after the marker was put (choice in status, completion not): no FinishVM, no install", async () => {
  const vc = new FakeVSphere();
  const legacy = vc.addVM({
    name: "legacy-1",
    ownerUID: "u",
    owner: "n/w",
    nics: onVLAN30,
    bootOrder: [],
    extraConfig: { "vsop.owner-uid": "u", "vsop.owner": "n/w" },
  });
  const status: VirtualServerStatus = {
    vm: { name: "legacy-1" },
    adoption: { moRef: legacy.moRef, name: "legacy-1", startedAt: V1 },
  };
  const r = await run(vmStep({ get: async () => vc }), status, { adopt: { moRef: legacy.moRef } });
  assert.equal(reasonOf(r.out), "done");
  assert.equal(r.status.install?.method, "adopted");
  assert.deepEqual(vc.started, [], "a VM vsop did not create is not finished like one");
});

test("adopt: a VM marked by another VirtualServer is refused and left unchanged", async () => {
  const vc = new FakeVSphere();
  const marks = { "vsop.owner-uid": "other-uid", "vsop.owner": "n/db" };
  const other = vc.addVM({
    name: "db-prod-1",
    ownerUID: "other-uid",
    owner: "n/db",
    nics: onVLAN30,
    extraConfig: { ...marks },
  });
  const step = vmStep({ get: async () => vc });
  for (let i = 0; i < 3; i++) {
    const r = await run(step, {}, { adopt: { moRef: other.moRef } });
    assert.equal(reasonOf(r.out), "!AdoptionRefused");
    assert.equal(r.status.adoption, undefined);
  }
  assert.deepEqual(vc.started, []);
  assert.deepEqual(vc.get(other.moRef)!.extraConfig, marks);
});

test("adopt: a VM whose NICs are not in the server's VLAN is not marked", async () => {
  const vc = new FakeVSphere();
  const vm = vc.addVM({ name: "legacy-1", nics: [{ ...onVLAN30[0]!, portGroup: "VLAN-10" }] });
  const r = await run(vmStep({ get: async () => vc }), {}, { adopt: { moRef: vm.moRef } });
  assert.equal(reasonOf(r.out), "!VLANMismatch");
  assert.deepEqual(vc.started, []);
});

test("without adopt, a foreign VM of the server's name is never touched (VMNameConflict)", async () => {
  const vc = new FakeVSphere();
  vc.addVM({ name: "web-prod-1", nics: onVLAN30 });
  const r = await run(vmStep({ get: async () => vc }), {}, {});
  assert.equal(reasonOf(r.out), "!VMNameConflict");
  assert.deepEqual(vc.started, []);
});

test("rebuild during an install: that install's guestinfo data goes before the state is dropped", async () => {
  const vc = new FakeVSphere();
  const vm = vc.addVM({
    name: "web-prod-1",
    ownerUID: "u",
    owner: "n/w",
    powerState: "poweredOn",
    nics: onVLAN30,
    extraConfig: {
      "vsop.owner-uid": "u",
      "vsop.owner": "n/w",
      "guestinfo.userdata": "old",
      "guestinfo.metadata": "old",
    },
  });
  const { deps, deleted } = installDeps(vc);
  const step = rebuildStep({ install: deps, record: async () => undefined });
  const installing = { install: { method: "guestinfo", startedAt: "2026-01-01T00:00:00Z" } };
  const spec = { rebuildRequestedAt: V1 };
  const ctxFor = (status: VirtualServerStatus) => {
    const ctx = context(status, spec);
    ctx.cls.spec.boot = { method: "guestinfo" };
    return ctx;
  };
  let status: VirtualServerStatus = installing;
  const outcomes: string[] = [];
  for (let i = 0; i < 6 && !status.rebuild?.reinstallStartedAt; i++) {
    const ctx = ctxFor(status);
    outcomes.push(reasonOf(await step.run(ctx)));
    status = ctx.status;
    assert.deepEqual(deleted, status.rebuild?.reinstallStartedAt ? ["u"] : [], "dropped last");
    vc.endAll();
  }
  assert.deepEqual(ops(vc), ["PowerOff", "SetExtraConfig"], outcomes.join(" → "));
  assert.deepEqual(
    vc.get(vm.moRef)!.extraConfig,
    { "vsop.owner-uid": "u", "vsop.owner": "n/w" },
    "the old install data is gone",
  );
  assert.equal(status.install, undefined, outcomes.join(" → "));
});
