// spec.powerState, spec.powerOffMode and spec.restartRequestedAt against an in-memory vCenter
// (test/support/fake-vsphere.ts): one operation per reconcile, guest shutdowns that are no tasks,
// the TrySoft fallback after the class's shutdownTimeout, one restart per value, and an install
// that an Off request does not interrupt.
import { test } from "node:test";
import assert from "node:assert/strict";
import type { VirtualServerSpec, VirtualServerStatus } from "../../src/api/types.js";
import { StepError } from "../../src/errors.js";
import type { ReconcileContext, Step, StepOutcome } from "../../src/reconcile/engine/context.js";
import { powerStep } from "../../src/reconcile/steps/power-step.js";
import { vmStep } from "../../src/reconcile/steps/vm-step.js";
import { installedStep, prepareStep } from "../../src/reconcile/steps/install-steps.js";
import type { InstallDeps } from "../../src/reconcile/boot/install-data.js";
import { VSphereFault } from "../../src/vsphere/errors.js";
import { FakeVSphere } from "../support/fake-vsphere.js";
import { stepContext } from "../support/step-fakes.js";

const CLASS = {
  placement: { datacenter: "DC0", datastore: "ds" },
  boot: { method: "guestinfo", assumeInstalled: true },
  hardware: { cpus: 2, memoryMiB: 2048 },
};
const INSTALLED = { startedAt: "2026-01-01T00:00:00Z", completedAt: "2026-01-01T00:01:00Z" };
const REQUEST = "2026-05-01T10:00:00Z";

async function reconcile(
  step: Step,
  status: VirtualServerStatus,
  spec: Partial<VirtualServerSpec>,
  classSpec: Record<string, unknown> = CLASS,
): Promise<{ out: StepOutcome; ctx: ReconcileContext }> {
  const ctx = stepContext(structuredClone(status), classSpec);
  Object.assign(ctx.vs.spec, spec);
  ctx.resolved = {
    address: "10.12.30.5",
    vlan: 30,
    portGroup: "VLAN-30",
  } as ReconcileContext["resolved"];
  return { out: await step.run(ctx), ctx };
}

const reasonOf = (o: StepOutcome) => (o.done ? "done" : o.reason);
const ops = (vc: FakeVSphere) => vc.started.map((s) => s.split(" ")[0]!);

function serverVM(vc: FakeVSphere, fields: Parameters<FakeVSphere["addVM"]>[0] | object = {}) {
  return vc.addVM({
    name: "web-prod-1",
    ownerUID: "u",
    owner: "n/w",
    powerState: "poweredOn",
    ...fields,
  });
}

/**
 * Reconciles until the step is done, reports PoweredOff or fails (at most 8 times); between
 * reconciles vCenter ends its tasks and the guest does what `guest` says after ShutdownGuest:
 * "halts" (the VM powers off) or "ignores" (time passes beyond the shutdown timeout).
 */
async function converge(
  vc: FakeVSphere,
  status: VirtualServerStatus,
  spec: Partial<VirtualServerSpec>,
  guest: "halts" | "ignores" = "halts",
): Promise<{ status: VirtualServerStatus; last: string; outcomes: string[] }> {
  const step = powerStep({ get: async () => vc });
  const outcomes: string[] = [];
  for (let i = 0; i < 8; i++) {
    let r;
    try {
      r = await reconcile(step, status, spec);
    } catch (err) {
      assert.ok(err instanceof StepError, String(err));
      outcomes.push(`!${err.reason}`);
      return { status, last: `!${err.reason}`, outcomes };
    }
    status = r.ctx.status;
    const reason = reasonOf(r.out);
    outcomes.push(reason);
    if (reason === "done" || reason === "PoweredOff") return { status, last: reason, outcomes };
    const vm = vc.findByOwnerUID("u")!;
    if (vc.started.at(-1)?.startsWith("ShutdownGuest") && status.power?.shutdownRequestedAt) {
      if (guest === "halts") vc.guestPower(vm.moRef, "poweredOff");
      else
        status.power = {
          ...status.power,
          shutdownRequestedAt: new Date(Date.now() - 6 * 60_000).toISOString(),
        };
    }
    vc.endAll();
  }
  return { status, last: "not converged", outcomes };
}

