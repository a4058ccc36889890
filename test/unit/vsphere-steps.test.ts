// The vSphere steps against an in-memory vCenter (test/support/fake-vsphere.ts): each reconcile
// starts at most one task and returns; the test ends tasks the way vCenter would.
import { test } from "node:test";
import assert from "node:assert/strict";
import type { VirtualServerStatus } from "../../src/api/types.js";
import { StepError } from "../../src/errors.js";
import type { ReconcileContext, Step, StepOutcome } from "../../src/reconcile/engine/context.js";
import { vmStep } from "../../src/reconcile/steps/vm-step.js";
import {
  handoffStep,
  installedStep,
  prepareStep,
} from "../../src/reconcile/steps/install-steps.js";
import type { InstallDeps } from "../../src/reconcile/boot/install-data.js";
import { FakeVSphere } from "../support/fake-vsphere.js";
import { stepContext } from "../support/step-fakes.js";

const CLASS = {
  placement: { datacenter: "DC0", datastore: "ds" },
  boot: { method: "network" },
  hardware: { cpus: 2, memoryMiB: 2048 },
};

/** One reconcile of `step` with the status the previous one left (as the engine keeps it). */
async function reconcile(
  step: Step,
  status: VirtualServerStatus,
  classSpec: Record<string, unknown> = CLASS,
  spec: Record<string, unknown> = {},
  phase: "run" | "finalize" = "run",
  claim?: () => void,
): Promise<{ out: StepOutcome; ctx: ReconcileContext }> {
  const ctx = stepContext(structuredClone(status), classSpec);
  Object.assign(ctx.vs.spec, spec);
  if (claim) ctx.claim = async () => claim();
  ctx.resolved = {
    address: "10.12.30.5",
    vlan: 30,
    portGroup: "VLAN-30",
  } as ReconcileContext["resolved"];
  const out = phase === "run" ? await step.run(ctx) : await step.finalize!(ctx);
  return { out, ctx };
}

const reason = (o: StepOutcome) => (o.done ? "done" : o.reason);

test("vm step: create → finish → VMCreated, one task per reconcile, none awaited", async () => {
  const vc = new FakeVSphere();
  const step = vmStep({ get: async () => vc });
  // The object is claimed (its finalizer) before the VM is asked for, in the same reconcile.
  let r = await reconcile(step, {}, CLASS, {}, "run", () => void vc.started.push("claim"));
  assert.equal(reason(r.out), "Creating");
  assert.equal(r.ctx.status.vm?.name, "web-prod-1");
  assert.equal(r.ctx.status.vm?.task?.operation, "CreateVM");
  assert.deepEqual(vc.started, ["claim", "CreateVM web-prod-1"]);
  // The task still runs: the next reconcile waits, starts nothing.
  r = await reconcile(step, r.ctx.status);
  assert.equal(r.out.done, false);
  assert.equal(vc.started.length, 2);
  vc.endAll();
  r = await reconcile(step, r.ctx.status);
  assert.equal(r.ctx.status.vm?.task?.operation, "FinishVM", "boot order after creation");
  vc.endAll();
  r = await reconcile(step, r.ctx.status);
  assert.equal(r.out.done, true);
  assert.equal(r.ctx.status.vm?.task, undefined);
  assert.match(r.ctx.status.vm?.moRef ?? "", /^vm-/);
  assert.equal(r.ctx.status.conditions?.find((c) => c.type === "VMCreated")?.status, "True");
  assert.deepEqual(
    vc.findByOwnerUID("u")?.nics.map((n) => n.portGroup),
    ["VLAN-30", "Boot-VLAN"],
  );
});

test("vm step: a failed CreateVM is reported on VMCreated; the retry creates afresh", async () => {
  const vc = new FakeVSphere();
  const step = vmStep({ get: async () => vc });
  const r = await reconcile(step, { vm: { name: "web-prod-1" } });
  vc.end(r.ctx.status.vm!.task!.moRef, "NoDiskSpace");
  const failed = reconcile(step, r.ctx.status);
  await assert.rejects(
    failed,
    (e: unknown) => e instanceof StepError && e.reason === "DatastoreFull",
  );
  assert.equal(vc.vms.size, 0);
});

test("vm step: a task vCenter forgot (restart) is resolved by looking at the VM", async () => {
  const vc = new FakeVSphere();
  const step = vmStep({ get: async () => vc });
  const vm = vc.addVM({ name: "web-prod-1", ownerUID: "u", owner: "n/w" });
  const status = {
    vm: { moRef: vm.moRef, task: { operation: "PowerOn", moRef: "task-404", startedAt: "x" } },
  };
  const r = await reconcile(step, status);
  assert.equal(r.out.done, true, "the VM is there: go on");
  assert.equal(r.ctx.status.vm?.task, undefined);
});