// VM power and Tools, spec, what the guest does → the operations vsop started, the final outcome.
const OFF: [
  string,
  object,
  Partial<VirtualServerSpec>,
  "halts" | "ignores",
  string[],
  string,
  string,
][] = [
  [
    "TrySoft (default), Tools run, the guest shuts down",
    { toolsRunning: true },
    {},
    "halts",
    ["ShutdownGuest"],
    "PoweredOff",
    "poweredOff",
  ],
  [
    "TrySoft, Tools run, the guest ignores it past shutdownTimeout",
    { toolsRunning: true },
    { powerOffMode: "TrySoft" },
    "ignores",
    ["ShutdownGuest", "PowerOff"],
    "PoweredOff",
    "poweredOff",
  ],
  [
    "TrySoft, no Tools",
    { toolsRunning: false },
    {},
    "halts",
    ["PowerOff"],
    "PoweredOff",
    "poweredOff",
  ],
  [
    "Hard, Tools run",
    { toolsRunning: true },
    { powerOffMode: "Hard" },
    "halts",
    ["PowerOff"],
    "PoweredOff",
    "poweredOff",
  ],
  [
    "Soft, Tools run, the guest shuts down",
    { toolsRunning: true },
    { powerOffMode: "Soft" },
    "halts",
    ["ShutdownGuest"],
    "PoweredOff",
    "poweredOff",
  ],
  [
    "Soft, Tools run, the guest ignores it",
    { toolsRunning: true },
    { powerOffMode: "Soft" },
    "ignores",
    ["ShutdownGuest"],
    "!GuestShutdownTimedOut",
    "poweredOn",
  ],
  [
    "Soft, no Tools",
    { toolsRunning: false },
    { powerOffMode: "Soft" },
    "halts",
    [],
    "!GuestToolsNotRunning",
    "poweredOn",
  ],
  ["already off", { powerState: "poweredOff" }, {}, "halts", [], "PoweredOff", "poweredOff"],
  [
    "suspended, TrySoft: no guest to ask",
    { powerState: "suspended", toolsRunning: true },
    {},
    "halts",
    ["PowerOff"],
    "PoweredOff",
    "poweredOff",
  ],
];

for (const [what, vmFields, spec, guest, want, last, power] of OFF) {
  test(`Off: ${what} → ${want.join(", ") || "nothing"}, ${last}`, async () => {
    const vc = new FakeVSphere();
    serverVM(vc, vmFields);
    const r = await converge(vc, { install: INSTALLED }, { powerState: "Off", ...spec }, guest);
    assert.deepEqual(ops(vc), want);
    assert.equal(r.last, last, r.outcomes.join(" → "));
    assert.equal(vc.findByOwnerUID("u")!.powerState, power);
    if (last === "PoweredOff") {
      assert.equal(r.status.vm?.powerState, "poweredOff", "status says what vCenter says");
      assert.equal(r.status.power?.shutdownRequestedAt, undefined, "cleared once off");
      assert.equal(r.status.vm?.task, undefined);
    }
  });
}

test("Off, TrySoft: while the guest has time, vsop waits and asks nothing again", async () => {
  const vc = new FakeVSphere();
  serverVM(vc, { toolsRunning: true });
  const step = powerStep({ get: async () => vc });
  const cls = { ...CLASS, hardware: { ...CLASS.hardware, shutdownTimeout: "2m" } };
  let r = await reconcile(step, { install: INSTALLED }, { powerState: "Off" }, cls);
  assert.equal(reasonOf(r.out), "PoweringOff");
  const asked = r.ctx.status.power?.shutdownRequestedAt;
  assert.ok(asked && Date.now() - Date.parse(asked) < 5000, "asked now, recorded in status");
  r = await reconcile(step, r.ctx.status, { powerState: "Off" }, cls);
  assert.equal(reasonOf(r.out), "PoweringOff");
  assert.ok(!r.out.done && r.out.waitSeconds <= 15, "rechecks within the task recheck period");
  assert.match(!r.out.done ? r.out.message : "", /powered off hard if it is not off within 2m/);
  assert.deepEqual(ops(vc), ["ShutdownGuest"]);
});