// cpus/memory on the VM, hot add, power, asked size, policy → the operations, in order.
const RESIZES: [
  string,
  Partial<Parameters<FakeVSphere["addVM"]>[0]>,
  Record<string, unknown>,
  string,
  string[],
][] = [
  ["same size", {}, {}, "Never", []],
  ["more CPUs, hot add", { powerState: "poweredOn" }, { cpus: 4 }, "Never", ["Resize"]],
  ["less memory, off", { powerState: "poweredOff" }, { memoryMiB: 1024 }, "Never", ["Resize"]],
  [
    "less memory, on, IfNeeded",
    { powerState: "poweredOn" },
    { memoryMiB: 1024 },
    "IfNeeded",
    ["PowerOff", "Resize", "PowerOn"],
  ],
  [
    "more CPUs, on, no hot add, IfNeeded",
    { powerState: "poweredOn", cpuHotAddEnabled: false },
    { cpus: 4 },
    "IfNeeded",
    ["PowerOff", "Resize", "PowerOn"],
  ],
  [
    "less memory, on, Never",
    { powerState: "poweredOn" },
    { memoryMiB: 1024 },
    "Never",
    ["!ResizeRequiresPowerCycle"],
  ],
];

for (const [what, vmFields, want, policy, ops] of RESIZES) {
  test(`vm step resize: ${what} → ${ops.join(", ") || "nothing"}`, async () => {
    const vc = new FakeVSphere();
    const step = vmStep({ get: async () => vc });
    vc.addVM({ name: "web-prod-1", ownerUID: "u", owner: "n/w", ...vmFields });
    const cls = { ...CLASS, hardware: { ...CLASS.hardware, powerCyclePolicy: policy } };
    const install = { startedAt: "2026-01-01T00:00:00Z" };
    let status: VirtualServerStatus = { install };
    for (let i = 0; i < 6; i++) {
      let r;
      try {
        r = await reconcile(step, status, cls, want);
      } catch (err) {
        assert.ok(err instanceof StepError);
        vc.started.push(`!${err.reason}`);
        break;
      }
      status = r.ctx.status;
      if (r.out.done) break;
      vc.endAll();
    }
    assert.deepEqual(
      vc.started.map((s) => s.split(" ")[0]),
      ops,
    );
    if (!ops.some((o) => o.startsWith("!"))) {
      const vm = vc.findByOwnerUID("u")!;
      assert.equal(vm.powerState, vmFields.powerState ?? "poweredOff", "power as before");
      assert.equal(status.vm?.powerCycle, undefined, "no power cycle left pending");
    }
  });
}

/** A network-installed server's VM with its boot NIC in the given state. */
function installedVM(vc: FakeVSphere, bootConnected: boolean) {
  return vc.addVM({
    name: "web-prod-1",
    ownerUID: "u",
    owner: "n/w",
    powerState: "poweredOn",
    nics: [
      { key: 4000, label: "NIC 1", portGroup: "VLAN-30", connected: true, startConnected: true },
      {
        key: 4001,
        label: "NIC 2",
        macAddress: "00:50:56:00:00:01",
        portGroup: "Boot-VLAN",
        connected: bootConnected,
        startConnected: bootConnected,
      },
    ],
  });
}

const bootNIC = (status: "True" | "False") => [
  {
    type: "BootNICDisconnected",
    status,
    reason: "Disconnected",
    message: "",
    lastTransitionTime: "x",
  },
];

for (const [what, before, event] of [
  ["first handoff", undefined, false],
  ["reconnected after it was disconnected (drift)", "True", true],
] as const) {
  test(`handoff (network): ${what} → boot NIC disconnected${event ? ", with a Warning Event" : ""}`, async () => {
    const vc = new FakeVSphere();
    installedVM(vc, true);
    const events: string[] = [];
    const deps = { pool: { get: async () => vc } } as unknown as InstallDeps;
    const step = handoffStep(deps, async (_ctx, reason) => void events.push(reason));
    const status: VirtualServerStatus = before ? { conditions: bootNIC(before) } : {};
    let r = await reconcile(step, status);
    assert.equal(reason(r.out), "Disconnecting");
    assert.deepEqual(vc.started, ["SetNic vm-1"]);
    assert.deepEqual(events, event ? ["BootNICReconnected"] : []);
    vc.endAll();
    r = await reconcile(step, r.ctx.status);
    assert.equal(r.out.done, true);
    assert.equal(
      r.ctx.status.conditions?.find((c) => c.type === "BootNICDisconnected")?.status,
      "True",
    );
    const nic = vc.findByOwnerUID("u")!.nics[1]!;
    assert.deepEqual([nic.connected, nic.startConnected], [false, false]);
  });
}

test("handoff (network): a NIC already off starts nothing", async () => {
  const vc = new FakeVSphere();
  installedVM(vc, false);
  const deps = { pool: { get: async () => vc } } as unknown as InstallDeps;
  const r = await reconcile(
    handoffStep(deps, async () => undefined),
    {},
  );
  assert.equal(r.out.done, true);
  assert.deepEqual(vc.started, []);
});

test("prepare (guestinfo): installed since the power-on, though status does not say so → nothing", async () => {
  // The leader that saw the install end (and started clearing guestinfo) died before writing
  // it; the next one must not put the install data back.
  const vc = new FakeVSphere();
  vc.addVM({ name: "web-prod-1", ownerUID: "u", owner: "n/w", powerState: "poweredOn" });
  const startedAt = "2026-11-27T02:24:42.000Z";
  const deps = {
    pool: { get: async () => vc },
    // The watch's copy is enough: the record was written before that leader died.
    tokens: {
      known: async () => ({ state: "built", builtAt: "2026-11-27T02:24:43.638Z", token: "" }),
    },
  } as unknown as InstallDeps;
  const cls = { ...CLASS, boot: { method: "guestinfo" } };
  const r = await reconcile(prepareStep(deps), { install: { startedAt } }, cls);
  assert.equal(r.out.done, true);
  assert.deepEqual(vc.started, []);
});

for (const [what, startedAgo, timeout, expected] of [
  ["within the timeout", 30 * 60_000, "1h", "Installing"],
  ["past the timeout", 2 * 3600_000, "1h", "InstallTimedOut"],
  ["past a short class timeout", 11 * 60_000, "10m", "InstallTimedOut"],
] as const) {
  test(`installed step: no signal, ${what} → ${expected}`, async () => {
    const deps = {
      tokens: { get: async () => undefined },
      discover: async () => false,
    } as unknown as InstallDeps;
    const status = { install: { startedAt: new Date(Date.now() - startedAgo).toISOString() } };
    const cls = { ...CLASS, boot: { method: "network", installTimeout: timeout } };
    const run = reconcile(installedStep(deps), status, cls);
    if (expected === "Installing") assert.equal(reason((await run).out), "Installing");
    else await assert.rejects(run, (e: unknown) => e instanceof StepError && e.reason === expected);
  });
}

for (const [what, identityPublicKey, startedAgo, timeout, waitSeconds] of [
  ["installer not heard from: next look in a minute", undefined, 60_000, "1h", 60],
  ["installer not heard from: next look at the timeout", undefined, 9 * 60_000 + 50_000, "10m", 10],
  ["node has its keys: asked through MCollective every 5 s", "PUBKEY", 60_000, "1h", 5],
] as const) {
  test(`installed step: waiting for the install, ${what}`, async () => {
    const deps = {
      tokens: { get: async () => ({ state: "pending", token: "t", identityPublicKey }) },
      discover: async () => false,
    } as unknown as InstallDeps;
    const status = { install: { startedAt: new Date(Date.now() - startedAgo).toISOString() } };
    const cls = { ...CLASS, boot: { method: "network", installTimeout: timeout } };
    const { out } = await reconcile(installedStep(deps), status, cls);
    assert.equal(out.done, false);
    assert.equal(out.done === false && out.waitSeconds, waitSeconds);
  });
}

test("vm finalize: Delete powers off, then destroys; Retain only removes the marker", async () => {
  for (const [policy, ops] of [
    ["Delete", ["PowerOff", "Destroy"]],
    ["Retain", ["SetExtraConfig"]],
  ] as const) {
    const vc = new FakeVSphere();
    vc.addVM({
      name: "web-prod-1",
      ownerUID: "u",
      owner: "n/w",
      powerState: "poweredOn",
      extraConfig: { "vsop.owner-uid": "u", "vsop.owner": "n/w" },
    });
    const step = vmStep({ get: async () => vc });
    let status: VirtualServerStatus = { vm: { name: "web-prod-1" } };
    let done = false;
    for (let i = 0; i < 5 && !done; i++) {
      const r = await reconcile(step, status, CLASS, { deletionPolicy: policy }, "finalize");
      status = r.ctx.status;
      done = r.out.done;
      vc.endAll();
    }
    assert.ok(done, policy);
    assert.deepEqual(
      vc.started.map((s) => s.split(" ")[0]),
      ops,
    );
    assert.equal(vc.vms.size, policy === "Delete" ? 0 : 1);
    if (policy === "Retain") assert.equal([...vc.vms.values()][0]!.powerState, "poweredOn");
  }
});

test("vm finalize: the finalizer alone means a VM may exist: vCenter is asked", async () => {
  const vc = new FakeVSphere();
  const step = vmStep({ get: async () => vc });
  // Killed after CreateVM was sent, before status recorded it: the VM is found and destroyed.
  vc.addVM({ name: "web-prod-1", ownerUID: "u", owner: "n/w", powerState: "poweredOff" });
  const r = await reconcile(step, {}, CLASS, {}, "finalize");
  assert.equal(r.ctx.status.vm?.task?.operation, "Destroy");
  const unreachable = vmStep({
    get: async () => {
      throw new Error("vCenter is down");
    },
  });
  await assert.rejects(reconcile(unreachable, {}, CLASS, {}, "finalize"));
});