test("Off, TrySoft: vCenter refuses the guest shutdown (ToolsUnavailable) → hard power-off", async () => {
  const vc = new FakeVSphere();
  serverVM(vc, { toolsRunning: true });
  vc.startShutdownGuest = async () => {
    throw new VSphereFault("ToolsUnavailable", "ShutdownGuest", "tools stopped");
  };
  const r = await converge(vc, { install: INSTALLED }, { powerState: "Off" });
  assert.deepEqual(ops(vc), ["PowerOff"]);
  assert.equal(r.last, "PoweredOff");
});

test("On again: a powered-off server is powered on, and a pending shutdown is forgotten", async () => {
  const vc = new FakeVSphere();
  serverVM(vc, { powerState: "poweredOff" });
  const status = { install: INSTALLED, power: { shutdownRequestedAt: new Date().toISOString() } };
  const r = await converge(vc, status, { powerState: "On" });
  assert.deepEqual(ops(vc), ["PowerOn"]);
  assert.deepEqual(r.outcomes, ["PoweringOn", "done"]);
  assert.equal(vc.findByOwnerUID("u")!.powerState, "poweredOn");
  assert.equal(r.status.power?.shutdownRequestedAt, undefined);
  assert.equal(r.status.vm?.powerState, "poweredOn");
});

test("On (default) and on already: nothing is started", async () => {
  const vc = new FakeVSphere();
  serverVM(vc);
  const r = await converge(vc, { install: INSTALLED }, {});
  assert.deepEqual(ops(vc), []);
  assert.equal(r.last, "done");
});

// VM, spec → the operations a restart request starts; whether it counts as a restart.
const RESTARTS: [string, object, Partial<VirtualServerSpec>, string[], string, boolean][] = [
  ["Hard", { toolsRunning: true }, { powerOffMode: "Hard" }, ["Reset"], "done", true],
  ["TrySoft, Tools run", { toolsRunning: true }, {}, ["RebootGuest"], "done", true],
  ["TrySoft, no Tools", { toolsRunning: false }, {}, ["Reset"], "done", true],
  [
    "Soft, Tools run",
    { toolsRunning: true },
    { powerOffMode: "Soft" },
    ["RebootGuest"],
    "done",
    true,
  ],
  [
    "Soft, no Tools",
    { toolsRunning: false },
    { powerOffMode: "Soft" },
    [],
    "!GuestToolsNotRunning",
    false,
  ],
  [
    "VM off, spec On: the power-on is the restart",
    { powerState: "poweredOff" },
    {},
    ["PowerOn"],
    "done",
    true,
  ],
  [
    "spec Off: nothing to restart, honoured",
    { powerState: "poweredOff" },
    { powerState: "Off" },
    [],
    "PoweredOff",
    false,
  ],
];

for (const [what, vmFields, spec, want, last, restarted] of RESTARTS) {
  test(`restart request, ${what} → ${want.join(", ") || "nothing"}; once per value`, async () => {
    const vc = new FakeVSphere();
    serverVM(vc, vmFields);
    const asked = { ...spec, restartRequestedAt: REQUEST };
    let r = await converge(vc, { install: INSTALLED }, asked);
    assert.equal(r.last, last, r.outcomes.join(" → "));
    assert.deepEqual(ops(vc), want);
    if (last.startsWith("!")) {
      assert.equal(r.status.power?.restartedFor, undefined, "not honoured: asked again later");
      return;
    }
    assert.equal(r.status.power?.restartedFor, REQUEST);
    assert.equal(r.status.power?.restartedAt !== undefined, restarted, "restartedAt");
    // The same value again (a resync, a restarted operator, Argo CD re-applying): nothing.
    r = await converge(vc, r.status, asked);
    assert.deepEqual(ops(vc), want, "the same value restarts nothing more");
    // A new value: one more.
    if (want.length && spec.powerState !== "Off" && !("powerState" in vmFields)) {
      r = await converge(vc, r.status, { ...asked, restartRequestedAt: "2026-05-02T10:00:00Z" });
      assert.deepEqual(ops(vc), [...want, ...want], "a new value restarts once more");
      assert.equal(r.status.power?.restartedFor, "2026-05-02T10:00:00Z");
    }
  });
}

test("a status that lags behind vsop's own write (stale watch) does not reboot the guest twice", async () => {
  const vc = new FakeVSphere();
  serverVM(vc, { toolsRunning: true });
  const step = powerStep({ get: async () => vc });
  const spec = { restartRequestedAt: REQUEST };
  const stale: VirtualServerStatus = { install: INSTALLED };
  const first = await reconcile(step, stale, spec);
  assert.equal(reasonOf(first.out), "Restarting");
  // The next reconcile still reads the status from before that write.
  const again = await reconcile(step, stale, spec);
  assert.deepEqual(ops(vc), ["RebootGuest"], "asked once");
  assert.equal(again.ctx.status.power?.restartedFor, REQUEST, "the honoured value is put back");
  assert.equal(again.ctx.status.power?.restartedAt, first.ctx.status.power?.restartedAt);
});

test("a reset is reported while its task runs, then the server goes on", async () => {
  const vc = new FakeVSphere();
  serverVM(vc);
  const step = powerStep({ get: async () => vc });
  const spec = { restartRequestedAt: REQUEST };
  let r = await reconcile(step, { install: INSTALLED }, spec);
  assert.equal(reasonOf(r.out), "Restarting");
  assert.equal(r.ctx.status.vm?.task?.operation, "Restart");
  r = await reconcile(step, r.ctx.status, spec);
  assert.equal(reasonOf(r.out), "Restarting", "waits for the task, starts nothing");
  assert.deepEqual(ops(vc), ["Reset"]);
  vc.endAll();
  r = await reconcile(step, r.ctx.status, spec);
  assert.equal(r.out.done, true);
  assert.equal(r.ctx.status.vm?.task, undefined);
});

test("installing: an Off request waits for the install (VM kept on, the message says so)", async () => {
  const vc = new FakeVSphere();
  serverVM(vc, { powerState: "poweredOff" });
  const installing = { install: { method: "network", startedAt: new Date().toISOString() } };
  const deps = {
    pool: { get: async () => vc },
    tokens: {
      get: async () => undefined,
      known: async () => undefined,
      ensure: async () => ({ token: "t" }),
    },
    discover: async () => false,
  } as unknown as InstallDeps;
  const network = { ...CLASS, boot: { method: "network" } };
  // Someone powered the installing VM off: the install needs it on, Off or not.
  let r = await reconcile(prepareStep(deps), installing, { powerState: "Off" }, network);
  assert.equal(reasonOf(r.out), "PoweringOn");
  assert.deepEqual(ops(vc), ["PowerOn"]);
  vc.endAll();
  r = await reconcile(installedStep(deps), r.ctx.status, { powerState: "Off" }, network);
  assert.equal(reasonOf(r.out), "Installing");
  assert.match(
    !r.out.done ? r.out.message : "",
    /spec\.powerState Off applies once the install finished/,
  );
});

test("a resize that needs a power cycle waits for an Off request instead of failing", async () => {
  const vc = new FakeVSphere();
  serverVM(vc, { memoryMiB: 4096 });
  const vm = vmStep({ get: async () => vc });
  const power = powerStep({ get: async () => vc });
  const spec: Partial<VirtualServerSpec> = {
    powerState: "Off",
    powerOffMode: "Hard",
    memoryMiB: 2048,
  };
  const status: VirtualServerStatus = { install: INSTALLED };
  // 2048 MiB asked, 4096 on a running VM, powerCyclePolicy Never: not ResizeRequiresPowerCycle.
  let r = await reconcile(vm, status, spec);
  assert.equal(r.out.done, true);
  r = await reconcile(power, r.ctx.status, spec);
  assert.equal(reasonOf(r.out), "PoweringOff");
  vc.endAll();
  r = await reconcile(vm, r.ctx.status, spec);
  assert.equal(reasonOf(r.out), "Resizing", "resized cold once off");
  vc.endAll();
  r = await reconcile(vm, r.ctx.status, spec);
  assert.equal(r.out.done, true);
  assert.deepEqual(ops(vc), ["PowerOff", "Resize"]);
  assert.equal(vc.findByOwnerUID("u")!.powerState, "poweredOff", "not powered on again");
});

test("a power cycle for a resize does not power on a server that is to stay off", async () => {
  const vc = new FakeVSphere();
  serverVM(vc, { powerState: "poweredOff" });
  const r = await reconcile(
    vmStep({ get: async () => vc }),
    { install: INSTALLED, vm: { powerCycle: true } },
    { powerState: "Off" },
  );
  assert.equal(r.out.done, true);
  assert.deepEqual(ops(vc), []);
  assert.equal(r.ctx.status.vm?.powerCycle, undefined);
});
